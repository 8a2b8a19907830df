/**
 * Live log streaming (benchmarks.md C6, issue 10): generators inside real BuildKit steps
 * print timestamped lines at a fixed rate; a `kiln logs -f` client (the CLI's own SSE
 * follower, `followBuildLogs`) measures write-to-receive latency, against the same builds
 * streamed straight from the Engine API with dockerode in the same run (the floor).
 *
 * The coordinator and the agent are the real `kiln` binary (dist/cli/main.js) in child
 * processes; this process is only the clients. Per workload it prints latency p50/p99 for
 * both paths, the lines received (every step's sequence numbers must arrive once and in
 * order: lost, duplicated and out-of-order lines are counted), the sustained lines/s and
 * the coordinator's and agent's CPU per line. Then a slow consumer: a client that reads
 * 4 KiB every 100 ms while 10 steps write, and the coordinator's RSS meanwhile.
 *
 * The generator is a small static C program (compiled here with `gcc -static`, copied into
 * an image built from kiln/busybox:1), so timestamps come from clock_gettime(REALTIME) at
 * the write. A line is `<seq base36> <µs timestamp mod 36^6, base36> ` padded with `x` to
 * its size; the reader recovers the latency modulo 36 minutes. Lines are 100 bytes where
 * that fits BuildKit's per-step log limit of 200 KiB/s (Docker Engine 20.10 clips a step's
 * output beyond it, unless dockerd runs with BUILDKIT_STEP_LOG_MAX_SPEED=-1), and shorter
 * above (18 bytes at 10k lines/s); the output of every step is checked for clipping.
 *
 *   node dist/scripts/bench/live-logs.js [--seconds 3] [--rates 100,1000,10000] [--steps 1,10]
 *        [--slow-seconds 8] [--repeat 1] [--compare-bin OTHER/dist/cli/main.js]
 *        [--docker-host unix:///var/run/docker.sock] [--profile-dir DIR] [--trace]
 *   long variant: --seconds 10 --slow-seconds 30 (BuildKit may also cap a step's total output;
 *   clipping shows in the table)
 *
 * --trace runs kiln with KILN_LOG_TRACE (shared/log-trace.ts) and prints, per workload, when
 * the lines passed each hop: taken by the agent from the build stream, sent in a frame,
 * received and written by the coordinator, written to SSE, received by the client (ms after
 * the generator wrote them, p50 / p99, and each hop's own share). The trace costs time
 * itself: compare latencies without it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { pack } from 'tar-stream';
import type Docker from 'dockerode';
import { readBuildEvents } from '../../agent/executors/docker-executor.js';
import { BuildProgressDecoder } from '../../agent/docker/buildkit-progress.js';
import { dockerClient } from '../../agent/docker/docker-client.js';
import { ApiClient } from '../../cli/api-client.js';
import { followBuildLogs } from '../../cli/follow.js';
import { fmt, machineLine, median, percentile } from './bench-util.js';

const args = process.argv.slice(2);
if (args.includes('--help')) {
  console.log('usage: node dist/scripts/bench/live-logs.js [--steps 1,10] [--rates 100,1000,10000] [--seconds 3] [--repeat 1] [--slow-seconds 8] [--compare-bin DIST_CLI_MAIN] [--profile-dir DIR] [--trace] [--docker-host URL]');
  process.exit(0);
}
const arg = (name: string, def: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const SECONDS = Number(arg('--seconds', '3'));
const RATES = arg('--rates', '100,1000,10000').split(',').map(Number);
const STEPS = arg('--steps', '1,10').split(',').map(Number);
const SLOW_SECONDS = Number(arg('--slow-seconds', '8'));
const REPEAT = Number(arg('--repeat', '1'));
/** Another kiln build (its dist/cli/main.js) to run interleaved with this one, e.g. the code before a change. */
const COMPARE_BIN = arg('--compare-bin', '');
/** Writes a V8 CPU profile of the coordinator and the agent there (node --cpu-prof). */
const PROFILE_DIR = arg('--profile-dir', '');
/** Trace each line through kiln's hops (KILN_LOG_TRACE) and print where the time goes. */
const TRACE = args.includes('--trace');
/** Print, per 250 ms of the generators' time, the slowest line of the floor and of kiln (where in a run the tail is). */
const TIMELINE = args.includes('--timeline');
const DOCKER_HOST = arg('--docker-host', 'unix:///var/run/docker.sock');
const KILN_BIN = resolve(import.meta.dirname, '..', '..', 'cli', 'main.js');
const IMAGE = 'kiln-bench/loggen:1';
/** BuildKit clips a step's log beyond 200 KiB/s; stay under it with a margin. */
const STEP_BYTES_PER_SEC = 180_000;
const TS_PERIOD_US = 36 ** 6;

