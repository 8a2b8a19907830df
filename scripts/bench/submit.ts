/**
 * Submission benchmark (issue 10): one-node builds, one per POST, from 4 concurrent HTTP
 * clients (keep-alive `node:http`) against a real coordinator in its own process
 * (`startCoordinator`: HTTP API, validation, engine, journal with persistence on, no
 * agents connected, so builds stay queued). Reports builds/s (201s received per second)
 * and the coordinator's CPU per build, read from /proc/<pid>/stat around the window.
 *
 * Comparator (same run, same clients and bodies): a bare `node:http` server in its own
 * process that reads the body, `JSON.parse`s it and answers 201 with a body of the same
 * shape: the loopback HTTP limit.
 *
 *   node dist/scripts/bench/submit.js [--builds 10000] [--runs 3] [--clients 4] [--cpu-prof DIR]
 *
 * `--cpu-prof DIR` starts the coordinator process with `node --cpu-prof` (profile written
 * to DIR when it stops) and skips the comparator.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, createServer, request } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/coordinator.js';
import { createLogger } from '../../shared/index.js';
import { fmt, machineLine, median, now } from './bench-util.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const num = (name: string, dflt: number) => Number(opt(name) ?? dflt);
if (args.includes('--help')) {
  console.log('usage: node dist/scripts/bench/submit.js [--builds 10000] [--runs 3] [--clients 4] [--cpu-prof DIR]');
  process.exit(0);
}
const BUILDS = num('builds', 10_000);
const RUNS = num('runs', 3);
const CLIENTS = num('clients', 4);
const WARMUP = 500;
const PROFILE_DIR = opt('cpu-prof');

// ---------------------------------------------------------------- server process

interface Ready {
  type: 'ready';
  url: string;
  token: string;
}

async function serveKiln(dataDir: string): Promise<void> {
  const config = loadCoordinatorConfig({ dataDir, listen: '127.0.0.1:0', logLevel: 'silent', logFormat: 'json', rateLimitPerKey: 'off', rateLimitPerAddress: 'off' }, { env: {}, arch: process.arch, isTTY: false });
  const coord: RunningCoordinator = await startCoordinator(config, createLogger({ name: 'bench', level: 'silent', format: 'json' }));
  if (!coord.store.persist) throw new Error('the benchmark needs persistence on');
  process.on('message', (m: { type: string }) => {
    if (m.type === 'stats') process.send!({ type: 'stats', writes: coord.store.writes });
    if (m.type === 'stop')
      void coord.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
  });
  process.send!({ type: 'ready', url: coord.url, token: coord.tokens.apiToken } satisfies Ready);
}

function serveBare(): void {
  let n = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const spec = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { name: string };
      const id = `b-01m87q8730000-${String(n++).padStart(8, '0')}`;
      const url = `/api/v1/builds/${id}`;
      const body = JSON.stringify({ id, state: spec.name ? 'queued' : 'pending', url });
      res.writeHead(201, { 'content-type': 'application/json', location: url }).end(body);
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as { port: number };
    process.send!({ type: 'ready', url: `http://127.0.0.1:${port}`, token: '' } satisfies Ready);
  });
  process.on('message', (m: { type: string }) => {
    if (m.type === 'stats') process.send!({ type: 'stats', writes: 0 });
    if (m.type === 'stop') server.close(() => process.exit(0));
  });
}

// ---------------------------------------------------------------- load generator

/** utime + stime of a process, in ms (clock ticks are 100 Hz on Linux). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function post(agent: Agent, url: URL, token: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function writes(child: ChildProcess): Promise<number> {
  const reply = once(child, 'message') as Promise<[{ writes: number }]>;
  child.send({ type: 'stats' });
  return (await reply)[0].writes;
}

interface LoadResult {
  rate: number;
  cpuPerBuild: number;
  /** Builds per durable journal write (group commit across requests). */
  perWrite: number;
}

