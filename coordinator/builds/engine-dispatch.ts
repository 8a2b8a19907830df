/**
 * Dispatch: placement runs "soon" (one pass per turn) and places ready nodes on agents
 * (scheduler.ts); each placement is a new attempt, recorded in memory at once.
 *
 * Durable-dispatch ordering: an `assign` goes out only once its attempt is in the
 * journal. Placements since the last pass wait in `unsent` (their ids in
 * `unsentAttempts`) until the pass's commit resolves, then go to agents still connected
 * with the same session; an agent between hello and welcome gets them after its welcome
 * (`afterWelcome`). `lastDispatch` is that commit and its sends (`settled()`).
 *
 * This is the hot path of the dispatch benchmark (≥ 5,000 nodes/s with persistence):
 * no scans per dispatch, and the assign payload and the spec digest come from one
 * `nodeExecution` object (node-execution.ts).
 */
import { coerceError, newId, type Payload } from '../../shared/index.js';
import type { AgentChannel, AgentEntry } from '../placement/agent-registry.js';
import { assignedAttempt, type BuildRecord, type NodeRecord } from '../state/records.js';
import { graphOf, logRef, track, type EngineState } from './engine-state.js';
import { reuseAllowed } from './engine-reuse.js';
import { inputDigests, refreshBuildState, setNode } from './engine-transitions.js';
import { specDigest } from './idempotency.js';
import { assignPayload, imageTag, nodeExecution, nodeRunLimits } from './node-execution.js';
import { nodeCache } from './layer-cache-refs.js';
import { poolOf } from '../placement/pools.js';
import type { ReadyRef } from '../placement/scheduler.js';

/** Runs placement once, soon; calls in the same turn share one pass. */
export function scheduleSoon(s: EngineState): void {
  if (s.scheduleQueued || s.stopped) return;
  s.scheduleQueued = true;
  s.defer(() => {
    s.scheduleQueued = false;
    schedule(s);
  });
}

/** Resolves once placement queued so far has run and its assignments were sent (tests, simulations). */
export async function settled(s: EngineState): Promise<void> {
  for (;;) {
    await new Promise((r) => setImmediate(r));
    if (s.scheduleQueued) continue;
    const last = s.lastDispatch;
    await last;
    if (!s.scheduleQueued && last === s.lastDispatch) return;
  }
}

/**
 * Sends one assignment. A frame that cannot be sent (it fails its own schema as sent, e.g.
 * with what the credentials hook added) is logged and left unsent: the attempt is then
 * re-offered when it is not accepted in time. It never stops the other sends of a batch.
 */
export function sendAssign(s: EngineState, channel: AgentChannel, attemptId: string, payload: Payload<'assign'>): void {
  try {
    channel.send('assign', payload);
  } catch (err) {
    s.log.error({ build: payload.build_id, node: payload.node, attempt: attemptId, err: coerceError(err).message }, 'assignment could not be sent');
  }
}

function schedule(s: EngineState): void {
  const placed = s.scheduler.placeAll(
    (ref) => readyNode(s, ref) !== null,
    (ref, agent, gpus) => dispatch(s, ref, agent, gpus),
  );
  if (placed === 0) return;
  // An assignment goes out only once its attempt is on disk: a coordinator that dies in
  // between must not leave an agent building an attempt the restarted one never heard of.
  const sends = s.unsent;
  s.unsent = new Map();
  s.lastDispatch = s.store.commit().then(
    () => {
      for (const [attemptId, send] of sends) {
        s.unsentAttempts.delete(attemptId);
        const act = s.active.get(attemptId);
        if (!act || act.attempt.state !== 'assigned') continue; // cancelled meanwhile (already finished, see cancelAttempt)
        const agent = s.agents.get(act.attempt.agent);
        // Not connected now: the agent reconnects without it and the attempt is lost then.
        if (agent?.state !== 'connected' || !agent.channel || agent.session !== act.attempt.session) continue;
        if (!agent.welcomed) s.afterWelcome.set(attemptId, send.payload); // reconnecting: no frame may overtake the welcome
        else sendAssign(s, agent.channel, attemptId, send.payload);
      }
    },
    (err: unknown) => {
      for (const attemptId of sends.keys()) s.unsentAttempts.delete(attemptId);
      s.log.error({ err }, 'state commit failed after dispatch; assignments not sent');
    },
  );
}

function readyNode(s: EngineState, ref: ReadyRef): { build: BuildRecord; node: NodeRecord } | null {
  const build = s.records.activeBuild(ref.buildId);
  if (!build) return null;
  const node = graphOf(s, build).byName.get(ref.node);
  return node && node.state === 'ready' ? { build, node } : null;
}

function dispatch(s: EngineState, ref: ReadyRef, agent: AgentEntry, gpus: number[]): void {
  const found = readyNode(s, ref);
  if (!found || !agent.channel) return;
  const { build, node } = found;
  const inputs = inputDigests(s, build, node);
  if (typeof inputs === 'string') return; // cannot happen: checked when the node became ready
  const exec = nodeExecution(node, inputs, node.index ? graphOf(s, build).byName : undefined);
  const now = s.now();
  const number = node.attempts.length + 1;
  const prev = node.attempts[node.attempts.length - 1];
  const attempt = assignedAttempt({
    id: newId('a', now),
    number,
    agent: agent.name,
    session: agent.session,
    assigned_at: now,
    log_header: prev ? `[kiln] attempt ${number} on agent ${agent.name} (attempt ${prev.number} on ${prev.agent}: ${prev.state}${prev.reason ? `, ${prev.reason}` : ''})\n` : '',
    inputs,
    spec_digest: specDigest(exec),
    gpus,
    emulated: !s.agents.isNative(agent, node.platform),
  });
  s.records.addAttempt(build, node, attempt);
  setNode(s, build, node, 'assigned', now);
  s.active.set(attempt.id, { build, node, attempt });
  s.agents.hold(agent, attempt.id, gpus, now);
  s.poolStats.recordDispatch(poolOf(node), now - (node.ready_at ?? now));
  if (build.started_at === null) {
    s.records.build(build, (b) => {
      b.started_at = now;
    });
  }
  refreshBuildState(s, build);
  s.unsentAttempts.add(attempt.id);
  const payload = assignPayload(
    {
      attempt_id: attempt.id,
      build_id: build.id,
      node: node.name,
      attempt: number,
      image_tag: imageTag(build, node),
      // Resolve first only when the result may be reused; an executor that builds nothing has nothing to resolve.
      resolve: reuseAllowed(build, node) && agent.hello?.executor !== 'noop',
      gpus,
    },
    exec,
    nodeRunLimits(node, nodeCache(s.layerCache, build, node, now)),
  );
  // Tracing: the agent's spans of this attempt are children of its span (one null check when off).
  if (s.tracing) Object.assign(payload, { traceparent: s.tracing.attemptParent(build, attempt.id) });
  s.unsent.set(attempt.id, { payload });
  if (attempt.log_header) track(s, s.logs.ensure(logRef({ build, node, attempt })).catch(() => {}));
}
