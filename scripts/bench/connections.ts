/**
 * Connection capacity and heartbeat cost (benchmarks.md C4, issue 5): 10,000 idle agent
 * connections on a real coordinator (persistence on, temp data dir) against a bare `ws`
 * server holding the same connections, measured in the same run.
 *
 * Processes: this one only orchestrates; per side, a server (connections-server.ts, run
 * with --expose-gc: the coordinator or the bare comparator) and its own load generator
 * (idle-agents.ts), which opens the connections, sends a real hello on each (distinct
 * names, noop executor), waits for the welcome and then heartbeats at the interval the
 * welcome names. Both servers receive byte-identical frames and answer with frames of the
 * same size. The bare side runs first, then the kiln side, each alone (running both at
 * once raised both CPU figures on 2 cores).
 *
 * Steps per side: memory after GC with 0 connections and CPU over 5 s idle; open 1,000,
 * wait one heartbeat interval, memory; open the rest (the accept rate), wait one interval,
 * memory; then N windows of heartbeats (default 3 x 2 intervals) for the server's CPU time
 * (process.cpuUsage) and event-loop lag (monitorEventLoopDelay). Reports RSS and heap per
 * connection (0 -> N, and the slope 1,000 -> N), % of one core (median of the windows),
 * lag, accept rate; ours / comparator / ratio and the targets.
 *
 *   node dist/scripts/bench/connections.js [--connections 10000] [--interval-ms 10000]
 *        [--window-ms 20000] [--windows 3] [--concurrency 64] [--sources 4] [--cpu-prof DIR]
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cv, fmt, machineLine, median } from './bench-util.js';

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
const WINDOW_MS = Math.floor(arg('window-ms', 2 * INTERVAL_MS));
const WINDOWS = Math.floor(arg('windows', 3));
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

/** One server (kiln or bare) with its own load generator process. */
class Side {
  readonly server: ChildProcess;
  readonly gen: ChildProcess;
  ready: { url: string; token: string } | null = null;