const GENERATOR_C = String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static long long now_us(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return (long long)t.tv_sec * 1000000LL + t.tv_nsec / 1000; }
static int b36(char *out, long long v) { char tmp[16]; int n = 0; do { tmp[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36]; v /= 36; } while (v > 0); for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i]; return n; }
int main(int argc, char **argv) {
  double rate = atof(argv[1]); long count = atol(argv[2]); int size = atoi(argv[3]);
  char buf[256]; long long t0 = now_us(); long i = 0;
  while (i < count) {
    long due = (long)((double)(now_us() - t0) * rate / 1e6) + 1; if (due > count) due = count;
    for (; i < due; i++) {
      int len = b36(buf, i); buf[len++] = ' ';
      len += b36(buf + len, now_us() % ${TS_PERIOD_US}LL); buf[len++] = ' ';
      while (len < size - 1) buf[len++] = 'x';
      buf[len++] = '\n';
      if (write(1, buf, len) < 0) return 1;
    }
    if (i < count) { long long d = t0 + (long long)((double)i * 1e6 / rate) - now_us(); if (d > 0) { struct timespec s = { d / 1000000, (d % 1000000) * 1000 }; nanosleep(&s, 0); } }
  }
  return 0;
}
`;

const LINE_RE = /(?:^|\s)([0-9a-z]{1,6}) ([0-9a-z]{1,6}) x*$/;

function lineBytes(rate: number): number {
  return Math.max(18, Math.min(100, Math.floor(STEP_BYTES_PER_SEC / rate)));
}

function dockerfile(rate: number, count: number): string {
  return `FROM ${IMAGE}\nRUN /kiln-loggen ${rate} ${count} ${lineBytes(rate)} # ${Date.now()}-${Math.random()}\n`;
}

/** Per-step order and loss check plus latencies, fed with log lines as they arrive. */
class Tally {
  latencies: number[] = [];
  received = 0;
  /** CPU (ms) of this process while it read the lines (the floor's reader: Engine API stream + decoder). */
  cpuMs = 0;
  dup = 0;
  reordered = 0;
  clipped = false;
  first = Infinity;
  last = 0;
  private readonly next = new Map<string, number>();
  private readonly seen = new Map<string, Set<number>>();
  /** With --timeline: when each line was written (ms, wall clock), in the order of `latencies`. */
  readonly genMs: number[] = [];
  /** With --trace: per line (`seq ts`), when it was written and received (ms, wall clock). */
  readonly times = new Map<string, { gen: number; recv: number }>();

  line(step: string, line: string, recvUs: number): void {
    if (line.includes('output clipped')) this.clipped = true;
    const m = LINE_RE.exec(line);
    if (!m) return;
    const seq = parseInt(m[1]!, 36);
    const sent = parseInt(m[2]!, 36);
    const lat = (((recvUs % TS_PERIOD_US) - sent + TS_PERIOD_US) % TS_PERIOD_US) / 1000;
    this.latencies.push(lat);
    if (TIMELINE) this.genMs.push(recvUs / 1000 - lat);
    if (TRACE) this.times.set(`${m[1]} ${m[2]}`, { gen: recvUs / 1000 - lat, recv: recvUs / 1000 });
    this.received++;
    this.first = Math.min(this.first, recvUs);
    this.last = Math.max(this.last, recvUs);
    let seen = this.seen.get(step);
    if (!seen) this.seen.set(step, (seen = new Set()));
    if (seen.has(seq)) this.dup++;
    seen.add(seq);
    const expected = this.next.get(step) ?? 0;
    if (seq !== expected) this.reordered++;
    this.next.set(step, seq + 1);
  }

