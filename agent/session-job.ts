/**
 * One job of the agent session (agent-session.ts): what the session keeps per attempt,
 * and the run of an assignment on the executor, from `accept` to the `finished` report
 * (kept until the coordinator acks it). `resolved` waits for the coordinator's `proceed`
 * when the assignment asks for it.
 */
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from 'pino';
import { coerceError, formatDuration, PhaseSpans, type AssignPayload, type FinishedPayload, type Payload, type Timer, type Timers, type SpanAttributes, type ToCoordinatorType, type Tracer } from '../shared/core.js';
import type { CancelReason, Executor, RunResult } from './executors/executor.js';
import type { LogBatcher, LogChunk } from './log-batcher.js';
import type { LogRedactor } from './log-redactor.js';

export interface Job {
  assign: AssignPayload;
  abort: AbortController;
  /** The `resolved` report sent while waiting for `proceed` (resent after a reconnect). */
  resolved: Payload<'resolved'> | null;
  proceed: (() => void) | null;
  batcher: LogBatcher;
  unacked: LogChunk[];
  finished: FinishedPayload | null;
  running: boolean;
  timer: Timer | null;
}

/** What a job needs of its session. */
export interface JobHost {
  readonly name: string;
  readonly jobs: ReadonlyMap<string, Job>;
  send<T extends ToCoordinatorType>(type: T, payload: Payload<T>): boolean;
  readonly executor: Pick<Executor, 'run'>;
  readonly now: () => number;
  readonly timers: Timers;
  readonly logger: Logger;
  /** What the agent learns about its host from a job's end (health.ts). */
  readonly health?: { diskFull(message: string, needBytes: number | null): void; engineFailed(error: string): void; check(): Promise<unknown> } | undefined;
  /** Spans of the job's phases under the attempt span the assignment names (null: tracing off). */
  readonly tracer: Tracer | null;
}

/** The job's phase spans, when tracing is on and the coordinator sent a traceparent. */
function phaseSpans(session: JobHost, a: AssignPayload, emulated: boolean): PhaseSpans | null {
  if (!session.tracer || a.traceparent === undefined) return null;
  return new PhaseSpans(session.tracer, a.traceparent, {
    'kiln.build.id': a.build_id,
    'kiln.node': a.node,
    'kiln.attempt': a.attempt,
    'kiln.attempt.id': a.attempt_id,
    'kiln.agent': session.name,
    'kiln.platform': a.platform,
    'kiln.emulated': emulated,
  });
}

/** How long past its limit a test may take before the agent gives up on the engine killing it. */
const TEST_KILL_GRACE_MS = 30_000;

