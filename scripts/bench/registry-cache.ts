/**
 * Fleet-wide layer cache (issue 11): a cold build on one engine vs the same build on another
 * engine that never built it but imports the registry cache the first one pushed. Measured
 * through kiln (HTTP submit -> coordinator -> agent -> Engine API -> cache push, until the
 * build's log stream ends; agent A on the default dockerd, agent B on the second one) and
 * directly with dockerode against the same two engines (A: build with
 * BUILDKIT_INLINE_CACHE=1, then push; B: build with cachefrom), in the same run, each run
 * with a fresh Dockerfile (a nonce) so neither engine has it locally.
 *
 * The Dockerfile's expensive step dominates (a 3 s step, then a cheap one). Target: warm /
 * cold <= 0.3 through kiln. Also printed: kiln / direct for the cold and the warm build, and
 * the cache hits kiln counted on B.
 *
 *   node dist/scripts/bench/registry-cache.js [--runs 3] [--step-seconds 3]
 * Needs DOCKER_HOST (default dockerd), KILN_DOCKER_HOST_SECOND and KILN_REGISTRY (e.g.
 * scripts/infra/up.sh --second --registry); without them it says so and exits 0.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { pack } from 'tar-stream';
import type Docker from 'dockerode';
import { pino } from 'pino';
import { Agent } from '../../agent/agent.js';
import { CasCache } from '../../agent/cas-cache.js';
import { DockerExecutor, readBuildEvents } from '../../agent/executors/docker-executor.js';
import { dockerClient } from '../../agent/docker/docker-client.js';
import { pushImageAs } from '../../agent/docker/layer-cache.js';
import { registryEndpoint } from '../../coordinator/builds/cache-retention.js';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { AGENT_SOCKET_PATH, apiPath, createLogger, withQuery } from '../../shared/index.js';
import { fmt, machineLine, median, now } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, def: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : def);
const RUNS = arg('--runs', 3);
const STEP_SECONDS = arg('--step-seconds', 3);
const HOST_A = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
const HOST_B = process.env.KILN_DOCKER_HOST_SECOND;
const REGISTRY = process.env.KILN_REGISTRY;

function dockerfile(nonce: string): string {
  return `FROM kiln/busybox:1\nRUN sleep ${STEP_SECONDS} && echo "expensive result ${nonce}" > /result\nRUN cat /result > /copy\n`;
}

/** A direct Engine API build (dockerode), until the response ends. */
async function directBuild(docker: Docker, df: string, opts: Record<string, unknown>): Promise<string> {
  const p = pack();
  p.entry({ name: 'Dockerfile', mtime: new Date(0) }, df);
  p.finalize();
  const body = new PassThrough();
  (p as unknown as NodeJS.ReadableStream).pipe(body);
  const res = (await docker.buildImage(body, { version: '2', networkmode: 'none', ...opts } as Docker.ImageBuildOptions)) as NodeJS.ReadableStream;
  let error: string | null = null;
  let id: string | null = null;
  await readBuildEvents(res, (e) => {
    if (e.error) error = e.error;
    if (e.id === 'moby.image.id') id = (e.aux as { ID: string }).ID;
  });
  if (error || !id) throw new Error(`direct build failed: ${error ?? 'no image id'}`);
  return id;
}

