/**
 * Frames from agents: heartbeat, accept, reject, resolved, started, log, finished.
 *
 * Fencing: only the node's current attempt on the agent (and agent process) it was
 * given to can change the node (`owned`); a frame naming any other attempt is refused
 * and the agent is told to cancel it. A `finished` result is acked only once it is on
 * disk, including resends after a lost ack (`ackWhenDurable`), and is remembered so an
 * agent that reconnects still holding it is told to send it again (`recorded`).
 * Every finished attempt gets a provenance record in the CAS (provenance.ts), and a
 * successful one with a key goes into the reuse index.
 */
import { attemptTransition, type AttemptState, type Digest, type Frame, type Payload } from '../../shared/index.js';
import type { AgentEntry } from '../placement/agent-registry.js';
import type { NodeRecord } from '../state/records.js';
import { MAX_REJECTIONS, logRef, remember, type ActiveAttempt, type EngineState } from './engine-state.js';
import { preferNotOn } from './engine-retry.js';
import { onResolved, reuseRecordOf } from './engine-reuse.js';
import { failNode, finishAttempt, maybeArchive, refreshBuildState, releaseDependents, requeueOrFail, setNode } from './engine-transitions.js';
import { idempotencyKey } from './idempotency.js';
import { provenanceRecord } from './provenance.js';
import { poolOf } from '../placement/pools.js';

/** Any frame from the agent proves it alive. */
export function seen(s: EngineState, entry: AgentEntry): void {
  s.agents.markSeen(entry, s.now());
}

/**
 * Handles one validated frame from a connected agent. Returns the ack to send (after
 * any commit), or null.
 */
export async function onFrame(s: EngineState, entry: AgentEntry, frame: Frame): Promise<Payload<'ack'> | null> {
  seen(s, entry);
  switch (frame.type) {
    case 'heartbeat': {
      const wasAccepting = entry.health.accepting;
      s.agents.setHeartbeat(entry, frame.payload, s.now());
      if (entry.health.accepting !== wasAccepting) {
        s.log.info({ agent: entry.name, accepting: entry.health.accepting, problem: entry.health.problem }, entry.health.accepting ? 'agent takes work again' : 'agent takes no work');
        if (entry.health.accepting) s.scheduleSoon();
      }
      return { ref: frame.id };
    }
    case 'accept': {
      const act = s.seams.owned(entry, frame.payload.attempt_id);
      if (act) {
        const now = s.now();
        s.records.attempt(act, (a) => {
          a.accepted_at = now;
        });
      }
      return null;
    }
    case 'reject':
      await onReject(s, entry, frame.payload.attempt_id, frame.payload.reason);
      return null;
    case 'resolved': {
      const act = s.seams.owned(entry, frame.payload.attempt_id);
      if (act && act.attempt.state === 'assigned') await onResolved(s, act, frame.payload);
      return null;
    }
    case 'started':
      await onStarted(s, entry, frame.payload.attempt_id);
      return null;
    case 'log': {
      const act = s.seams.owned(entry, frame.payload.attempt_id);
      if (!act) return null;
      const written = await s.logs.append(logRef(act), frame.payload.offset, frame.payload.data);
      s.records.logBytes(act.attempt, written);
      return { ref: frame.id, attempt_id: act.attempt.id, log_offset: written };
    }
    case 'finished':
      return onFinished(s, entry, frame.id, frame.payload);
    case 'ack':
    case 'error':
      if (frame.type === 'error') s.log.warn({ agent: entry.name, ...frame.payload }, 'agent reported an error');
      return null;
    default:
      return null;
  }
}

/** The agent's current attempt `attemptId`, or null (and the agent is told to cancel it). */
export function owned(s: EngineState, entry: AgentEntry, attemptId: string): ActiveAttempt | null {
  const act = s.active.get(attemptId);
  if (act && act.attempt.agent === entry.name && act.attempt.session === entry.session) return act;
  // Fencing: an attempt that is not current on this agent must not run.
  entry.channel?.send('cancel', { attempt_id: attemptId, reason: 'this attempt is no longer current on this agent' });
  return null;
}