  lost(steps: number, count: number): number {
    let lost = 0;
    for (let s = 0; s < steps; s++) lost += count - (this.seen.get(`s${s}`)?.size ?? 0);
    return lost;
  }

  rate(): number {
    return this.received / Math.max(1e-3, (this.last - this.first) / 1e6);
  }
}

const nowUs = (): number => Math.round((performance.timeOrigin + performance.now()) * 1000);

/** Splits text into lines per stream, keeping partial lines until their newline. */
function lineFeeder(onLine: (step: string, line: string, recvUs: number) => void): (step: string, text: string) => void {
  const partial = new Map<string, string>();
  return (step, text) => {
    const t = nowUs();
    const all = (partial.get(step) ?? '') + text;
    const pieces = all.split('\n');
    partial.set(step, pieces.pop() ?? '');
    for (const p of pieces) onLine(step, p, t);
  };
}

async function buildGeneratorImage(docker: ReturnType<typeof dockerClient>, dir: string): Promise<void> {
  await writeFile(join(dir, 'gen.c'), GENERATOR_C);
  const cc = spawnSync('gcc', ['-O2', '-static', '-o', join(dir, 'kiln-loggen'), join(dir, 'gen.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cannot compile the log generator (gcc -static): ${cc.stderr || cc.error?.message}`);
  const p = pack();
  p.entry({ name: 'Dockerfile', mtime: new Date(0) }, `FROM kiln/busybox:1\nCOPY kiln-loggen /kiln-loggen\n`);
  p.entry({ name: 'kiln-loggen', mode: 0o755, mtime: new Date(0) }, await readFile(join(dir, 'kiln-loggen')));
  p.finalize();
  const body = new PassThrough();
  (p as unknown as NodeJS.ReadableStream).pipe(body);
  const res = (await docker.buildImage(body, { version: '2', networkmode: 'none', t: IMAGE } as Docker.ImageBuildOptions)) as NodeJS.ReadableStream;
  let error: string | null = null;
  await readBuildEvents(res, (e) => {
    if (e.error) error = e.error;
  });
  if (error) throw new Error(`generator image build failed: ${error}`);
}

/** The floor: `steps` builds posted straight to the Engine API, each stream decoded as the agent does. */
async function direct(docker: ReturnType<typeof dockerClient>, steps: number, rate: number, count: number): Promise<Tally> {
  const tally = new Tally();
  const feed = lineFeeder((step, line, t) => tally.line(step, line, t));
  const u0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: steps }, async (_, s) => {
      const p = pack();
      p.entry({ name: 'Dockerfile', mtime: new Date(0) }, dockerfile(rate, count));
      p.finalize();
      const body = new PassThrough();
      (p as unknown as NodeJS.ReadableStream).pipe(body);
      const res = (await docker.buildImage(body, { version: '2', networkmode: 'none', nocache: true } as Docker.ImageBuildOptions)) as NodeJS.ReadableStream;
      const decoder = new BuildProgressDecoder();
      let error: string | null = null;
      await readBuildEvents(res, (e) => {
        if (e.error) error = e.error;
        const text = decoder.push(e);
        if (text) feed(`s${s}`, text);
      });
      feed(`s${s}`, decoder.end());
      if (error) throw new Error(`direct build failed: ${error}`);
    }),
  );
  const u = process.cpuUsage(u0);
  tally.cpuMs = (u.user + u.system) / 1000;
  return tally;
}

interface Kiln {
  url: string;
  apiToken: string;
  client: ApiClient;
  coordinator: ChildProcess;
  agent: ChildProcess;
  /** Where the kiln processes write their KILN_LOG_TRACE records (--trace). */
  traceDir: string | null;
}

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, USER_HZ = 100
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

