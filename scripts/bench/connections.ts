/**
 * Connection capacity and heartbeat cost (benchmarks.md C4, issue 5): 10,000 idle agent
 * connections on a real coordinator (persistence on, temp data dir) against a bare `ws`
 * server holding the same connections, measured in the same run.
 *
 * Three processes per side: this one only orchestrates; the server (connections-server.ts,
 * run with --expose-gc) is the coordinator or the bare comparator; the load generator
 * (idle-agents.ts) opens the connections, sends a real hello each (distinct names, noop
 * executor), waits for the welcome and then heartbeats at the interval the welcome names.
 * Both servers receive byte-identical frames and answer with frames of the same size.
 *
 * Steps per side: memory after GC with 0 connections and CPU over 5 s idle, open 1,000, wait one heartbeat
 * interval, memory, open the rest, wait one interval, memory, then a window of heartbeats
 * (default 3 intervals) for the server's CPU time (process.cpuUsage) and event-loop lag
 * (monitorEventLoopDelay). Reports per connection RSS and heap (0 -> N, and the slope
 * 1,000 -> N), % of one core, lag p99, accept rate; ours / comparator / ratio and the
 * targets.
 *
 *   node dist/scripts/bench/connections.js [--connections 10000] [--interval-ms 10000]
 *        [--window-ms 30000] [--concurrency 64] [--sources 4] [--cpu-prof DIR]
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fmt, machineLine } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number, got '${args[i + 1] ?? ''}'`);
  return v;
};
const strArg = (name: string): string | null => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? (args[i + 1] ?? null) : null;
};
const CONNECTIONS = Math.floor(arg('connections', 10_000));
const FIRST = Math.min(1000, Math.floor(CONNECTIONS / 10));
const INTERVAL_MS = Math.floor(arg('interval-ms', 10_000));
const WINDOW_MS = Math.floor(arg('window-ms', 3 * INTERVAL_MS));
const IDLE_MS = 5000;
const CONCURRENCY = Math.floor(arg('concurrency', 64));
const SOURCES = Array.from({ length: Math.min(200, Math.floor(arg('sources', 4))) }, (_, i) => `127.0.0.${i + 1}`);
const CPU_PROF = strArg('cpu-prof');

type Mode = 'kiln' | 'bare';

interface Mem {
  connections: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

interface Opened {
  welcomed: number;
  failed: number;
  ms: number;
  firstError: string | null;
  welcomeBytes: number;
}

interface GenStats {
  open: number;
  sent: number;
  acked: number;
  closed: number;
  heartbeatBytes: number;
  ackBytes: number;
  lastCloses: string[];
}

interface WindowReport {
  wallMs: number;
  cpuUs: number;
  userUs: number;
  systemUs: number;
  lag: { p50: number; p99: number; max: number };
}

/** Sends `msg` and resolves with the child's first message of type `reply`; rejects when the child exits first. */
function request<T>(c: ChildProcess, msg: object, reply: string, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type: string }) => {
      if (m.type !== reply) return;
      cleanup();
      resolve(m as T);
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`${what} exited (code ${code}, signal ${signal}) while waiting for '${reply}'`));
    };
    const cleanup = () => {
      c.off('message', onMessage);
      c.off('exit', onExit);
    };
    c.on('message', onMessage);
    c.on('exit', onExit);
    c.send(msg);
  });
}