/** `total` POSTs from CLIENTS concurrent clients; returns builds/s and the server's CPU ms per build. */
async function load(child: ChildProcess, ready: Ready, total: number): Promise<LoadResult> {
  const url = new URL('/api/v1/builds', ready.url);
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS });
  let next = 0;
  const body = (i: number) => JSON.stringify({ name: `one-${i}`, nodes: { n: { dockerfile_inline: 'FROM scratch' } } });
  const client = async () => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      const status = await post(agent, url, ready.token, body(i));
      if (status !== 201) throw new Error(`submit answered ${status}`);
    }
  };
  const writes0 = await writes(child);
  const cpu0 = cpuMs(child.pid!);
  const t0 = now();
  await Promise.all(Array.from({ length: CLIENTS }, client));
  const wall = now() - t0;
  const cpu = cpuMs(child.pid!) - cpu0;
  agent.destroy();
  const w = (await writes(child)) - writes0;
  return { rate: total / (wall / 1000), cpuPerBuild: cpu / total, perWrite: w > 0 ? total / w : NaN };
}

async function startServer(mode: 'kiln' | 'bare', dataDir: string): Promise<{ child: ChildProcess; ready: Ready }> {
  const execArgv = mode === 'kiln' && PROFILE_DIR ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR] : [];
  const child = fork(import.meta.filename, ['--serve', mode, dataDir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
  const [ready] = (await once(child, 'message')) as [Ready];
  return { child, ready };
}

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.send({ type: 'stop' });
  await exited;
}

async function measure(mode: 'kiln' | 'bare'): Promise<LoadResult> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-submit-'));
  try {
    const { child, ready } = await startServer(mode, join(dir, 'data'));
    try {
      await load(child, ready, WARMUP);
      return await load(child, ready, BUILDS);
    } finally {
      await stopServer(child);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  console.log(`# submit benchmark: ${BUILDS} one-node builds, one per POST, ${CLIENTS} concurrent keep-alive clients, coordinator in its own process with persistence on (no agents: builds stay queued), ${RUNS} runs`);
  console.log(`# ${machineLine()}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const kiln: LoadResult[] = [];
  const bare: LoadResult[] = [];
  for (let r = 0; r < RUNS; r++) {
    const k = await measure('kiln');
    kiln.push(k);
    const b = PROFILE_DIR ? null : await measure('bare');
    if (b) bare.push(b);
    console.log(`run ${r + 1} (load ${loadavg()[0]!.toFixed(2)}): kiln ${fmt(k.rate, 0)} builds/s, ${fmt(k.cpuPerBuild, 3)} ms CPU per build, ${fmt(k.perWrite, 2)} builds per journal write` + (b ? `; bare node:http ${fmt(b.rate, 0)} req/s, ${fmt(b.cpuPerBuild, 3)} ms CPU per request` : ''));
  }
  const med = (xs: number[], d: number) => `${fmt(median(xs), d)} (${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)})`;
  console.log('');
  console.log('| server | builds/s, median (min–max) | CPU ms per build, median (min–max) |');
  console.log('|---|---|---|');
  console.log(`| kiln coordinator, persistence on | ${med(kiln.map((x) => x.rate), 0)} | ${med(kiln.map((x) => x.cpuPerBuild), 3)} |`);
  if (bare.length > 0) {
    console.log(`| bare node:http + JSON.parse (comparator) | ${med(bare.map((x) => x.rate), 0)} | ${med(bare.map((x) => x.cpuPerBuild), 3)} |`);
    console.log(`ratio kiln / bare node:http: ${med(kiln.map((k, i) => k.rate / bare[i]!.rate), 3)}`);
  }
  const rates = kiln.map((x) => x.rate);
  console.log(`target (issue 10) >= 2000 builds/s with persistence on, every run: ${med(rates, 0)} -> ${Math.min(...rates) >= 2000 ? 'met' : 'missed'}`);
}

const serve = args.indexOf('--serve');
if (serve >= 0) {
  const mode = args[serve + 1];
  if (mode === 'kiln') {
    serveKiln(args[serve + 2]!).catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
  } else serveBare();
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
