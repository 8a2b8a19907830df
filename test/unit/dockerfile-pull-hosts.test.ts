/**
 * The registries a Dockerfile's build pulls from (shared/dockerfile): FROM with platform
 * flags and build args, stage names and `scratch` (not registries), Docker Hub names,
 * `COPY --from=` and `RUN --mount=from=` images; and the agent's explanation of a pull
 * refused for credentials.
 */
import { describe, expect, it } from 'vitest';
import { pullHosts, pullRefs } from '../../shared/index.js';
import { explainPullRefusal, registryConfig, DOCKER_HUB_AUTH_KEY } from '../../agent/docker/registry-config.js';
import { credentialsFor, firstStringField, grpcFrame } from '../../agent/docker/build-session.js';

describe('pullHosts', () => {
  it('takes FROM hosts, with platform flags, and leaves out stages and scratch', () => {
    const df = [
      'FROM --platform=$BUILDPLATFORM 127.0.0.1:5001/private/base:1 AS build',
      'RUN make',
      'FROM build AS test',
      'FROM scratch',
      'COPY --from=build /out /out',
      'COPY --from=0 /a /a',
      '',
    ].join('\n');
    expect(pullRefs(df, {})).toEqual(['127.0.0.1:5001/private/base:1']);
    expect(pullHosts(df, {}, 'linux/amd64')).toEqual(['127.0.0.1:5001']);
  });

  it('names Docker Hub for short names and keeps registries with ports or dots', () => {
    expect(pullHosts('FROM busybox\nFROM kiln/busybox:1\nFROM ghcr.io/o/i@sha256:' + 'a'.repeat(64) + '\nFROM localhost:5000/x\n', {}, 'linux/amd64')).toEqual(['docker.io', 'ghcr.io', 'localhost:5000']);
  });

  it('resolves build args and ARG defaults, and TARGETARCH from the node platform', () => {
    const df = 'ARG REG=reg.example:5000\nARG TARGETARCH\nFROM ${REG}/base-${TARGETARCH}:1\n';
    expect(pullHosts(df, {}, 'linux/arm64')).toEqual(['reg.example:5000']);
    expect(pullRefs(df, { REG: '127.0.0.1:5001' }, { TARGETARCH: 'arm64' })).toEqual(['127.0.0.1:5001/base-arm64:1']);
    expect(pullHosts(df, { REG: '127.0.0.1:5001' }, 'linux/arm64')).toEqual(['127.0.0.1:5001']);
    // an ARG with no value anywhere: the ref is unknown, no host for it
    expect(pullHosts('ARG REG\nFROM ${REG}/base:1\n', {}, 'linux/amd64')).toEqual([]);
    // an undeclared ARG is not a build arg's to set
    expect(pullHosts('FROM ${REG}/base:1\n', { REG: 'x.io' }, 'linux/amd64')).toEqual([]);
  });

  it('takes images of COPY --from and RUN --mount=from, not stages or indexes', () => {
    const df = [
      'ARG TOOLS=tools.io:444/t:1',
      'FROM alpine AS deps',
      'FROM debian',
      'COPY --from=quay.io/x/y:2 /bin/y /bin/y',
      'COPY --from=deps /a /a',
      'COPY --from=${TOOLS} /t /t',
      'RUN --mount=type=bind,from=mount.io/m:1,source=/m,target=/m --mount=type=cache,target=/c true',
      'RUN --mount=type=bind,from=deps,target=/d true',
      '',
    ].join('\n');
    expect(pullRefs(df, {})).toEqual(['alpine', 'debian', 'quay.io/x/y:2', 'tools.io:444/t:1', 'mount.io/m:1']);
    expect(pullHosts(df, {}, 'linux/amd64')).toEqual(['docker.io', 'quay.io', 'tools.io:444', 'mount.io']);
  });

  it('gives none for a Dockerfile that cannot be parsed', () => {
    expect(pullHosts('# escape=x\nFROM a.io/b\n', {}, 'linux/amd64')).toEqual([]);
  });
});

describe('agent side: registryconfig, the session messages, refusals', () => {
  const given = [
    { host: '127.0.0.1:5001', username: 'kiln', password: 'pw' },
    { host: 'docker.io', username: 'hub', password: 'hubpw' },
    { host: 'ghcr.io', token: 'tok' },
  ];

  it('one registryconfig for every registry the assignment carries (Docker Hub under its index key too)', () => {
    const rc = registryConfig(given)!;
    expect(Object.keys(rc)).toEqual(['127.0.0.1:5001', 'docker.io', DOCKER_HUB_AUTH_KEY, 'ghcr.io']);
    expect(rc['127.0.0.1:5001']).toEqual({ serveraddress: '127.0.0.1:5001', username: 'kiln', password: 'pw' });
    expect(registryConfig(undefined)).toBeNull();
    expect(registryConfig([])).toBeNull();
  });

  it('answers a credentials request per host, and nothing for a registry it has none for', () => {
    const config = new Map(Object.entries(registryConfig(given)!));
    expect(credentialsFor(config, '127.0.0.1:5001')).toEqual({ username: 'kiln', secret: 'pw' });
    expect(credentialsFor(config, 'registry-1.docker.io')).toEqual({ username: 'hub', secret: 'hubpw' });
    expect(credentialsFor(config, 'other.io')).toEqual({ username: '', secret: '' });
    // a bearer token alone is not a pull credential for this BuildKit
    expect(credentialsFor(config, 'ghcr.io')).toEqual({ username: '', secret: '' });
  });

  it('encodes and decodes the gRPC frames of the session', () => {
    const frame = grpcFrame(['127.0.0.1:5001']);
    expect(frame.readUInt32BE(1)).toBe(frame.length - 5);
    expect(firstStringField(frame)).toBe('127.0.0.1:5001');
    const long = 'h'.repeat(300);
    expect(firstStringField(grpcFrame([long, 'x']))).toBe(long);
    expect(grpcFrame(['', 's']).subarray(5)).toEqual(Buffer.from([0x12, 1, 0x73]));
    expect(firstStringField(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]))).toBe('');
    // hostile frames from the session peer: a length past 2^31 (went negative and looped), one past the end, a truncated varint
    expect(firstStringField(Buffer.from([0, 0, 0, 0, 9, 0x12, 0xfa, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x01, 0x61]))).toBe('');
    expect(firstStringField(Buffer.from([0, 0, 0, 0, 4, 0x0a, 0x09, 0x61, 0x62]))).toBe('');
    expect(firstStringField(Buffer.from([0, 0, 0, 0, 2, 0x0a, 0x80]))).toBe('');
  });

  it('explains a pull refused for credentials, naming the registry', () => {
    const err = 'failed to solve with frontend dockerfile.v0: failed to create LLB definition: pulling from host 127.0.0.1:5001 failed with status code [manifests 1]: 401 Unauthorized';
    expect(explainPullRefusal(err, ['127.0.0.1:5001'], given)).toBe(`${err} (the registry 127.0.0.1:5001 refused the credentials the coordinator has for it)`);
    expect(explainPullRefusal(err, ['127.0.0.1:5001'], [])).toContain('pulling from 127.0.0.1:5001 needs credentials and none for 127.0.0.1:5001 are configured on the coordinator');
    expect(explainPullRefusal('failed to compute cache key: "/x" not found', ['127.0.0.1:5001'], given)).toBe('failed to compute cache key: "/x" not found');
    expect(explainPullRefusal('401 Unauthorized from elsewhere', ['a.io', 'b.io'], given)).toBe('401 Unauthorized from elsewhere');
  });
});
