/**
 * The coordinator's spans of a build, recorded from the engine's transitions: one trace
 * per build (its id derived from the build id), a root span `build <name>` from submit to
 * the end, a span `node <name>` per node from ready to its end, under it a `queue wait`
 * span per wait for an agent (ready -> assigned) and an `attempt <n>` span per attempt
 * (assigned -> finished). The agent's spans (input fetch, build, test, ...) are children
 * of the attempt span: its traceparent goes in the assign frame.
 *
 * Each span is recorded whole when it ends, with the start time the records hold and an
 * id derived from the build, node or attempt id (shared/tracing.ts), so nothing is kept
 * per span but the first-ready time of a node; a coordinator that restarts mid-build
 * records the rest of the build into the same trace, under the same parents (a span that
 * was open when it died is recorded when it ends, from the recorded start; a node's span
 * then starts at its latest ready time, and spans that had ended but were not exported yet
 * are lost).
 *
 * The engine holds a `BuildTracing` or null: with tracing off, each hook is one null check.
 */
import { spanIdOf, traceIdOf, traceparent, type SpanAttributes, type Tracer } from '../../shared/index.js';
import type { AttemptRecord, BuildRecord, NodeRecord } from '../state/records.js';

/** Why an attempt did not succeed, for the `kiln.failure_kind` attribute (undefined: it did). */
export function failureKind(a: Pick<AttemptRecord, 'state' | 'infra' | 'failed_step'>): string | undefined {
  switch (a.state) {
    case 'success':
    case 'reused':
      return undefined;
    case 'failed':
      if (a.infra) return 'infrastructure';
      return a.failed_step === 'test' || a.failed_step === 'push' || a.failed_step === 'index' ? a.failed_step : 'build';
    case 'cancelled':
      return a.infra ? 'infrastructure' : 'cancelled';
    case 'lost':
      return 'infrastructure';
    default:
      return a.state;
  }
}

/** Whether an attempt's result came from a cache: an earlier result reused, or every build step cached. */
function cacheHit(a: AttemptRecord): boolean {
  return a.state === 'reused' || a.reused_from !== null || (a.cache !== undefined && a.cache.miss === 0 && a.cache.hit > 0);
}

export class BuildTracing {
  /** `<build>/<node>` -> when the node first became ready (its span's start). */
  private readonly readyAt = new Map<string, number>();

  constructor(private readonly tracer: Tracer) {}

  /** The trace id of a build (error reports name it). */
  traceId(buildId: string): string {
    return traceIdOf(buildId);
  }

  /** The traceparent of an attempt's span, for the assign frame. */
  attemptParent(build: BuildRecord, attemptId: string): string {
    return traceparent(traceIdOf(build.id), spanIdOf(attemptId));
  }

  /** A node moved `from` -> `to` (engine-transitions.ts setNode; called before `node.ready_at` changes). */
  nodeChanged(build: BuildRecord, node: NodeRecord, from: string, to: string, now: number, terminal: boolean): void {
    const key = `${build.id}/${node.name}`;
    if (to === 'ready' && !this.readyAt.has(key)) this.readyAt.set(key, now);
    if (from === 'ready' && node.ready_at !== null) {
      this.record('queue wait', build, this.nodeSpanId(build, node), node.ready_at, now, { 'kiln.node': node.name, 'kiln.platform': node.platform, 'kiln.queue.outcome': to });
    }
    if (!terminal) return;
    const start = this.readyAt.get(key) ?? node.ready_at ?? now;
    this.readyAt.delete(key);
    const last = node.attempts[node.attempts.length - 1];
    const failed = to === 'failed';
    this.record(
      `node ${node.name}`,
      build,
      spanIdOf(build.id),
      start,
      now,
      {
        'kiln.node': node.name,
        'kiln.platform': node.platform,
        'kiln.node.state': to,
        'kiln.attempts': node.attempts.length - (node.budget_from ?? 0),
        'kiln.agent': last?.agent,
        'kiln.cache_hit': last ? cacheHit(last) : undefined,
        'kiln.failure_kind': failed ? (last ? failureKind(last) : 'input') : undefined,
      },
      this.nodeSpanId(build, node),
      failed ? (node.reason ?? last?.error ?? 'failed') : null,
    );
  }

  /** An attempt ended (engine-transitions.ts finishAttempt, after its record changed). */
  attemptEnded(build: BuildRecord, node: NodeRecord, a: AttemptRecord, now: number): void {
    const kind = failureKind(a);
    this.record(
      `attempt ${a.number}`,
      build,
      this.nodeSpanId(build, node),
      a.assigned_at,
      now,
      {
        'kiln.node': node.name,
        'kiln.attempt': a.number,
        'kiln.attempt.id': a.id,
        'kiln.agent': a.agent,
        'kiln.platform': node.platform,
        'kiln.emulated': a.emulated ?? false,
        'kiln.attempt.state': a.state,
        'kiln.cache_hit': cacheHit(a),
        'kiln.cache.steps_cached': a.cache?.hit,
        'kiln.cache.steps_executed': a.cache?.miss,
        'kiln.exit_code': a.exit_code ?? undefined,
        'kiln.failure_kind': kind,
      },
      spanIdOf(a.id),
      kind !== undefined && kind !== 'cancelled' ? (a.error ?? a.reason ?? a.state) : null,
    );
  }

  /** A build reached a terminal state (engine-transitions.ts refreshBuildState). */
  buildEnded(build: BuildRecord, now: number): void {
    const failed = build.nodes.filter((n) => n.state === 'failed').length;
    const span = this.tracer.startSpan({
      name: `build ${build.name}`,
      parent: null,
      traceId: traceIdOf(build.id),
      spanId: spanIdOf(build.id),
      startTime: build.created_at,
      attributes: { 'kiln.build.id': build.id, 'kiln.build.name': build.name, 'kiln.build.state': build.state, 'kiln.nodes': build.nodes.length, 'kiln.nodes.failed': failed },
    });
    if (failed > 0) span.fail(`${failed} node${failed === 1 ? '' : 's'} failed`);
    span.end(Math.max(build.created_at, now));
  }

  private nodeSpanId(build: BuildRecord, node: NodeRecord): string {
    // a node run again (retry) is a new span
    return spanIdOf(`${build.id}/${node.name}#${node.budget_from ?? 0}`);
  }

  private record(name: string, build: BuildRecord, parentSpanId: string, start: number, end: number, attributes: SpanAttributes, spanId?: string, error: string | null = null): void {
    const span = this.tracer.startSpan({
      name,
      parent: traceparent(traceIdOf(build.id), parentSpanId),
      startTime: start,
      attributes: { 'kiln.build.id': build.id, ...attributes },
      ...(spanId !== undefined ? { spanId } : {}),
    });
    if (error !== null) span.fail(error);
    span.end(Math.max(start, end));
  }
}
