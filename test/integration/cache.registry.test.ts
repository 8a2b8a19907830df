/**
 * The fleet-wide layer cache against the real registry and two real dockerds: a coordinator
 * with `cache.registry` (through a TCP proxy to 127.0.0.1:5000, so the registry can be made
 * unreachable), agent `host-a` on the default dockerd and `host-b` on the second one (its
 * own data-root: it never built what host-a built). Every Dockerfile carries a fresh nonce,
 * so neither engine has a local cache of it.
 *
 * - across hosts: built on host-a (readwrite, pushed), then on host-b with result reuse
 *   off: the expensive RUN is CACHED there and the node's result counts the hits;
 * - mode read imports but does not push; mode off neither imports nor pushes;
 * - `RUN --mount=type=cache` keeps its content between builds with the cache configured;
 * - the registry refusing connections during the push: the node succeeds, the push is
 *   reported failed (log, result, metrics);
 * - `kiln status` and GET /metrics show the figures.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  DOCKER_HOST_SECOND,
  engineHasImage,
  inline,
  kiln,
  nodeLog,
  requireBuilt,
  startAgent,
  startCoordinator,
  submitSpec,
  tempDir,
  waitForBuild,
  type CoordinatorHandle,
  type Proc,
} from '../helpers/cluster.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { apiPath } from '../../shared/index.js';

const REGISTRY = process.env.KILN_REGISTRY;
const SKIP = !REGISTRY || !DOCKER_HOST_SECOND;

interface CacheView {
  hit: number;
  miss: number;
  push: 'pushed' | 'failed' | 'none';
}
interface Built {
  state: string;
  nodes: Array<{ name: string; state: string; agent: string | null; cache?: CacheView | null; attempts: Array<{ cache?: CacheView | null }> }>;
}

describe.skipIf(SKIP)(`layer cache through the registry across two dockerds${SKIP ? ' (skipped: needs KILN_REGISTRY and KILN_DOCKER_HOST_SECOND; scripts/infra/up.sh --second --registry)' : ''}`, () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  let proxy: TcpProxy;
  const procs: Proc[] = [];
  const nonce = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  const repo = `kiln-cache-test-${nonce}`;
  let cacheRepo = '';

  beforeAll(async () => {
    requireBuilt();
    dir = await tempDir('cache');
    const [host, port] = REGISTRY!.split(':');
    proxy = await startTcpProxy({ host, port: Number(port) });
    cacheRepo = `127.0.0.1:${proxy.port}/${repo}`;
    coord = await startCoordinator({ dataDir: join(dir.path, 'data'), config: { cache: { registry: cacheRepo, mode: 'readwrite' } } });
    procs.push(coord.proc);
    procs.push(await startAgent({ coordinator: coord, name: 'host-a', workDir: join(dir.path, 'a'), dockerHost: DOCKER_HOST, labels: 'host=a' }));
    procs.push(await startAgent({ coordinator: coord, name: 'host-b', workDir: join(dir.path, 'b'), dockerHost: DOCKER_HOST_SECOND!, labels: 'host=b' }));
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    // The test repository's manifests go (the registry's garbage collection frees the blobs).
    if (REGISTRY) {
      for (const tag of await tags().catch(() => [])) {
        const digest = await manifestDigest(tag).catch(() => null);
        if (digest) await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${digest}`, { method: 'DELETE' }).catch(() => {});
      }
    }
    await proxy?.close();
    await dir?.cleanup();
  });

  /** An expensive step (seconds of work writing a file), then a cheap one using it. */
  const expensive = (tag: string) => `FROM kiln/busybox:1\nRUN sleep 2 && echo "computed ${tag} ${nonce}" > /result\nRUN cat /result > /copy\n`;

  async function build(node: string, dockerfile: string, extra: Record<string, unknown>, specExtra: Record<string, unknown> = {}): Promise<{ id: string; b: Built; n: Built['nodes'][number] }> {
    const id = await submitSpec(coord, { name: 'cache-suite', ...specExtra, nodes: { [node]: inline(dockerfile, { reuse: false, ...extra }) } });
    await waitForBuild(coord, id);
    const r = await coord.api<Built>(apiPath.build(id));
    const n = r.body.nodes.find((x) => x.name === node)!;
    return { id, b: r.body, n };
  }

  async function tags(): Promise<string[]> {
    const res = await fetch(`http://${REGISTRY}/v2/${repo}/tags/list`);
    if (res.status === 404) return [];
    const body = (await res.json()) as { tags: string[] | null };
    return body.tags ?? [];
  }

  async function manifestDigest(tag: string): Promise<string | null> {
    const res = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
    return res.status === 200 ? res.headers.get('docker-content-digest') : null;
  }

  it('builds an expensive step on host-a, and host-b (which never built it) gets it CACHED from the registry', async () => {
    const first = await build('app', expensive('xhost'), { labels: { host: 'a' } });
    expect(first.n.state).toBe('success');
    expect(first.n.agent).toBe('host-a');
    expect(first.n.cache).toMatchObject({ hit: 0, push: 'pushed' });
    expect(first.n.cache!.miss).toBeGreaterThanOrEqual(2);
    expect(await tags()).toContain('linux-amd64-app--cache-suite');
    expect((await tags()).filter((t) => /^linux-amd64-app--cache-suite\.t[0-9a-z]{9}$/.test(t))).toHaveLength(1);
    expect(await nodeLog(coord, first.id, 'app')).toContain(`[kiln] cache: pushed ${cacheRepo}:linux-amd64-app--cache-suite`);

    const second = await build('app', expensive('xhost'), { labels: { host: 'b' } });
    expect(second.n.state).toBe('success');
    expect(second.n.agent).toBe('host-b');
    expect(second.n.cache).toMatchObject({ hit: 2, miss: 0, push: 'pushed' });
    expect(second.n.attempts.at(-1)!.cache).toEqual(second.n.cache);
    const log = await nodeLog(coord, second.id, 'app');
    const runLine = log.split('\n').find((l) => /\] RUN sleep 2/.test(l))!;
    const step = /^#(\d+) /.exec(runLine)![1];
    expect(log).toContain(`#${step} CACHED`);

    // The push leaves no local tag of the ref: the engine's BuildKit would import that
    // (its own stale cache) instead of what other agents push to the registry later.
    const ref = `${cacheRepo}:linux-amd64-app--cache-suite`;
    expect(await engineHasImage(DOCKER_HOST, ref)).toBe(false);
    expect(await engineHasImage(DOCKER_HOST_SECOND!, ref)).toBe(false);
    // A changed Dockerfile pushed by host-a to the same ref is what host-b imports next.
    await build('app', expensive('xhost-v2'), { labels: { host: 'a' } });
    const third = await build('app', expensive('xhost-v2'), { labels: { host: 'b' } });
    expect(third.n.cache).toMatchObject({ hit: 2, miss: 0 });

    // kiln status shows the figures
    const status = await kiln(['status', second.id], coord.cliEnv);
    expect(status.stdout).toMatch(/app .*cache: 2 hit, 0 miss/);
    // and the metrics count them per pool
    const metrics = await fetch(`${coord.url}/metrics`, { headers: { authorization: `Bearer ${coord.apiToken}` } }).then((r) => r.text());
    expect(metrics).toMatch(/kiln_cache_hits_total\{pool="linux\/amd64"\} [2-9]/);
    expect(metrics).toMatch(/kiln_cache_pushes_total\{pool="linux\/amd64"\} [2-9]/);
    // and the pools view shows them
    const pools = await coord.api<{ items: Array<{ name: string; cache?: { hits: number; pushes: number } }> }>(apiPath.pools());
    expect(pools.body.items.find((p) => p.name === 'linux/amd64')?.cache?.hits).toBeGreaterThanOrEqual(2);
    const row = /^linux\/amd64 .*\s(\d+)\/\d+(?: \(\d+ push failed\))?$/m.exec((await kiln(['pools'], coord.cliEnv)).stdout);
    expect(Number(row?.[1])).toBeGreaterThanOrEqual(2);
  });

  it('mode read imports the cache but does not push; mode off does neither', async () => {
    const df = expensive('modes');
    const seeded = await build('modes', df, { labels: { host: 'a' } });
    expect(seeded.n.cache?.push).toBe('pushed');
    const tag = 'linux-amd64-modes--cache-suite';
    const before = await manifestDigest(tag);
    expect(before).toMatch(/^sha256:/);

    // off on host-b: nothing imported (the expensive step runs), nothing pushed
    const off = await build('modes', df, { labels: { host: 'b' }, cache: 'off' });
    expect(off.n.state).toBe('success');
    expect(off.n.cache).toMatchObject({ hit: 0, push: 'none' });
    expect(off.n.cache!.miss).toBeGreaterThanOrEqual(2);
    expect(await nodeLog(coord, off.id, 'modes')).not.toContain('[kiln] cache:');

    // read on host-b for a Dockerfile only host-a built: cached from the registry, not pushed
    const df2 = expensive('modes-read');
    await build('modes-read', df2, { labels: { host: 'a' } });
    const tag2 = 'linux-amd64-modes-read--cache-suite';
    const before2 = await manifestDigest(tag2);
    const read = await build('modes-read', df2, { labels: { host: 'b' } }, { cache: { mode: 'read' } });
    expect(read.n.cache).toMatchObject({ hit: 2, miss: 0, push: 'none' });
    expect(await manifestDigest(tag2)).toBe(before2);

    // a node that was only ever built in read or off mode never gets a tag
    await build('never-pushed', expensive('never'), { labels: { host: 'a' }, cache: { mode: 'read' } });
    await build('never-pushed-off', expensive('never-off'), { labels: { host: 'a' } }, { cache: 'off' });
    const all = await tags();
    expect(all.some((t) => t.includes('never-pushed'))).toBe(false);
  });

  it('keeps RUN --mount=type=cache working (per host) with the registry cache configured', async () => {
    const df = () =>
      `FROM kiln/busybox:1\nARG ROUND\nRUN --mount=type=cache,target=/kiln-cache-mount-${nonce} echo "$ROUND" >> /kiln-cache-mount-${nonce}/rounds && echo "rounds=$(wc -l < /kiln-cache-mount-${nonce}/rounds)"\n`;
    const one = await build('mount', df(), { labels: { host: 'a' }, build_args: { ROUND: '1' } });
    expect(one.n.state).toBe('success');
    expect(await nodeLog(coord, one.id, 'mount')).toContain('rounds=1');
    const two = await build('mount', df(), { labels: { host: 'a' }, build_args: { ROUND: '2' } });
    expect(two.n.state).toBe('success');
    expect(await nodeLog(coord, two.id, 'mount')).toContain('rounds=2');
  });

  it('kiln prewarm --pool builds the pool\'s nodes once, so another agent of the pool hits the cache', async () => {
    const df = expensive('prewarm');
    const spec = join(dir.path, 'prewarm.yaml');
    await writeFile(
      spec,
      JSON.stringify({
        name: 'cache-suite',
        nodes: {
          warm: inline(df, { platform: 'linux/amd64', labels: { host: 'a' }, cache: { mode: 'read' } }),
          // no agent has linux/arm64: prewarmed, this build would never end
          elsewhere: inline('FROM kiln/busybox:1-arm64\nRUN true\n', { platform: 'linux/arm64' }),
        },
      }),
    );
    const r = await kiln(['prewarm', spec, '--pool', 'linux/amd64'], coord.cliEnv);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/warm .*cache: 0 hit, 2 miss/);
    expect(r.stdout).not.toContain('elsewhere');
    expect(await tags()).toContain('linux-amd64-warm--cache-suite');
    const real = await build('warm', df, { labels: { host: 'b' } });
    expect(real.n.cache).toMatchObject({ hit: 2, miss: 0 });
    const none = await kiln(['prewarm', spec, '--pool', 'linux/s390x'], coord.cliEnv);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no node of');
  });

  it('does not fail the node when the registry is down during the cache push', async () => {
    proxy.refuse();
    try {
      const r = await build('down', expensive('down'), { labels: { host: 'a' } });
      expect(r.n.state).toBe('success');
      expect(r.n.cache).toMatchObject({ push: 'failed' });
      expect(await nodeLog(coord, r.id, 'down')).toMatch(/\[kiln\] cache: push of \S+:linux-amd64-down--cache-suite failed: .+ \(the node is not failed for it\)/);
    } finally {
      proxy.heal();
    }
    const metrics = await fetch(`${coord.url}/metrics`, { headers: { authorization: `Bearer ${coord.apiToken}` } }).then((res) => res.text());
    expect(metrics).toMatch(/kiln_cache_push_failures_total\{pool="linux\/amd64"\} 1/);
  });
});