async function submit(k: Kiln, steps: number, rate: number, count: number): Promise<string> {
  const nodes: Record<string, unknown> = {};
  for (let s = 0; s < steps; s++) nodes[`s${s}`] = { dockerfile_inline: dockerfile(rate, count), no_cache: true };
  const res = await fetch(`${k.url}/api/v1/builds`, {
    method: 'POST',
    headers: { authorization: `Bearer ${k.apiToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ nodes }),
  });
  if (res.status >= 300) throw new Error(`submit: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { id: string }).id;
}

async function viaKiln(k: Kiln, steps: number, rate: number, count: number): Promise<{ tally: Tally; coordCpu: number; agentCpu: number; clientCpu: number }> {
  const tally = new Tally();
  const feed = lineFeeder((step, line, t) => tally.line(step, line, t));
  const c0 = cpuMs(k.coordinator.pid!);
  const a0 = cpuMs(k.agent.pid!);
  const t0 = Date.now();
  const u0 = process.cpuUsage();
  const id = await submit(k, steps, rate, count);
  const state = await followBuildLogs(k.client, {
    buildId: id,
    follow: true,
    onEvent: (e) => {
      if (e.type === 'log') feed(e.node, e.text);
    },
  });
  if (state !== 'success') throw new Error(`kiln build ${id} ended ${state}`);
  const u = process.cpuUsage(u0);
  const cpu = { coordCpu: cpuMs(k.coordinator.pid!) - c0, agentCpu: cpuMs(k.agent.pid!) - a0, clientCpu: (u.user + u.system) / 1000 };
  if (k.traceDir !== null && count > 1) await traceReport(k.traceDir, `${steps} x ${rate}`, tally, t0, Date.now());
  return { tally, ...cpu };
}

const HOPS = ['agent-in', 'agent-out', 'coord-recv', 'coord-disk', 'coord-sse'] as const;

/**
 * Where the lines of one workload spent their time (--trace): the trace records of the kiln
 * processes (shared/log-trace.ts) written between t0 and t1, matched to the lines the client
 * received by their `seq ts` text.
 */
async function traceReport(dir: string, label: string, tally: Tally, t0: number, t1: number): Promise<void> {
  await new Promise((r) => setTimeout(r, 1200)); // the processes write their records every 500 ms
  const at = new Map<string, Map<string, number>>(HOPS.map((h) => [h, new Map()]));
  for (const file of await readdir(dir)) {
    for (const row of (await readFile(join(dir, file), 'utf8')).split('\n')) {
      if (row === '') continue;
      const r = JSON.parse(row) as { hop: string; t: number; text: string };
      const hop = at.get(r.hop);
      if (!hop || r.t < t0 || r.t > t1) continue;
      for (const line of r.text.split('\n')) {
        const m = LINE_RE.exec(line);
        if (m && !hop.has(`${m[1]} ${m[2]}`)) hop.set(`${m[1]} ${m[2]}`, r.t);
      }
    }
  }
  const since = new Map<string, number[]>();
  const share = new Map<string, number[]>();
  const add = (map: Map<string, number[]>, k: string, v: number) => (map.get(k) ?? map.set(k, []).get(k)!).push(v);
  /** For the slowest lines (over 30 ms): which hop took the most of their time, and how much. */
  const slow = new Map<string, number[]>();
  for (const [key, { gen, recv }] of tally.times) {
    let prev = gen;
    let prevHop = 'write';
    let worst = { hop: '', ms: -1 };
    for (const hop of [...HOPS, 'client']) {
      const t = hop === 'client' ? recv : at.get(hop)!.get(key);
      if (t === undefined) continue;
      add(since, hop, t - gen);
      add(share, `${prevHop} -> ${hop}`, t - prev);
      if (t - prev > worst.ms) worst = { hop: `${prevHop} -> ${hop}`, ms: t - prev };
      prev = t;
      prevHop = hop;
    }
    if (recv - gen > 30) add(slow, worst.hop, worst.ms);
  }
  const cells = (map: Map<string, number[]>) => [...map].map(([k, v]) => `${k} ${fmt(percentile(v, 50), 1)} / ${fmt(percentile(v, 99), 1)}`).join('; ');
  console.log(`#   trace ${label}: ms after the write, p50 / p99 (lines seen): ${cells(since)}`);
  console.log(`#   trace ${label}: each hop's share, p50 / p99: ${cells(share)}`);
  if (slow.size > 0) console.log(`#   trace ${label}: lines over 30 ms, by the hop that took most of their time (lines, p50 / max ms of that hop): ${[...slow].map(([k, v]) => `${k} ${v.length}, ${fmt(percentile(v, 50), 1)} / ${fmt(v.reduce((a, b) => Math.max(a, b), -Infinity), 1)}`).join('; ')}`);
}

/** A follower that reads 4 KiB every 100 ms; samples the coordinator's RSS meanwhile. */
async function slowConsumer(label: string, k: Kiln, steps: number, rate: number, seconds: number): Promise<void> {
  const count = rate * seconds;
  const baseline = rssMiB(k.coordinator.pid!);
  const id = await submit(k, steps, rate, count);
  let peak = baseline;
  let read = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(k.coordinator.pid!))), 100);
  const req = request(`${k.url}/api/v1/builds/${id}/logs?follow=true`, { headers: { authorization: `Bearer ${k.apiToken}` } });
  const done = new Promise<void>((resolveDone) => {
    req.on('response', (res) => {
      res.pause();
      const tick = setInterval(() => {
        const chunk = res.read(4096) as Buffer | null;
        if (chunk) read += chunk.length;
      }, 100);
      res.on('close', () => {
        clearInterval(tick);
        resolveDone();
      });
      req.on('close', () => {
        clearInterval(tick);
        resolveDone();
      });
    });
    req.on('error', () => resolveDone());
  });
  req.end();
  // Wait for the build to finish while the client lags behind, then hang up.
  for (;;) {
    const r = await fetch(`${k.url}/api/v1/builds/${id}`, { headers: { authorization: `Bearer ${k.apiToken}` } });
    const b = (await r.json()) as { state: string };
    if (['success', 'failed', 'cancelled'].includes(b.state)) break;
    await new Promise((r2) => setTimeout(r2, 200));
  }
  await new Promise((r) => setTimeout(r, 1000));
  clearInterval(sampler);
  const written = steps * count * lineBytes(rate);
  req.destroy();
  await done;
  console.log(
    `${label}, slow consumer (${steps} steps x ${rate} lines/s x ${seconds} s, ${fmt(written / 2 ** 20, 1)} MiB written, client read ${fmt(read / 2 ** 20, 2)} MiB at 40 KiB/s): ` +
      `coordinator RSS ${fmt(baseline, 0)} MiB before, peak ${fmt(peak, 0)} MiB (+${fmt(peak - baseline, 0)} MiB) -> ${peak - baseline < Math.max(64, written / 2 ** 20) ? 'bounded' : 'NOT bounded'}`,
  );
}