async function main() {
  if (!HOST_B || !REGISTRY) {
    console.log('# registry cache: skipped (needs KILN_DOCKER_HOST_SECOND and KILN_REGISTRY; scripts/infra/up.sh --second --registry)');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-rc-'));
  const tag = `${Date.now().toString(36)}`;
  const cacheRepo = `${REGISTRY}/kiln-bench-cache-${tag}`;
  const directRepo = `${REGISTRY}/kiln-bench-direct-${tag}`;
  const config = loadCoordinatorConfig(
    { dataDir: join(dir, 'data'), listen: '127.0.0.1:0', logLevel: 'silent', logFormat: 'json', cacheRegistry: cacheRepo, cacheMode: 'readwrite' },
    { env: {}, arch: process.arch, isTTY: false },
  );
  const coord = await startCoordinator(config, createLogger({ name: 'bench', level: 'silent', format: 'json' }));
  const engines = { a: dockerClient(HOST_A), b: dockerClient(HOST_B) };
  const agents = (['a', 'b'] as const).map(
    (h) =>
      new Agent({
        url: `${coord.url.replace('http', 'ws')}${AGENT_SOCKET_PATH}`,
        token: coord.tokens.agentToken,
        name: `bench-${h}`,
        labels: { host: h },
        maxJobs: 1,
        extraPlatforms: [],
        executor: new DockerExecutor(engines[h], new CasCache({ dir: join(dir, `cas-${h}`), coordinatorUrl: coord.url, token: coord.tokens.agentToken }), join(dir, `work-${h}`)),
        gpus: [],
        logger: pino({ level: 'silent' }),
      }),
  );
  for (const a of agents) void a.run();
  while (coord.engine.agents.connected().length < 2) await new Promise((r) => setTimeout(r, 20));

  const viaKiln = async (df: string, host: 'a' | 'b'): Promise<{ ms: number; hit: number; miss: number; push: string }> => {
    const t0 = now();
    const res = await fetch(`${coord.url}${apiPath.builds()}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${coord.tokens.apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench', nodes: { app: { dockerfile_inline: df, labels: { host }, reuse: false } } }),
    });
    const { id } = (await res.json()) as { id: string };
    const stream = await fetch(`${coord.url}${withQuery(apiPath.buildLogs(id), { follow: true })}`, { headers: { authorization: `Bearer ${coord.tokens.apiToken}` } });
    const text = await stream.text();
    if (!text.includes('event: end')) throw new Error('log stream ended without end event');
    const ms = now() - t0;
    const b = await coord.engine.getBuild(id);
    if (b?.state !== 'success') throw new Error(`kiln build ${id} ended ${b?.state}`);
    const cache = b.nodes[0]!.attempts.at(-1)!.cache;
    return { ms, hit: cache?.hit ?? -1, miss: cache?.miss ?? -1, push: cache?.push ?? 'none' };
  };
  const direct = async (df: string, nonce: string): Promise<{ cold: number; warm: number }> => {
    const ref = `${directRepo}:${nonce}`;
    const t0 = now();
    const id = await directBuild(engines.a, df, { buildargs: { BUILDKIT_INLINE_CACHE: '1' } });
    await pushImageAs(engines.a, id, [ref], AbortSignal.timeout(300_000));
    const cold = now() - t0;
    const t1 = now();
    await directBuild(engines.b, df, { cachefrom: JSON.stringify([ref]) });
    return { cold, warm: now() - t1 };
  };

  console.log(`# Registry layer cache: cold build on engine A (incl. the cache push) vs the same build on engine B importing the cache; kiln vs direct Engine API (dockerode); ${RUNS} runs, fresh Dockerfile each, medians`);
  console.log(`# ${machineLine()}; A ${HOST_A}, B ${HOST_B}, registry ${REGISTRY}; expensive step: ${STEP_SECONDS} s`);
  // warm-up: the base image's layer in the registry, connections
  await viaKiln(dockerfile(`warmup-${tag}`), 'a');
  await viaKiln(dockerfile(`warmup-${tag}`), 'b');
  await direct(dockerfile(`warmup-direct-${tag}`), `warmup-${tag}`);
  const k = { cold: [] as number[], warm: [] as number[] };
  const d = { cold: [] as number[], warm: [] as number[] };
  const hits: string[] = [];
  for (let i = 0; i < RUNS; i++) {
    const nonceK = `k${i}-${tag}`;
    const nonceD = `d${i}-${tag}`;
    const runKiln = async () => {
      const cold = await viaKiln(dockerfile(nonceK), 'a');
      const warm = await viaKiln(dockerfile(nonceK), 'b');
      k.cold.push(cold.ms);
      k.warm.push(warm.ms);
      hits.push(`${warm.hit}/${warm.hit + warm.miss}`);
      if (cold.push !== 'pushed') throw new Error(`kiln did not push the cache (${cold.push})`);
    };
    const runDirect = async () => {
      const r = await direct(dockerfile(nonceD), nonceD);
      d.cold.push(r.cold);
      d.warm.push(r.warm);
    };
    if (i % 2 === 0) {
      await runKiln();
      await runDirect();
    } else {
      await runDirect();
      await runKiln();
    }
  }
  const kc = median(k.cold);
  const kw = median(k.warm);
  const dc = median(d.cold);
  const dw = median(d.warm);
  console.log(`kiln:   cold ${fmt(kc, 0)} ms, warm (other engine, registry cache) ${fmt(kw, 0)} ms -> ratio ${fmt(kw / kc, 3)}; target <= 0.3 -> ${kw / kc <= 0.3 ? 'met' : 'NOT met'}; steps cached on B: ${hits.join(', ')}`);
  console.log(`direct: cold ${fmt(dc, 0)} ms, warm ${fmt(dw, 0)} ms -> ratio ${fmt(dw / dc, 3)}`);
  console.log(`kiln / direct: cold ${fmt(kc / dc, 3)}, warm ${fmt(kw / dw, 3)}`);
  for (const a of agents) await a.stop();
  await coord.stop();
  await rm(dir, { recursive: true, force: true });
  // What this run pushed goes (the registry's garbage collection frees the blobs).
  for (const repo of [cacheRepo, directRepo]) await deleteRepositoryManifests(repo).catch(() => {});
}

/** Deletes every manifest of a repository in a loopback registry (DELETE needs storage.delete). */
async function deleteRepositoryManifests(repository: string): Promise<void> {
  const { base, name } = registryEndpoint(repository);
  const res = await fetch(`${base}/v2/${name}/tags/list?n=1000`);
  if (!res.ok) return;
  const seen = new Set<string>();
  for (const t of ((await res.json()) as { tags?: string[] | null }).tags ?? []) {
    const head = await fetch(`${base}/v2/${name}/manifests/${t}`, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
    const digest = head.headers.get('docker-content-digest');
    if (digest && !seen.has(digest)) {
      seen.add(digest);
      await fetch(`${base}/v2/${name}/manifests/${digest}`, { method: 'DELETE' });
    }
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