export async function runJob(session: JobHost, job: Job, emulated: boolean): Promise<void> {
  const { executor, now, timers, health, logger } = session;
  const a = job.assign;
  const acceptedAt = now();
  let startedAt: number | null = null;
  let result: RunResult;
  // Build secrets: their values never reach the log or the result (log-redactor.ts,
  // loaded only by a job with secrets: an idle agent does not carry it).
  let redactor: LogRedactor | null = null;
  const utf8 = new StringDecoder('utf8');
  const phases = session.tracer ? phaseSpans(session, a, emulated) : null;
  try {
    if (a.secret_values && a.secret_values.length > 0) redactor = new (await import('./log-redactor.js')).LogRedactor(a.secret_values);
    result = await executor.run(a, {
      log: (text) => job.batcher.write(redactor ? redactor.push(typeof text === 'string' ? text : utf8.write(Buffer.from(text))) : text),
      started: () => {
        startedAt = now();
        session.send('started', { attempt_id: a.attempt_id, at: startedAt });
      },
      resolved: (info) => waitForProceed(session, job, info),
      testStarting: () => {
        // The build's limit no longer applies; the executor enforces the test's. This
        // timer is only the guard against an engine that does not stop the container.
        job.timer?.clear();
        const limit = (a.test?.timeout_ms ?? 0) + TEST_KILL_GRACE_MS;
        job.timer = timers.after(limit, () => job.abort.abort({ kind: 'timeout', message: `the test did not end within ${formatDuration(limit)}` } satisfies CancelReason), { unref: true });
      },
      signal: job.abort.signal,
      agentName: session.name,
      emulated,
      ...(phases ? { phase: (name: string | null, attributes?: SpanAttributes) => phases.phase(name, attributes) } : {}),
    });
  } catch (err) {
    result = { status: 'failed', exitCode: null, error: `agent error: ${coerceError(err).message}`, failedStep: null, infra: true, imageId: null, fetchMs: 0, buildMs: 0 };
  }
  job.proceed = null;
  job.timer?.clear();
  job.running = false;
  if (redactor) {
    // Everything that leaves the agent from here on (log, result, trace, health text) is redacted.
    const r = redactor;
    job.batcher.write(r.push(utf8.end()) + r.end());
    result = {
      ...result,
      error: result.error === null ? null : r.redact(result.error),
      failedStep: result.failedStep === null ? null : r.redact(result.failedStep),
      ...(result.trouble ? { trouble: { ...result.trouble, error: r.redact(result.trouble.error) } } : {}),
    };
  }
  phases?.end(result.status === 'success' ? undefined : { message: result.error ?? result.status, attributes: { 'kiln.failure_kind': failureKindOf(result), 'kiln.exit_code': result.exitCode ?? undefined } });
  if (a.secret_values) {
    // The values are not needed any more: drop them (and their bytes) from the kept assignment.
    for (const v of a.secret_values) v.value.fill(0);
    delete a.secret_values;
  }
  job.batcher.flush();
  if (result.trouble?.kind === 'disk_full') health?.diskFull(result.trouble.error, result.trouble.needBytes);
  else if (result.trouble?.kind === 'engine_unreachable') health?.engineFailed(result.trouble.error);
  else void health?.check();
  if (session.jobs.get(a.attempt_id) !== job) return; // dropped by the coordinator (or cut off) meanwhile
  job.finished = {
    attempt_id: a.attempt_id,
    status: result.status,
    exit_code: result.exitCode,
    error: result.error ? result.error.slice(0, 16_000) : null,
    failed_step: result.failedStep ? result.failedStep.slice(0, 4000) : null,
    infra: result.infra,
    ...(result.testExitCode !== undefined ? { test_exit_code: result.testExitCode } : {}),
    image_id: result.imageId,
    timings: { accepted_at: acceptedAt, started_at: startedAt, finished_at: now(), fetch_ms: result.fetchMs, build_ms: result.buildMs },
    log_bytes: job.batcher.offset,
    outputs: result.status === 'success' ? (result.outputs ?? []) : [],
    base_images: result.baseImages ?? [],
    dockerfile_digest: result.dockerfileDigest ?? null,
    ...(result.images !== undefined ? { images: result.status === 'success' ? result.images : [] } : {}),
    ...(result.cache ? { cache: result.cache } : {}),
  };
  logger.info({ attempt: a.attempt_id, build: a.build_id, node: a.node, status: result.status, exit_code: result.exitCode, ...(result.status === 'success' ? {} : { error: result.error?.slice(0, 500) ?? null, infra: result.infra }) }, 'build finished');
  session.send('finished', job.finished);
}

/** What kind of failure a result is (the `kiln.failure_kind` attribute, as the coordinator's spans name it). */
function failureKindOf(r: RunResult): string {
  if (r.status === 'cancelled') return 'cancelled';
  if (r.infra) return 'infrastructure';
  return r.failedStep === 'test' || r.failedStep === 'push' || r.failedStep === 'index' ? r.failedStep : 'build';
}

/** Sends `resolved` and waits for `proceed` (or the abort signal) when the assignment asks for it. */
function waitForProceed(session: JobHost, job: Job, info: { baseImages: Payload<'resolved'>['base_images']; dockerfileDigest: string | null }): Promise<void> {
  if (!job.assign.resolve) return Promise.resolve();
  const signal = job.abort.signal;
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(new Error('aborted'));
    const onAbort = () => {
      job.proceed = null;
      reject(new Error('aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    job.proceed = () => {
      job.proceed = null;
      job.resolved = null;
      signal.removeEventListener('abort', onAbort);
      resolve();
    };
    job.resolved = { attempt_id: job.assign.attempt_id, base_images: info.baseImages, dockerfile_digest: info.dockerfileDigest };
    session.send('resolved', job.resolved);
  });
}