async function onReject(s: EngineState, entry: AgentEntry, attemptId: string, reason: string): Promise<void> {
  const act = s.seams.owned(entry, attemptId);
  if (!act || (act.attempt.state !== 'assigned' && act.attempt.state !== 'cancelling')) return; // a started attempt cannot be rejected
  const { build, node, attempt } = act;
  const now = s.now();
  if (attempt.state === 'cancelling') {
    // Cancelled while the assignment was on its way: the reject is the agent's confirmation.
    finishAttempt(s, act, 'cancelled', now, { reason: attempt.reason });
  } else {
    finishAttempt(s, act, 'rejected', now, { reason: `rejected by agent ${entry.name}: ${reason}` });
    if (node.state === 'assigned') {
      // Offered elsewhere first; the same agent only when nobody else can take it (it may
      // have rejected for a passing reason), and after MAX_REJECTIONS the node fails.
      preferNotOn(s, build, node, entry.name);
      const rejections = node.attempts.slice(node.budget_from ?? 0).filter((a) => a.state === 'rejected').length;
      requeueOrFail(s, build, node, now, rejections < MAX_REJECTIONS, `rejected ${rejections} times; last: ${attempt.reason}`);
    }
  }
  refreshBuildState(s, build);
  await s.store.commit();
  maybeArchive(s, build);
  s.scheduleSoon();
}

async function onStarted(s: EngineState, entry: AgentEntry, attemptId: string): Promise<void> {
  const act = s.seams.owned(entry, attemptId);
  if (!act || act.attempt.state !== 'assigned') return;
  // The coordinator's clock, not the frame's `at`: deadlines must not depend on the agent's clock.
  const now = s.now();
  const next = attemptTransition(act.attempt.state, 'running');
  s.records.attempt(act, (a) => {
    a.state = next;
    a.started_at = now;
  });
  if (act.node.state === 'assigned') {
    setNode(s, act.build, act.node, 'running', s.now(), null, (n) => {
      n.started_at = act.attempt.started_at;
    });
  }
  await s.store.commit();
}

