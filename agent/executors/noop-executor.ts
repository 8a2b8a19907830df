/**
 * The noop executor, for dispatch benchmarks and fault tests (`kiln agent --executor noop`):
 * every node succeeds without touching Docker, so what is measured (or broken) is the
 * coordinator, the protocol and the persistence. It reports `started` but writes no log.
 *
 * Two opt-in settings, off by default, read from the agent's environment (noopOptionsFromEnv):
 *   KILN_NOOP_DELAY_MS=N | MIN-MAX   each node takes N ms (or a uniformly random time in
 *       MIN..MAX ms) before it succeeds, so a fault can land mid-build; a cancel meanwhile
 *       ends it `cancelled`. Default 0: it succeeds at once.
 *   KILN_NOOP_RECORD=/path/file.jsonl   appends one JSON line per attempt when its run ends,
 *       before the agent reports the result: {build_id, node, attempt_id, attempt, agent,
 *       status: 'success' | 'cancelled', started_at, finished_at} (epoch ms). `success` means
 *       the node ran to completion here. One O_APPEND write per line, so lines of concurrent
 *       attempts (and of several agents sharing the file) never interleave. Fault tests use it
 *       to see what the agents really ran, next to what the coordinator recorded.
 *   KILN_NOOP_LOG=N | N/RATE   writes N log lines (at most 1,000,000), at once or at RATE lines/s,
 *       before the node succeeds: `noop <node> line <k>/<N> t=<epoch ms> ...` with ANSI colours
 *       (a green `ok`, a cyan node name), and line N/2 (for N >= 10) reading
 *       `ERROR: noop marker line <k>` in red: test data for the dashboard's log view and its
 *       benchmark (the line's write time is in it), not a build's output.
 */
import { appendFile } from 'node:fs/promises';
import { ociArch } from '../../shared/core.js';
import type { AssignPayload } from '../../shared/core.js';
import type { CancelReason, Executor, ExecutorInfo, RunIO, RunResult } from './executor.js';

export interface NoopOptions {
  /** Time each node takes, ms: a fixed value or a [min, max] range drawn from per node. */
  delayMs?: number | [number, number];
  /** JSON Lines file to append one record per finished run to. */
  recordFile?: string | null;
  /** Source of randomness for delay ranges. @default Math.random */
  random?: () => number;
  /** Log lines written before the node succeeds, and how fast (lines/s; null: at once). */
  log?: { lines: number; perSecond: number | null } | null;
}

/** The most lines KILN_NOOP_LOG may ask for. */
export const MAX_NOOP_LOG_LINES = 1_000_000;

/** One line of the record file (KILN_NOOP_RECORD). */
export interface NoopRunRecord {
  build_id: string;
  node: string;
  attempt_id: string;
  attempt: number;
  agent: string;
  status: 'success' | 'cancelled';
  started_at: number;
  finished_at: number;
}

/** Reads KILN_NOOP_DELAY_MS and KILN_NOOP_RECORD; throws on a malformed delay. */
export function noopOptionsFromEnv(env: Record<string, string | undefined>): NoopOptions {
  const out: NoopOptions = {};
  const delay = env.KILN_NOOP_DELAY_MS?.trim();
  if (delay) {
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(delay);
    if (!m || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) throw new Error(`KILN_NOOP_DELAY_MS must be N or MIN-MAX (milliseconds), got '${delay}'`);
    out.delayMs = m[2] === undefined ? Number(m[1]) : [Number(m[1]), Number(m[2])];
  }
  const record = env.KILN_NOOP_RECORD?.trim();
  if (record) out.recordFile = record;
  const log = env.KILN_NOOP_LOG?.trim();
  if (log) {
    const m = /^(\d{1,7})(?:\/(\d{1,7}))?$/.exec(log);
    const lines = m ? Number(m[1]) : NaN;
    const rate = m?.[2] === undefined ? null : Number(m[2]);
    if (!m || lines > MAX_NOOP_LOG_LINES || rate === 0) throw new Error(`KILN_NOOP_LOG must be N or N/RATE (N lines, at most ${MAX_NOOP_LOG_LINES}, at RATE > 0 lines/s), got '${log}'`);
    out.log = { lines, perSecond: rate };
  }
  return out;
}

/** Line `k` (1-based) of `n` of the noop log of `node`, written at `at` (epoch ms). */
export function noopLogLine(node: string, k: number, n: number, at: number): string {
  if (n >= 10 && k === Math.floor(n / 2)) return `\x1b[31mERROR: noop marker line ${k}/${n} t=${at}\x1b[0m\n`;
  return `noop \x1b[36m${node}\x1b[0m line ${k}/${n} t=${at} \x1b[32mok\x1b[0m\n`;
}

/**
 * Writes the noop log: all at once in chunks of about 64 KiB, or `perSecond` lines a second
 * in 10 ms slices. false when the run was cancelled meanwhile.
 */
async function writeNoopLog(node: string, spec: { lines: number; perSecond: number | null }, io: RunIO): Promise<boolean> {
  const t0 = Date.now();
  let k = 1;
  while (k <= spec.lines) {
    if (io.signal.aborted) return false;
    let upTo = spec.lines;
    if (spec.perSecond !== null) {
      upTo = Math.min(spec.lines, Math.floor(((Date.now() - t0) / 1000) * spec.perSecond));
      if (upTo < k) {
        if (!(await wait(10, io.signal))) return false;
        continue;
      }
    }
    let chunk = '';
    const at = Date.now();
    for (; k <= upTo && chunk.length < 65_536; k++) chunk += noopLogLine(node, k, spec.lines, at);
    io.log(chunk);
    // Let the agent send what it has (and see a cancel) between chunks.
    await new Promise((r) => setImmediate(r));
  }
  return true;
}

export class NoopExecutor implements Executor {
  readonly kind = 'noop' as const;

  constructor(
    private readonly arch: string,
    private readonly opts: NoopOptions = {},
  ) {}

  async info(): Promise<ExecutorInfo> {
    return { nativePlatform: `linux/${ociArch(this.arch)}`, docker: null };
  }

  async run(job: AssignPayload, io: RunIO): Promise<RunResult> {
    const startedAt = Date.now();
    io.started();
    const ms = this.delay();
    const logged = this.opts.log ? await writeNoopLog(job.node, this.opts.log, io) : true;
    const completed = logged && (ms > 0 ? await wait(ms, io.signal) : !io.signal.aborted);
    const status = completed ? 'success' : 'cancelled';
    if (this.opts.recordFile) {
      const rec: NoopRunRecord = {
        build_id: job.build_id,
        node: job.node,
        attempt_id: job.attempt_id,
        attempt: job.attempt,
        agent: io.agentName,
        status,
        started_at: startedAt,
        finished_at: Date.now(),
      };
      await appendFile(this.opts.recordFile, `${JSON.stringify(rec)}\n`, { flag: 'a' });
    }
    if (!completed) {
      const reason = io.signal.reason as CancelReason | undefined;
      return { status: 'cancelled', exitCode: null, error: reason?.message ?? 'cancelled', failedStep: null, infra: false, imageId: null, fetchMs: 0, buildMs: Date.now() - startedAt };
    }
    return { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId: null, fetchMs: 0, buildMs: Date.now() - startedAt };
  }

  private delay(): number {
    const d = this.opts.delayMs ?? 0;
    if (typeof d === 'number') return d;
    return Math.round(d[0] + (this.opts.random ?? Math.random)() * (d[1] - d[0]));
  }
}

/** true after `ms`, false as soon as `signal` aborts. */
function wait(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (v: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(v);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
