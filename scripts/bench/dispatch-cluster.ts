/**
 * The dispatch benchmarks' cluster (dispatch.ts, dispatch-pg.ts): a real coordinator in this
 * process (HTTP submit, engine, state, msgpack over WebSockets) and simulated agents (real
 * `Agent` code, no-op executor) in a child process (sim-agents.ts); specs, one build run to
 * its end, dispatch latencies, and the process's CPU readings.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/coordinator.js';
import { AGENT_SOCKET_PATH, apiPath, createLogger, isBuildTerminal } from '../../shared/index.js';
import { now } from './bench-util.js';

export function child(): ChildProcess {
  return fork(join(import.meta.dirname, 'sim-agents.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

export function request<T>(c: ChildProcess, msg: object, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { type: string }) => {
      if (m.type === reply) {
        c.off('message', on);
        resolve(m as T);
      }
    };
    c.on('message', on);
    c.send(msg);
  });
}

export function wideSpec(n: number) {
  const nodes: Record<string, object> = {};
  for (let i = 0; i < n; i++) nodes[`n${i}`] = { dockerfile_inline: 'FROM scratch' };
  return { name: 'wide', nodes };
}

export function chainSpec(chains: number, len: number) {
  const nodes: Record<string, object> = {};
  for (let c = 0; c < chains; c++) for (let i = 0; i < len; i++) nodes[`c${c}-${i}`] = { dockerfile_inline: 'FROM scratch', ...(i > 0 ? { needs: [`c${c}-${i - 1}`] } : {}) };
  return { name: 'chains', nodes };
}

export interface Cluster {
  coord: RunningCoordinator;
  agents: ChildProcess;
  /** The events stream's clients (--events), or null. */
  eventClients: ChildProcess | null;
  dataDir: string;
  readyAt: Map<string, number>;
}

/** How a cluster's coordinator keeps its state: the real journal, none, the journal written but never synced, or a PostgreSQL database (its URL). */
export type Side = 'on' | 'off' | 'unsynced' | { postgres: string };

export interface ClusterOptions {
  /** Simulated agents (1 slot each). */
  agents: number;
  /** Clients of GET /api/v1/events reading all topics (0: none). */
  eventClients: number;
}

export async function startCluster(side: Side, opts: ClusterOptions): Promise<Cluster> {
  const dataDir = await mkdtemp(join(tmpdir(), 'kiln-bench-'));
  const pg = typeof side === 'object' ? side.postgres : null;
  const config = loadCoordinatorConfig(
    { dataDir: join(dataDir, 'data'), listen: '127.0.0.1:0', noPersist: side === 'off', logLevel: 'silent', logFormat: 'json', rateLimitPerKey: 'off', rateLimitPerAddress: 'off', ...(pg ? { state: pg } : {}) },
    { env: {}, arch: process.arch, isTTY: false },
  );
  const cfg = { ...config, unsyncedJournal: side === 'unsynced' };
  const coord = await startCoordinator(cfg, createLogger({ name: 'bench', level: 'silent', format: 'json' }));
  const readyAt = new Map<string, number>();
  coord.engine.on('node', (buildId: string, name: string) => {
    const build = coord.engine.activeBuild(buildId);
    if (!build) return;
    const node = coord.engine.graph(build).byName.get(name);
    const key = `${buildId}/${name}`;
    if (node?.state === 'ready' && !readyAt.has(key)) readyAt.set(key, now());
  });
  const agents = child();
  await request(agents, { type: 'start', mode: 'kiln', url: `${coord.url.replace('http', 'ws')}${AGENT_SOCKET_PATH}`, token: coord.tokens.agentToken, count: opts.agents }, 'ready');
  const deadline = Date.now() + 30_000;
  while (coord.engine.agents.connected().length < opts.agents) {
    if (Date.now() > deadline) throw new Error('simulated agents did not connect');
    await new Promise((r) => setTimeout(r, 20));
  }
  let eventClients: ChildProcess | null = null;
  if (opts.eventClients > 0) {
    eventClients = fork(join(import.meta.dirname, 'events-client.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await request(eventClients, { type: 'start', url: coord.url, token: coord.tokens.apiToken, count: opts.eventClients }, 'ready');
  }
  return { coord, agents, eventClients, dataDir, readyAt };
}

export async function stopCluster(c: Cluster): Promise<void> {
  c.agents.send({ type: 'stop' });
  await once(c.agents, 'exit');
  if (c.eventClients) {
    c.eventClients.send({ type: 'stop' });
    await once(c.eventClients, 'exit');
  }
  await c.coord.stop();
  await rm(c.dataDir, { recursive: true, force: true });
}

/** Submits over HTTP and resolves when the build is terminal; returns ms from submit to end and the HTTP 201 time. */
export async function runBuild(c: Cluster, spec: object): Promise<{ id: string; totalMs: number; submitMs: number; state: string }> {
  const t0 = now();
  const res = await fetch(`${c.coord.url}${apiPath.builds()}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${c.coord.tokens.apiToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(spec),
  });
  if (res.status !== 201) throw new Error(`submit: ${res.status} ${await res.text()}`);
  const submitMs = now() - t0;
  const { id } = (await res.json()) as { id: string };
  const state = await new Promise<string>((resolve) => {
    const check = () => {
      const s = c.coord.engine.buildSummary(id)?.state;
      if (s && isBuildTerminal(s)) {
        c.coord.engine.off('build', onBuild);
        resolve(s);
      }
    };
    const onBuild = (bid: string) => bid === id && check();
    c.coord.engine.on('build', onBuild);
    check();
  });
  return { id, totalMs: now() - t0, submitMs, state };
}

export async function latencies(c: Cluster, buildId: string): Promise<number[]> {
  const r = await request<{ recv: Array<[string, number]> }>(c.agents, { type: 'report' }, 'report');
  const out: number[] = [];
  for (const [key, t] of r.recv) {
    const ready = c.readyAt.get(key);
    if (ready !== undefined && key.startsWith(`${buildId}/`)) out.push(t - ready);
  }
  return out;
}

/** A full garbage collection (gc exposed at run time, so the benchmark runs without node flags). */
export const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/** CPU ms of the main thread so far (utime + stime from /proc, 10 ms ticks; 0 where there is no /proc). */
export function mainThreadMs(): number {
  try {
    const f = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}

/** The mean of each figure over runs of one side (rates, latencies, CPU per node, writes). */
export function meanOf<T extends Record<string, unknown>>(runs: T[]): T {
  const out = { ...runs[0]! } as Record<string, unknown>;
  for (const [k, v] of Object.entries(out)) {
    if (typeof v === 'number') out[k] = runs.reduce((a, r) => a + (r[k] as number), 0) / runs.length;
    else if (Array.isArray(v)) out[k] = runs.flatMap((r) => r[k] as unknown[]);
  }
  return out as T;
}

