/**
 * The layer cache's pure parts: cache tags (coordinator/builds/layer-cache-refs.ts; valid
 * per the distribution spec, stable, distinct per platform/node/build), the hit/miss
 * count from a real BuildKit progress stream (recorded fixtures replayed through the
 * progress decoder), the inline backend's build options, the forgiven cache-import error,
 * and the per-pool counters the metrics read.
 */
import { readFileSync } from 'node:fs';
import type Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { BuildProgressDecoder, type BuildEvent } from '../../agent/docker/buildkit-progress.js';
import { cacheFigures, forgiveCacheImport, InlineCacheBackend, splitRef } from '../../agent/docker/layer-cache.js';
import { CacheCounters } from '../../coordinator/builds/cache-counters.js';
import { cacheTag } from '../../coordinator/builds/layer-cache-refs.js';

const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

function steps(name: string) {
  const d = new BuildProgressDecoder();
  const events = readFileSync(new URL(`../fixtures/buildkit/${name}.jsonl`, import.meta.url), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as BuildEvent);
  for (const e of events) d.push(e);
  d.end();
  return d.steps();
}

describe('layer cache', () => {
  it('makes valid, distinct cache tags per platform, node and build', () => {
    expect(cacheTag('linux/amd64', 'web', 'app')).toBe('linux-amd64-app--web');
    // names that had to change, or that hold the separator, get a hash: no two builds share a ref
    expect(cacheTag('linux/arm64/v8', 'my build', 'app')).toMatch(/^linux-arm64-v8-app--my_build-[0-9a-f]{12}$/);
    expect(cacheTag('linux/arm64/v8', 'my build', 'app')).not.toBe(cacheTag('linux/arm64/v8', 'my_build', 'app'));
    expect(cacheTag('linux/amd64', 'c', 'a--b')).not.toBe(cacheTag('linux/amd64', 'b--c', 'a'));
    const long = cacheTag('linux/arm64/v8', 'b'.repeat(100), `n${'x'.repeat(62)}`);
    expect(long).toMatch(TAG_RE);
    expect(long.length).toBeLessThanOrEqual(128);
    // cut names stay distinct (hash) and stable
    expect(cacheTag('linux/arm64/v8', `${'b'.repeat(99)}c`, `n${'x'.repeat(62)}`)).not.toBe(long);
    expect(cacheTag('linux/arm64/v8', 'b'.repeat(100), `n${'x'.repeat(62)}`)).toBe(long);
    const tags = new Set([cacheTag('linux/amd64', 'a', 'n'), cacheTag('linux/s390x', 'a', 'n'), cacheTag('linux/amd64', 'b', 'n'), cacheTag('linux/amd64', 'a', 'm')]);
    expect(tags.size).toBe(4);
    for (const t of tags) expect(t).toMatch(TAG_RE);
    expect(cacheTag('linux/amd64', '.hidden', 'n')).toMatch(TAG_RE);
  });

  it('counts build steps cached and executed from BuildKit progress (not FROM, not internal vertices)', () => {
    expect(cacheFigures(steps('success-fresh'))).toEqual({ hit: 0, miss: 1 });
    expect(cacheFigures(steps('success-cached'))).toEqual({ hit: 1, miss: 0 });
    expect(
      cacheFigures([
        { name: '[internal] load build definition from Dockerfile', completion: 'done' },
        { name: 'importing cache manifest from r:5000/c:t', completion: 'error' },
        { name: '[1/3] FROM docker.io/kiln/busybox:1', completion: 'cached' },
        { name: '[build 2/4] RUN make', completion: 'cached' },
        { name: '[stage-1 3/3] COPY --from=build /out /out', completion: 'done' },
        { name: '[2/3] RUN exit 3', completion: 'error' },
        { name: 'exporting to image', completion: 'done' },
      ]),
    ).toEqual({ hit: 1, miss: 1 });
  });

  it('imports on every build, marks inline cache only in readwrite mode, and never imports into a no-cache build', () => {
    const b = new InlineCacheBackend({} as Docker);
    const ref = '127.0.0.1:5000/kiln-cache:linux-amd64-app--web';
    expect(b.buildOptions({ ref, mode: 'readwrite' }, { no_cache: false, build_args: { A: '1' } })).toEqual({ cachefrom: JSON.stringify([ref]), buildargs: { A: '1', BUILDKIT_INLINE_CACHE: '1' } });
    expect(b.buildOptions({ ref, mode: 'read' }, { no_cache: false, build_args: {} })).toEqual({ cachefrom: JSON.stringify([ref]) });
    expect(b.buildOptions({ ref, mode: 'readwrite' }, { no_cache: true, build_args: {} })).toEqual({ buildargs: { BUILDKIT_INLINE_CACHE: '1' } });
  });

  it('pushes nothing in read mode', async () => {
    const logs: string[] = [];
    const b = new InlineCacheBackend({} as Docker);
    expect(await b.afterBuild({ ref: 'r.io/c:t', mode: 'read' }, 'sha256:x', { log: (t) => logs.push(t), signal: new AbortController().signal })).toBe('none');
    expect(logs).toEqual([]);
  });

  it('reports a push the engine cannot do as failed, without throwing', async () => {
    const logs: string[] = [];
    const docker = { getImage: () => ({ tag: () => Promise.reject(new Error("no such image")), remove: () => Promise.resolve() }) } as unknown as Docker;
    const b = new InlineCacheBackend(docker);
    expect(await b.afterBuild({ ref: 'r.io/c:t', mode: 'readwrite' }, 'sha256:x', { log: (t) => logs.push(t), signal: new AbortController().signal })).toBe('failed');
    expect(logs.join('')).toMatch(/cache: push of r\.io\/c:t failed: no such image/);
  });

  it('splits refs at the tag, not at a registry port', () => {
    expect(splitRef('127.0.0.1:5000/kiln-cache:linux-amd64-a--b')).toEqual({ repo: '127.0.0.1:5000/kiln-cache', tag: 'linux-amd64-a--b' });
    expect(splitRef('127.0.0.1:5000/kiln-cache')).toEqual({ repo: '127.0.0.1:5000/kiln-cache', tag: 'latest' });
  });

  it('forgives a failed cache import only when the build produced its image', () => {
    const importFailed = { imageId: 'sha256:1', error: 'r:5000/c:t: not found', exitCode: null, failedStep: 'importing cache manifest from r:5000/c:t' };
    expect(forgiveCacheImport(importFailed)).toMatchObject({ imageId: 'sha256:1', error: null, failedStep: null });
    const realFailure = { imageId: null, error: 'exit code: 3', exitCode: 3, failedStep: 'importing cache manifest from r:5000/c:t' };
    expect(forgiveCacheImport(realFailure)).toBe(realFailure);
    const runFailed = { imageId: 'sha256:1', error: 'x', exitCode: 1, failedStep: '[2/2] RUN false' };
    expect(forgiveCacheImport(runFailed)).toBe(runFailed);
  });

  it('sums the figures per pool for the metrics', () => {
    const c = new CacheCounters();
    c.record('linux/amd64', { hit: 2, miss: 1, push: 'pushed' });
    c.record('linux/amd64', { hit: 0, miss: 3, push: 'failed' });
    c.record('linux/s390x', { hit: 4, miss: 0, push: 'none' });
    expect(c.snapshot()).toEqual(
      new Map([
        ['linux/amd64', { hits: 2, misses: 4, pushes: 1, pushFailures: 1 }],
        ['linux/s390x', { hits: 4, misses: 0, pushes: 0, pushFailures: 0 }],
      ]),
    );
  });
});