async function onFinished(s: EngineState, entry: AgentEntry, ref: number, p: Payload<'finished'>): Promise<Payload<'ack'>> {
  const ack = { ref, attempt_id: p.attempt_id };
  const act = s.active.get(p.attempt_id);
  if (!act || act.attempt.agent !== entry.name || act.attempt.session !== entry.session) {
    // Already recorded (a resend after a lost ack) or fenced: ack so the agent stops
    // resending, but only once what was recorded is on disk (the first copy's commit may
    // still be in flight: an agent that drops its result on this ack must not lose it).
    return ackWhenDurable(s, ack);
  }
  // Every log chunk sent before `finished` is written before the node turns terminal,
  // so a follower that sees the node done has all of its log.
  await s.logs.close(logRef(act));
  if (s.active.get(p.attempt_id) !== act) return ackWhenDurable(s, ack); // changed while the log was flushed (e.g. recorded from a resend)
  const { build, node, attempt } = act;
  // Known from now on (in memory): an agent that reconnects holding it is told to send it
  // again, and that resend is acked only once this result is on disk (ackWhenDurable).
  remember(s, attempt);
  const wasCancelling = attempt.state === 'cancelling';
  // An agent that cancels on its own (shut down) gives the node back: an infrastructure failure.
  const agentCancelled = !wasCancelling && p.status === 'cancelled';
  let status: AttemptState = wasCancelling || agentCancelled ? 'cancelled' : p.status;
  let error = p.error;
  if (status === 'success') {
    const problem = outputsProblem(s, node, p.outputs);
    if (problem) {
      status = 'failed';
      error = problem;
    }
  }
  s.records.attempt(act, (a) => {
    a.exit_code = p.exit_code;
    a.error = error;
    a.failed_step = p.failed_step;
    a.infra = p.infra || agentCancelled;
    a.test_exit_code = p.test_exit_code ?? null;
    a.image_id = p.image_id;
    a.fetch_ms = p.timings.fetch_ms;
    a.build_ms = p.timings.build_ms;
    a.started_at ??= p.timings.started_at;
    a.log_bytes = Math.max(a.log_bytes, p.log_bytes);
    a.outputs = status === 'success' ? p.outputs : [];
    if (p.images !== undefined) a.images = status === 'success' ? p.images : [];
    if (a.base_images === null && p.base_images.length > 0) a.base_images = p.base_images;
    a.dockerfile_digest ??= p.dockerfile_digest;
    if (a.key === null && a.spec_digest !== null && a.base_images !== null) a.key = idempotencyKey(a.spec_digest, a.base_images);
    if (p.cache) a.cache = p.cache;
  });
  // Layer cache figures per pool (GET /metrics).
  if (p.cache) s.cacheCounters.record(poolOf(node), p.cache);
  // An executor that builds nothing (benchmarks) leaves no provenance.
  if (!wasCancelling && entry.hello?.executor !== 'noop') {
    await recordProvenance(s, act, status, s.now());
    if (s.active.get(p.attempt_id) !== act) return ackWhenDurable(s, ack);
    if (status === 'success' && attempt.key !== null) {
      await s.reuse.put(reuseRecordOf(build, node, attempt)).catch((err: unknown) => s.log.error({ err, build: build.id, attempt: attempt.id }, 'writing the reuse record failed'));
      if (s.active.get(p.attempt_id) !== act) return ackWhenDurable(s, ack);
    }
  }
  const now = s.now();
  const infraFailure = !wasCancelling && (agentCancelled || (status === 'failed' && p.infra));
  // The breaker hears the verdict while the attempt still holds its slot (so it knows a trial's).
  // An agent shutting down is not a broken host: its cancels do not feed the breaker.
  if (infraFailure && !agentCancelled) s.agents.recordInfraFailure(entry.name, now);
  else if (!wasCancelling) s.agents.recordHealthy(entry.name, now, attempt.id);
  finishAttempt(s, act, status, now, wasCancelling ? { reason: attempt.reason } : agentCancelled ? { reason: `agent ${entry.name} cancelled the build on its own (${p.error ?? 'shutting down'})` } : {});
  if (!wasCancelling && (node.state === 'assigned' || node.state === 'running')) {
    if (node.started_at === null) {
      s.records.node(build, node, (n) => {
        n.started_at = attempt.started_at ?? now;
      });
    }
    if (status === 'success') {
      setNode(s, build, node, 'success', now);
      releaseDependents(s, build, node, now);
    } else if (infraFailure) {
      s.seams.retryOrExhaust(build, node, attempt, now, attempt.reason ?? `infrastructure failure on agent ${entry.name}: ${error ?? 'no detail'}`);
    } else {
      failNode(s, build, node, now, null);
    }
  }
  refreshBuildState(s, build);
  // The freed slot and released dependents may be placed before this result is durable
  // (their assignments leave only after a later commit); the ack to the agent waits for it.
  s.scheduleSoon();
  await s.store.commit();
  maybeArchive(s, build);
  return ack;
}

/** An ack for a result handled elsewhere: sent once everything recorded so far is on disk. */
async function ackWhenDurable(s: EngineState, ack: Payload<'ack'>): Promise<Payload<'ack'>> {
  await s.store.commit();
  return ack;
}

/** Why a successful attempt's outputs are not acceptable (undeclared, missing, not in the CAS), or null. */
function outputsProblem(s: EngineState, node: NodeRecord, outputs: Payload<'finished'>['outputs']): string | null {
  const got = new Map(outputs.map((o) => [o.name, o]));
  for (const o of node.outputs) {
    const a = got.get(o.name);
    if (!a) return `the agent reported no artifact for output '${o.name}' (${o.path})`;
    if (!s.cas.has(a.digest as Digest)) return `output '${o.name}' (${a.digest}) was not uploaded to the CAS`;
  }
  for (const name of got.keys()) if (!node.outputs.some((o) => o.name === name)) return `the agent reported an undeclared output '${name}'`;
  return null;
}

async function recordProvenance(s: EngineState, act: ActiveAttempt, status: AttemptState, now: number): Promise<void> {
  const { build, node, attempt } = act;
  try {
    const rec = provenanceRecord(build, node, { ...attempt, state: status, finished_at: now }, s.agents.get(attempt.agent)?.hello ?? null);
    await s.cas.putBuffer(rec.digest, rec.bytes);
    s.records.attempt(act, (a) => {
      a.provenance = rec.digest;
    });
  } catch (err) {
    s.log.error({ err, build: build.id, attempt: attempt.id }, 'storing the provenance record failed');
  }
}
