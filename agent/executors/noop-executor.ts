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
}

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
  return out;
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
    const completed = ms > 0 ? await wait(ms, io.signal) : !io.signal.aborted;
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
    return { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId: null, fetchMs: 0, buildMs: ms };
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
