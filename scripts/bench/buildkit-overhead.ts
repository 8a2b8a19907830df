/**
 * BuildKit step overhead (benchmarks.md C7, issue 3): the same build run through kiln
 * (HTTP submit -> coordinator -> WebSocket -> agent -> Engine API, until the build's log
 * stream ends) and posted straight to the Engine API with dockerode (until the response
 * ends), interleaved, in one run. Target: kiln <= 1.10 x direct + 50 ms.
 *
 * Two workloads: a trivial Dockerfile built with no cache (a real RUN each time), and the
 * same fully cached.
 *
 *   node dist/scripts/bench/buildkit-overhead.js [--runs 7]
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
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { AGENT_SOCKET_PATH, apiPath, createLogger, isBuildTerminal, withQuery } from '../../shared/index.js';
import { fmt, machineLine, median, now } from './bench-util.js';

const args = process.argv.slice(2);
const RUNS = (() => {
  const i = args.indexOf('--runs');
  return i >= 0 ? Number(args[i + 1]) : 7;
})();
const DOCKER_HOST = args.includes('--docker-host') ? args[args.indexOf('--docker-host') + 1]! : 'unix:///var/run/docker.sock';

function dockerfile(marker: string): string {
  return `FROM kiln/busybox:1\nRUN echo "kiln-bench ${marker}" && ls / > /listing\n`;
}

async function direct(docker: ReturnType<typeof dockerClient>, df: string, noCache: boolean): Promise<number> {
  const t0 = now();
  const p = pack();
  p.entry({ name: 'Dockerfile', mtime: new Date(0) }, df);
  p.finalize();
  const body = new PassThrough();
  (p as unknown as NodeJS.ReadableStream).pipe(body);
  const opts = { version: '2', networkmode: 'none', nocache: noCache, t: 'kiln-bench/direct:latest' } as Docker.ImageBuildOptions;
  const res = (await docker.buildImage(body, opts)) as NodeJS.ReadableStream;
  let error: string | null = null;
  await readBuildEvents(res, (e) => {
    if (e.error) error = e.error;
  });
  if (error) throw new Error(`direct build failed: ${error}`);
  return now() - t0;
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-bk-'));
  const config = loadCoordinatorConfig({ dataDir: join(dir, 'data'), listen: '127.0.0.1:0', logLevel: 'silent', logFormat: 'json' }, { env: {}, arch: process.arch, isTTY: false });
  const coord = await startCoordinator(config, createLogger({ name: 'bench', level: 'silent', format: 'json' }));
  const docker = dockerClient(DOCKER_HOST);
  const agent = new Agent({
    url: `${coord.url.replace('http', 'ws')}${AGENT_SOCKET_PATH}`,
    token: coord.tokens.agentToken,
    name: 'bench-agent',
    labels: {},
    maxJobs: 1,
    extraPlatforms: [],
    executor: new DockerExecutor(docker, new CasCache({ dir: join(dir, 'cas'), coordinatorUrl: coord.url, token: coord.tokens.agentToken }), join(dir, 'work')),
    gpus: [],
    logger: pino({ level: 'silent' }),
  });
  void agent.run();
  while (coord.engine.agents.connected().length < 1) await new Promise((r) => setTimeout(r, 20));

  const viaKiln = async (df: string, noCache: boolean): Promise<number> => {
    const t0 = now();
    const res = await fetch(`${coord.url}${apiPath.builds()}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${coord.tokens.apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ nodes: { step: { dockerfile_inline: df, no_cache: noCache } } }),
    });
    const { id } = (await res.json()) as { id: string };
    // Follow the log stream to its end, as `kiln submit --follow` does.
    const stream = await fetch(`${coord.url}${withQuery(apiPath.buildLogs(id), { follow: true })}`, { headers: { authorization: `Bearer ${coord.tokens.apiToken}` } });
    const text = await stream.text();
    if (!text.includes('event: end')) throw new Error('log stream ended without end event');
    const b = await coord.engine.getBuild(id);
    if (!b || !isBuildTerminal(b.state) || b.state !== 'success') throw new Error(`kiln build ${id} ended ${b?.state}`);
    return now() - t0;
  };

  console.log(`# BuildKit step overhead: kiln (submit -> log stream end) vs the same build posted to the Engine API; ${RUNS} runs each, interleaved, medians`);
  console.log(`# ${machineLine()}; engine ${DOCKER_HOST}`);
  for (const [label, noCache] of [
    ['trivial RUN, no cache', true],
    ['fully cached', false],
  ] as const) {
    const marker = noCache ? () => `${Date.now()}-${Math.random()}` : () => 'cached';
    await direct(docker, dockerfile(marker()), noCache); // warm-up
    await viaKiln(dockerfile(marker()), noCache);
    const d: number[] = [];
    const k: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      // alternate which goes first, so neither always runs on a warmer engine
      if (i % 2 === 0) {
        d.push(await direct(docker, dockerfile(marker()), noCache));
        k.push(await viaKiln(dockerfile(marker()), noCache));
      } else {
        k.push(await viaKiln(dockerfile(marker()), noCache));
        d.push(await direct(docker, dockerfile(marker()), noCache));
      }
    }
    const md = median(d);
    const mk = median(k);
    const budget = md * 1.1 + 50;
    console.log(
      `${label}: direct Engine API ${fmt(md, 0)} ms, kiln ${fmt(mk, 0)} ms -> ratio ${fmt(mk / md, 3)}, overhead ${fmt(mk - md, 0)} ms; target <= 1.10 x direct + 50 ms = ${fmt(budget, 0)} ms -> ${mk <= budget ? 'met' : 'NOT met'}`,
    );
  }
  await agent.stop();
  await coord.stop();
  await docker.getImage('kiln-bench/direct:latest').remove().catch(() => {});
  await rm(dir, { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