  private constructor(
    readonly mode: Mode,
    readonly tmp: string,
  ) {
    const execArgv = ['--expose-gc', ...(CPU_PROF && mode === 'kiln' ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`] : [])];
    this.server = forkChild('connections-server.js', execArgv);
    this.gen = forkChild('idle-agents.js', []);
  }

  static async start(mode: Mode): Promise<Side> {
    const side = new Side(mode, await mkdtemp(join(tmpdir(), 'kiln-bench-conn-')));
    side.ready = await request(side.server, { type: 'start', mode, intervalMs: INTERVAL_MS, dataDir: join(side.tmp, 'data') }, 'ready', `${mode} server`);
    return side;
  }

  mem(): Promise<Mem> {
    return request<Mem>(this.server, { type: 'mem' }, 'mem', `${this.mode} server`);
  }

  async open(count: number): Promise<Opened> {
    const r = await request<Opened>(
      this.gen,
      { type: 'open', url: this.ready!.url, token: this.ready!.token, count, prefix: 'idle', concurrency: CONCURRENCY, sources: SOURCES },
      'opened',
      'load generator',
    );
    if (r.failed > 0) throw new Error(`${this.mode}: ${r.failed} of ${count} connections failed; first error: ${r.firstError}`);
    return r;
  }

  stats(): Promise<GenStats> {
    return request<GenStats>(this.gen, { type: 'stats' }, 'stats', `${this.mode} load generator`);
  }

  async windowStart(): Promise<GenStats> {
    const s = await this.stats();
    await request(this.server, { type: 'window-start' }, 'window-started', `${this.mode} server`);
    return s;
  }

  async windowEnd(before: GenStats): Promise<Window> {
    const w = await request<WindowReport>(this.server, { type: 'window-end' }, 'window', `${this.mode} server`);
    const after = await this.stats();
    return { ...w, heartbeats: after.sent - before.sent, acks: after.acked - before.acked, gen: after };
  }

  async stop(): Promise<void> {
    await stopChild(this.gen, `${this.mode} load generator`);
    await stopChild(this.server, `${this.mode} server`);
    await rm(this.tmp, { recursive: true, force: true });
  }
}

interface Window extends WindowReport {
  heartbeats: number;
  acks: number;
  gen: GenStats;
}

interface SideResult {
  mode: Mode;
  mem0: Mem;
  mem1: Mem;
  mem2: Mem;
  /** Handshakes/s while opening connections FIRST..CONNECTIONS (nothing else connecting meanwhile). */
  acceptRate: number;
  welcomeBytes: number;
  /** The server with no connections, for context. */
  idle: Window;
  windows: Window[];
}

/** One side alone (the other is not running): memory at 0 / FIRST / CONNECTIONS connections, then the CPU windows. */
async function measureSide(mode: Mode): Promise<SideResult> {
  const side = await Side.start(mode);
  try {
    // V8's memory reducer shrinks the heap a few seconds after start-up; measure after it.
    await sleep(8000);
    const mem0 = await side.mem();
    const idleBefore = await side.windowStart();
    await sleep(IDLE_MS);
    const idle = await side.windowEnd(idleBefore);
    await side.open(FIRST);
    await sleep(INTERVAL_MS * 1.15); // every connection has heartbeated at least once
    const mem1 = await side.mem();
    const opened = await side.open(CONNECTIONS - FIRST);
    await sleep(INTERVAL_MS * 1.15);
    const mem2 = await side.mem();
    if (mem2.connections !== CONNECTIONS) throw new Error(`${mode}: the server holds ${mem2.connections} connections, expected ${CONNECTIONS}`);
    const windows: Window[] = [];
    for (let w = 0; w < WINDOWS; w++) {
      const before = await side.windowStart();
      await sleep(WINDOW_MS);
      windows.push(await side.windowEnd(before));
    }
    const last = windows.at(-1)!.gen;
    if (last.closed > 0) throw new Error(`${mode}: ${last.closed} connections were closed by the server (${last.lastCloses.join('; ')})`);
    if (last.open !== CONNECTIONS) throw new Error(`${mode}: ${last.open} connections open at the end, expected ${CONNECTIONS}`);
    return { mode, mem0, mem1, mem2, acceptRate: (CONNECTIONS - FIRST) / (opened.ms / 1000), welcomeBytes: opened.welcomeBytes, idle, windows };
  } finally {
    await side.stop();
  }
}

const perConn = (a: number, b: number, n: number) => (b - a) / n;
const kib = (bytes: number) => `${fmt(bytes / 1024, 2)} KiB`;
const pct = (w: WindowReport) => (w.cpuUs / 1000 / w.wallMs) * 100;

function describe(r: SideResult) {
  const rss = perConn(r.mem0.rss, r.mem2.rss, CONNECTIONS);
  const heap = perConn(r.mem0.heapUsed, r.mem2.heapUsed, CONNECTIONS);
  const ext = perConn(r.mem0.external + r.mem0.arrayBuffers, r.mem2.external + r.mem2.arrayBuffers, CONNECTIONS);
  const rssSlope = perConn(r.mem1.rss, r.mem2.rss, CONNECTIONS - FIRST);
  const heapSlope = perConn(r.mem1.heapUsed, r.mem2.heapUsed, CONNECTIONS - FIRST);
  const cpus = r.windows.map(pct);
  return {
    rss,
    heap,
    ext,
    rssSlope,
    heapSlope,
    cpus,
    cpuPct: median(cpus),
    cpuCv: cv(cpus),
    userPct: median(r.windows.map((w) => w.userUs / 10 / w.wallMs)),
    systemPct: median(r.windows.map((w) => w.systemUs / 10 / w.wallMs)),
    idlePct: pct(r.idle),
    lagP99: median(r.windows.map((w) => w.lag.p99)),
    lagP50: median(r.windows.map((w) => w.lag.p50)),
    lagMax: Math.max(...r.windows.map((w) => w.lag.max)),
    heartbeatsPerS: median(r.windows.map((w) => w.heartbeats / (w.wallMs / 1000))),
    acks: r.windows.reduce((a, w) => a + w.acks, 0),
    heartbeats: r.windows.reduce((a, w) => a + w.heartbeats, 0),
    gen: r.windows.at(-1)!.gen,
  };
}

function ulimitN(): string {
  const r = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' });
  return r.stdout.trim() || 'unknown';
}

async function main() {
  console.log(
    `# connections benchmark: ${CONNECTIONS} idle agent connections (real hello, heartbeat every ${INTERVAL_MS} ms ±10 %); coordinator persistence on; CPU over ${WINDOWS} windows of ${WINDOW_MS} ms (median); bare ws first, then kiln, each alone`,
  );
  console.log(`# ${machineLine()}, ulimit -n ${ulimitN()}, unpinned; one load generator process per server, connecting from ${SOURCES.join(', ')} (${CONCURRENCY} handshakes in flight)`);
  const bare = await measureSide('bare');
  const kiln = await measureSide('kiln');
  const b = describe(bare);
  const k = describe(kiln);
  const mib = (n: number) => fmt(n / 2 ** 20);
  for (const [label, r, d] of [
    ['bare ws (comparator)', bare, b],
    ['kiln coordinator    ', kiln, k],
  ] as const) {
    console.log(
      `${label}: RSS ${mib(r.mem0.rss)} -> ${mib(r.mem1.rss)} -> ${mib(r.mem2.rss)} MiB, heap used ${mib(r.mem0.heapUsed)} -> ${mib(r.mem1.heapUsed)} -> ${mib(r.mem2.heapUsed)} MiB of ${mib(r.mem2.heapTotal)} (0 / ${FIRST} / ${CONNECTIONS} conns); per connection RSS ${kib(d.rss)}, heap ${kib(d.heap)}, external+arrayBuffers ${kib(d.ext)}; slope ${FIRST}->${CONNECTIONS}: RSS ${kib(d.rssSlope)}, heap ${kib(d.heapSlope)}`,
    );
    console.log(
      `${label}: ${fmt(d.heartbeatsPerS, 0)} heartbeats/s (${d.gen.heartbeatBytes} B each; ${d.heartbeats} sent, ${d.acks} acks of ${d.gen.ackBytes} B back): CPU ${fmt(d.cpuPct, 2)} % of a core (windows ${d.cpus.map((x) => fmt(x, 2)).join(', ')}, cv ${fmt(d.cpuCv, 2)}; user ${fmt(d.userPct, 2)} %, system ${fmt(d.systemPct, 2)} %; with 0 connections ${fmt(d.idlePct, 2)} %); event-loop lag p50 ${fmt(d.lagP50, 2)} ms, p99 ${fmt(d.lagP99, 2)} ms, max ${fmt(d.lagMax, 1)} ms; accept ${fmt(r.acceptRate, 0)} welcomes/s (welcome ${r.welcomeBytes} B)`,
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
  console.log(`target (issue 5) heartbeat CPU <= 5 % of a core at ${CONNECTIONS} connections: ${fmt(k.cpuPct, 2)} % (bare ws ${fmt(b.cpuPct, 2)} %) -> ${verdict(k.cpuPct <= 5)}`);
  console.log(`target (C4) event-loop lag p99 <= 20 ms during heartbeats: ${fmt(k.lagP99, 2)} ms -> ${verdict(k.lagP99 <= 20)}`);
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