function spawnKiln(bin: string, argv: string[], traceDir: string | null): ChildProcess & { stderrText: () => string } {
  const profile = PROFILE_DIR ? ['--cpu-prof', '--cpu-prof-dir', resolve(PROFILE_DIR)] : [];
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', KILN_LOG_FORMAT: 'json' };
  if (traceDir !== null) env['KILN_LOG_TRACE'] = traceDir;
  const child = spawn(process.execPath, [...profile, bin, ...argv], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let text = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (text.length < 1_000_000) text += d.toString();
  });
  return Object.assign(child, { stderrText: () => text });
}

async function startKiln(dir: string, bin: string): Promise<Kiln> {
  const dataDir = join(dir, 'data');
  const traceDir = TRACE ? join(dir, 'trace') : null;
  if (traceDir !== null) await mkdir(traceDir, { recursive: true });
  const coordinator = spawnKiln(bin, ['coordinator', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--rate-limit-per-key', 'off', '--rate-limit-per-address', 'off'], traceDir);
  let url: string | null = null;
  for (let i = 0; i < 600 && !url; i++) {
    url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(coordinator.stderrText())?.[1] ?? null;
    if (!url) await new Promise((r) => setTimeout(r, 50));
  }
  if (!url) throw new Error(`the coordinator did not start: ${coordinator.stderrText()}`);
  const apiTokenFile = join(dataDir, 'tokens', 'api');
  const apiToken = (await readFile(apiTokenFile, 'utf8')).trim();
  const agent = spawnKiln(bin, ['agent', '--coordinator', url, '--token-file', join(dataDir, 'tokens', 'agent'), '--name', 'bench', '--work-dir', join(dir, 'work'), '--docker-host', DOCKER_HOST, '--max-jobs', String(Math.max(...STEPS))], traceDir);
  for (let i = 0; ; i++) {
    const r = await fetch(`${url}/api/v1/agents`, { headers: { authorization: `Bearer ${apiToken}` } });
    const body = (await r.json()) as { items?: { name: string; state: string }[] };
    if (body.items?.some((a) => a.name === 'bench' && a.state !== 'lost' && a.state !== 'offline')) break;
    if (i > 600 || agent.exitCode !== null) throw new Error(`the agent did not connect: ${agent.stderrText()}`);
    await new Promise((r2) => setTimeout(r2, 50));
  }
  return { url, apiToken, client: new ApiClient({ baseUrl: url, token: apiToken, tokenSource: 'bench' }), coordinator, agent, traceDir };
}

interface Row {
  label: string;
  tally: Tally;
  coordUs: number;
  agentUs: number;
  /** This process while it follows: the CLI's SSE follower and the line tally. */
  clientUs: number;
}

/** The slowest line (ms) per 250 ms of generator time, from the first line written. */
function timeline(t: Tally): string {
  const t0 = t.genMs.reduce((a, b) => Math.min(a, b), Infinity);
  const worst: number[] = [];
  t.genMs.forEach((g, i) => {
    const b = Math.floor((g - t0) / 250);
    worst[b] = Math.max(worst[b] ?? 0, t.latencies[i]!);
  });
  return Array.from(worst, (w) => fmt(w ?? 0, 0)).join(' ');
}

function signed(n: number): string {
  return `${n >= 0 ? '+' : ''}${fmt(n, 1)}`;
}

function printRow(steps: number, rate: number, count: number, d: Tally, r: Row): void {
  const t = r.tally;
  const dp99 = percentile(d.latencies, 99);
  const kp99 = percentile(t.latencies, 99);
  const clipped = t.clipped || d.clipped ? ' (BuildKit clipped the output)' : '';
  console.log(
    `| ${steps} x ${rate} | ${r.label} | ${lineBytes(rate)} | ${fmt(percentile(d.latencies, 50), 1)} / ${fmt(percentile(d.latencies, 90), 1)} / ${fmt(dp99, 1)} | ` +
      `${fmt(percentile(t.latencies, 50), 1)} / ${fmt(percentile(t.latencies, 90), 1)} / ${fmt(kp99, 1)} | ` +
      `${signed(kp99 - dp99)} ms | ${fmt(t.rate(), 0)} | ${t.lost(steps, count)}/${t.dup}/${t.reordered} of ${steps * count}${clipped} | ${fmt(r.coordUs, 1)} / ${fmt(r.agentUs, 1)} / ${fmt(r.clientUs, 1)} | ${fmt((d.cpuMs * 1000) / (steps * count), 1)} |`,
  );
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-logs-'));
  const docker = dockerClient(DOCKER_HOST);
  await buildGeneratorImage(docker, dir);
  const kilns: { label: string; k: Kiln }[] = [{ label: 'kiln', k: await startKiln(join(dir, 'a'), KILN_BIN) }];
  if (COMPARE_BIN) kilns.push({ label: 'compare', k: await startKiln(join(dir, 'b'), resolve(COMPARE_BIN)) });
  console.log(`# Live logs (C6): generators in real BuildKit RUN steps, ${SECONDS} s each; kiln = CLI follower over SSE, floor = dockerode build stream, same run, ${REPEAT} time(s) each`);
  if (COMPARE_BIN) console.log(`# compare = ${COMPARE_BIN}, run interleaved with this build's kiln`);
  console.log(`# ${machineLine()}; engine ${DOCKER_HOST}`);
  try {
    // warm-up: one short build each way
    await direct(docker, 1, 100, 20);
    for (const { k } of kilns) await viaKiln(k, 1, 100, 20);
    console.log('| steps x lines/s | client | line B | floor p50 / p90 / p99 ms | kiln p50 / p90 / p99 ms | p99 over floor | kiln lines/s | lines lost/dup/reordered | coord / agent / client CPU µs per line (less an empty build) | floor reader CPU µs per line |');
    console.log('|---|---|---|---|---|---|---|---|---|---|');
    const summary = new Map<string, { p50: number[]; p99: number[]; floor99: number[]; cpu: [number, number, number][] }>();
    for (const steps of STEPS) {
      // The CPU a build of this many steps costs without output, taken off the per-line figures.
      const idle = new Map<string, { coordCpu: number; agentCpu: number; clientCpu: number }>();
      for (const { label, k } of kilns) idle.set(label, await viaKiln(k, steps, 100, 1));
      for (const rate of RATES) {
        const count = Math.round(rate * SECONDS);
        for (let rep = 0; rep < REPEAT; rep++) {
          const d = await direct(docker, steps, rate, count);
          const order = rep % 2 === 0 ? kilns : [...kilns].reverse();
          const rows: Row[] = [];
          for (const { label, k } of order) {
            const r = await viaKiln(k, steps, rate, count);
            const base = idle.get(label)!;
            const perLine = (cpu: number, idleCpu: number) => (Math.max(0, cpu - idleCpu) * 1000) / (steps * count);
            rows.push({ label, tally: r.tally, coordUs: perLine(r.coordCpu, base.coordCpu), agentUs: perLine(r.agentCpu, base.agentCpu), clientUs: perLine(r.clientCpu, base.clientCpu) });
          }
          rows.sort((a, b) => a.label.localeCompare(b.label));
          for (const row of rows) {
            printRow(steps, rate, count, d, row);
            if (TIMELINE) console.log(`#   slowest line per 250 ms, floor: ${timeline(d)}\n#   slowest line per 250 ms, ${row.label}: ${timeline(row.tally)}`);
            const key = `${steps} x ${rate} | ${row.label}`;
            const sum = summary.get(key) ?? { p50: [], p99: [], floor99: [], cpu: [] };
            sum.cpu.push([row.coordUs, row.agentUs, row.clientUs]);
            sum.p50.push(percentile(row.tally.latencies, 50));
            sum.p99.push(percentile(row.tally.latencies, 99));
            sum.floor99.push(percentile(d.latencies, 99));
            summary.set(key, sum);
          }
        }
      }
    }
    if (REPEAT > 1) {
      console.log(`\n| steps x lines/s | client | median of ${REPEAT} runs: kiln p50 / p99 ms | floor p99 ms | p99 over floor | coord / agent / client CPU µs per line |`);
      console.log('|---|---|---|---|---|---|');
      for (const [key, v] of summary) {
        const cpu = [0, 1, 2].map((i) => fmt(median(v.cpu.map((c) => c[i]!)), 1)).join(' / ');
        console.log(`| ${key} | ${fmt(median(v.p50), 1)} / ${fmt(median(v.p99), 1)} | ${fmt(median(v.floor99), 1)} | ${signed(median(v.p99.map((x, i) => x - v.floor99[i]!)))} ms | ${cpu} |`);
      }
    }
    if (SLOW_SECONDS > 0) for (const { label, k } of kilns) await slowConsumer(label, k, Math.max(...STEPS), 1000, SLOW_SECONDS);
    console.log('# targets: p99 within +15 ms of the floor at <= 1,000 lines/s per step; p99 <= 250 ms at 10 steps x 10k lines/s; zero loss');
  } finally {
    for (const { k } of kilns) {
      k.agent.kill('SIGTERM');
      await new Promise((r) => k.agent.once('exit', r));
      k.coordinator.kill('SIGTERM');
      await new Promise((r) => k.coordinator.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