function forkChild(script: string, execArgv: string[]): ChildProcess {
  return fork(join(import.meta.dirname, script), [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

async function stopChild(c: ChildProcess, what: string): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
  c.send({ type: 'stop' });
  const t = setTimeout(() => {
    process.stderr.write(`${what} did not exit; killing it\n`);
    c.kill('SIGKILL');
  }, 20_000);
  await exited;
  clearTimeout(t);
}

interface SideResult {
  mode: Mode;
  mem0: Mem;
  mem1: Mem;
  mem2: Mem;
  acceptRate: number;
  connectMs: number;
  window: WindowReport;
  /** The server with no connections, for context. */
  idle: WindowReport;
  heartbeats: number;
  acks: number;
  gen: GenStats;
  welcomeBytes: number;
}

async function side(mode: Mode): Promise<SideResult> {
  const tmp = await mkdtemp(join(tmpdir(), 'kiln-bench-conn-'));
  const execArgv = ['--expose-gc', ...(CPU_PROF && mode === 'kiln' ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`] : [])];
  const server = forkChild('connections-server.js', execArgv);
  const gen = forkChild('idle-agents.js', []);
  try {
    const ready = await request<{ url: string; token: string }>(server, { type: 'start', mode, intervalMs: INTERVAL_MS, dataDir: join(tmp, 'data') }, 'ready', `${mode} server`);
    const mem = () => request<Mem>(server, { type: 'mem' }, 'mem', `${mode} server`);
    const open = async (count: number): Promise<Opened> => {
      const r = await request<Opened>(gen, { type: 'open', url: ready.url, token: ready.token, count, prefix: 'idle', concurrency: CONCURRENCY, sources: SOURCES }, 'opened', 'load generator');
      if (r.failed > 0) throw new Error(`${mode}: ${r.failed} of ${count} connections failed; first error: ${r.firstError}`);
      return r;
    };
    const stats = () => request<GenStats>(gen, { type: 'stats' }, 'stats', 'load generator');

    // V8's memory reducer shrinks the heap a few seconds after start-up; measure after it.
    await sleep(8000);
    const mem0 = await mem();
    await request(server, { type: 'window-start' }, 'window-started', `${mode} server`);
    await sleep(IDLE_MS);
    const idle = await request<WindowReport>(server, { type: 'window-end' }, 'window', `${mode} server`);
    const o1 = await open(FIRST);
    await sleep(INTERVAL_MS * 1.15); // every connection has heartbeated at least once
    const mem1 = await mem();
    const o2 = await open(CONNECTIONS - FIRST);
    await sleep(INTERVAL_MS * 1.15);
    const mem2 = await mem();
    if (mem2.connections !== CONNECTIONS) throw new Error(`${mode}: the server holds ${mem2.connections} connections, expected ${CONNECTIONS}`);

    const s0 = await stats();
    await request(server, { type: 'window-start' }, 'window-started', `${mode} server`);
    await sleep(WINDOW_MS);
    const window = await request<WindowReport>(server, { type: 'window-end' }, 'window', `${mode} server`);
    const s1 = await stats();
    if (s1.closed > 0) throw new Error(`${mode}: ${s1.closed} connections were closed by the server (${s1.lastCloses.join('; ')})`);
    if (s1.open !== CONNECTIONS) throw new Error(`${mode}: ${s1.open} connections open at the end, expected ${CONNECTIONS}`);
    return {
      mode,
      mem0,
      mem1,
      mem2,
      acceptRate: (CONNECTIONS - FIRST) / (o2.ms / 1000),
      connectMs: o1.ms + o2.ms,
      window,
      idle,
      heartbeats: s1.sent - s0.sent,
      acks: s1.acked - s0.acked,
      gen: s1,
      welcomeBytes: o2.welcomeBytes,
    };
  } finally {
    await stopChild(gen, 'load generator');
    await stopChild(server, `${mode} server`);
    await rm(tmp, { recursive: true, force: true });
  }
}

const perConn = (a: number, b: number, n: number) => (b - a) / n;
const kib = (bytes: number) => `${fmt(bytes / 1024, 2)} KiB`;

function describe(r: SideResult) {
  const rss = perConn(r.mem0.rss, r.mem2.rss, CONNECTIONS);
  const heap = perConn(r.mem0.heapUsed, r.mem2.heapUsed, CONNECTIONS);
  const ext = perConn(r.mem0.external + r.mem0.arrayBuffers, r.mem2.external + r.mem2.arrayBuffers, CONNECTIONS);
  const rssSlope = perConn(r.mem1.rss, r.mem2.rss, CONNECTIONS - FIRST);
  const heapSlope = perConn(r.mem1.heapUsed, r.mem2.heapUsed, CONNECTIONS - FIRST);
  const cpuPct = (r.window.cpuUs / 1000 / r.window.wallMs) * 100;
  const idlePct = (r.idle.cpuUs / 1000 / r.idle.wallMs) * 100;
  return { rss, heap, ext, rssSlope, heapSlope, cpuPct, idlePct };
}

function ulimitN(): string {
  const r = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' });
  return r.stdout.trim() || 'unknown';
}

async function main() {
  console.log(
    `# connections benchmark: ${CONNECTIONS} idle agent connections (real hello, heartbeat every ${INTERVAL_MS} ms ±10 %), CPU window ${WINDOW_MS} ms; coordinator persistence on`,
  );
  console.log(`# ${machineLine()}, ulimit -n ${ulimitN()}, unpinned; load generator in its own process, connecting from ${SOURCES.join(', ')} (${CONCURRENCY} handshakes in flight)`);
  const bare = await side('bare');
  const kiln = await side('kiln');
  const b = describe(bare);
  const k = describe(kiln);
  for (const [label, r, d] of [
    ['bare ws (comparator)', bare, b],
    ['kiln coordinator    ', kiln, k],
  ] as const) {
    console.log(
      `${label}: RSS ${fmt(r.mem0.rss / 2 ** 20)} -> ${fmt(r.mem1.rss / 2 ** 20)} -> ${fmt(r.mem2.rss / 2 ** 20)} MiB, heap used ${fmt(r.mem0.heapUsed / 2 ** 20)} -> ${fmt(r.mem1.heapUsed / 2 ** 20)} -> ${fmt(r.mem2.heapUsed / 2 ** 20)} MiB of ${fmt(r.mem2.heapTotal / 2 ** 20)} (0 / ${FIRST} / ${CONNECTIONS} conns); per connection RSS ${kib(d.rss)}, heap ${kib(d.heap)}, external+arrayBuffers ${kib(d.ext)}; slope ${FIRST}->${CONNECTIONS}: RSS ${kib(d.rssSlope)}, heap ${kib(d.heapSlope)}`,
    );
    console.log(
      `${label}: heartbeat window ${fmt(r.window.wallMs / 1000)} s, ${r.heartbeats} heartbeats sent (${fmt(r.heartbeats / (r.window.wallMs / 1000), 0)}/s, ${r.gen.heartbeatBytes} B each), ${r.acks} acks back (${r.gen.ackBytes} B): CPU ${fmt(d.cpuPct, 2)} % of a core (user ${fmt(r.window.userUs / 10 / r.window.wallMs, 2)} %, system ${fmt(r.window.systemUs / 10 / r.window.wallMs, 2)} %; with 0 connections ${fmt(d.idlePct, 2)} %); event-loop lag p50 ${fmt(r.window.lag.p50, 2)} ms, p99 ${fmt(r.window.lag.p99, 2)} ms, max ${fmt(r.window.lag.max, 1)} ms; accept ${fmt(r.acceptRate, 0)} welcomes/s (welcome ${r.welcomeBytes} B)`,
    );
  }
  const memRatio = k.rss / b.rss;
  const slopeRatio = k.rssSlope / b.rssSlope;
  const heapRatio = k.heap / b.heap;
  const cpuRatio = k.cpuPct / b.cpuPct;
  const acceptRatio = kiln.acceptRate / bare.acceptRate;
  const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
  console.log(`ratio RSS per connection kiln / bare: ${fmt(memRatio, 2)} (slope ${FIRST}->${CONNECTIONS}: ${fmt(slopeRatio, 2)}); heap per connection: ${fmt(heapRatio, 2)}`);
  console.log(`ratio heartbeat CPU kiln / bare: ${fmt(cpuRatio, 2)}; accept rate kiln / bare: ${fmt(acceptRatio, 2)}`);
  console.log(`target (issue 5) memory per connection <= 2x bare ws: ${kib(k.rss)} vs ${kib(b.rss)} RSS = ${fmt(memRatio, 2)}x -> ${verdict(memRatio <= 2)}`);
  console.log(`target (issue 5) heartbeat CPU <= 5 % of a core at ${CONNECTIONS} connections: ${fmt(k.cpuPct, 2)} % -> ${verdict(k.cpuPct <= 5)}`);
  console.log(`target (C4) event-loop lag p99 <= 20 ms during heartbeats: ${fmt(kiln.window.lag.p99, 2)} ms -> ${verdict(kiln.window.lag.p99 <= 20)}`);
  console.log(`target (C4) accept rate >= 0.5x bare ws: ${fmt(acceptRatio, 2)}x -> ${verdict(acceptRatio >= 0.5)}`);
  if (CPU_PROF) console.log(`# coordinator CPU profile written to ${CPU_PROF}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
