/**
 * Reuse and shared execution. Once the agent resolved a node's base images (`resolved`),
 * the attempt's idempotency key is known (idempotency.ts) and the engine either reuses
 * an earlier successful attempt with the same key (reuse-index.ts), lets the node follow
 * an identical attempt being built right now (a shared execution: the follower's node
 * waits for the leader's result), or tells the agent to `proceed`, only once that
 * decision is durable (`decidedToBuild`: a resent `resolved` gets `proceed` again).
 */
import type { AttemptState, Digest, Payload } from '../../shared/index.js';
import type { AttemptRecord, BuildRecord, NodeRecord, ReusedFrom } from '../state/records.js';
import { logRef, type ActiveAttempt, type EngineState } from './engine-state.js';
import { fillReused, finishAttempt, follow, maybeArchive, refreshBuildState, releaseDependents, setNode } from './engine-transitions.js';
import { idempotencyKey } from './idempotency.js';
import type { ReuseRecord } from './reuse-index.js';

/** Whether the node's result may come from an earlier attempt (or a shared execution). */
export function reuseAllowed(build: BuildRecord, node: NodeRecord): boolean {
  return build.reuse !== false && node.reuse !== false && !node.no_cache;
}

/**
 * The agent resolved the node's base images: compute the idempotency key, then reuse an
 * earlier result, follow an identical attempt in flight, or tell the agent to proceed.
 * `act` is the agent's current attempt (checked by the caller).
 */
export async function onResolved(s: EngineState, act: ActiveAttempt, p: Payload<'resolved'>): Promise<void> {
  const { attempt } = act;
  if (attempt.base_images !== null) {
    // A resend (after a reconnect). Once the decision to build is durable, say it again;
    // while it is being made, the handler making it sends `proceed` when it is durable.
    if (s.decidedToBuild.has(attempt.id)) sendProceed(s, act);
    return;
  }
  s.records.attempt(act, (a) => {
    a.base_images = p.base_images;
    a.dockerfile_digest = p.dockerfile_digest;
    a.key = a.spec_digest !== null ? idempotencyKey(a.spec_digest, p.base_images) : null;
  });
  const key = attempt.key;
  const current = () => s.active.get(attempt.id) === act && attempt.state === 'assigned';
  if (key !== null && reuseAllowed(act.build, act.node)) {
    const rec = await s.reuse.get(key).catch((err: unknown) => {
      s.log.error({ err, key }, 'reading the reuse index failed; building');
      return null;
    });
    if (!current()) return;
    if (rec && rec.platform === act.node.platform && rec.outputs.every((o) => s.cas.has(o.digest as Digest))) {
      // The log says why nothing was built before the node turns terminal (followers read it then).
      await writeLogNote(s, act, `[kiln] reused: node '${rec.node}' of build ${rec.build_id} (attempt ${rec.attempt_number}) built the same thing (key ${rec.key}); nothing was built. Its log: kiln logs ${rec.build_id} ${rec.node}\n`);
      if (!current()) return;
      reuseResult(s, act, rec);
      await s.store.commit();
      return;
    }
    const leader = s.inflight.get(key);
    if (leader && leader !== act && s.active.get(leader.attempt.id) === leader && leader.attempt.state !== 'cancelling') {
      await writeLogNote(
        s,
        act,
        `[kiln] node '${leader.node.name}' of build ${leader.build.id} (attempt ${leader.attempt.number}) is building the same thing right now (key ${key}); waiting for its result instead of building. Its log: kiln logs ${leader.build.id} ${leader.node.name}\n`,
      );
      if (!current()) return;
      if (s.inflight.get(key) === leader && (leader.attempt.state as AttemptState) !== 'cancelling') {
        shareExecution(s, act, leader);
        await s.store.commit();
        return;
      }
    }
  }
  if (key !== null && !s.inflight.has(key)) s.inflight.set(key, act);
  // The decision to build is durable before the agent hears it.
  await s.store.commit();
  if (!current()) return;
  s.decidedToBuild.add(attempt.id);
  sendProceed(s, act);
}

/** Tells the attempt's agent (its current connection, when welcomed) to build. */
function sendProceed(s: EngineState, act: ActiveAttempt): void {
  const agent = s.agents.get(act.attempt.agent);
  if (agent?.state === 'connected' && agent.welcomed && agent.session === act.attempt.session) agent.channel?.send('proceed', { attempt_id: act.attempt.id });
}

/**
 * Writes a coordinator note as the attempt's whole log (an attempt that builds nothing
 * gets no bytes from its agent) and flushes it, before the node changes state.
 */
async function writeLogNote(s: EngineState, act: ActiveAttempt, text: string): Promise<void> {
  try {
    await s.logs.appendNote(logRef(act), text);
    await s.logs.close(logRef(act));
  } catch (err) {
    s.log.warn({ err, build: act.build.id, attempt: act.attempt.id }, 'writing the attempt log note failed');
  }
}

/** Ends the attempt as `reused` and the node as `success` with the earlier result. */
function reuseResult(s: EngineState, act: ActiveAttempt, rec: ReuseRecord): void {
  const { build, node, attempt } = act;
  const now = s.now();
  const from: ReusedFrom = { build_id: rec.build_id, node: rec.node, attempt_id: rec.attempt_id, attempt_number: rec.attempt_number };
  fillReused(s, act, from, rec);
  s.agents.get(attempt.agent)?.channel?.send('cancel', { attempt_id: attempt.id, reason: `reused the result of ${rec.build_id}/${rec.node}` });
  finishAttempt(s, act, 'reused', now, { reason: `reused the result of ${rec.build_id}/${rec.node} attempt ${rec.attempt_number}` });
  setNode(s, build, node, 'success', now, null, (n) => {
    n.started_at ??= now;
    n.reused_from = from;
  });
  releaseDependents(s, build, node, now);
  refreshBuildState(s, build);
  s.scheduleSoon();
  maybeArchive(s, build);
}

/** Shared execution: the node waits for `leader`, an attempt of an identical node being built now. */
function shareExecution(s: EngineState, act: ActiveAttempt, leader: ActiveAttempt): void {
  const { build, node, attempt } = act;
  const now = s.now();
  const where = `node '${leader.node.name}' of build ${leader.build.id} (attempt ${leader.attempt.number})`;
  s.agents.get(attempt.agent)?.channel?.send('cancel', { attempt_id: attempt.id, reason: `shares the execution of ${leader.build.id}/${leader.node.name}` });
  s.records.attempt(act, (a) => {
    a.reused_from = { build_id: leader.build.id, node: leader.node.name, attempt_id: leader.attempt.id, attempt_number: leader.attempt.number };
  });
  finishAttempt(s, act, 'reused', now, { reason: `shares the execution of ${where}` });
  s.records.node(build, node, (n) => {
    n.started_at ??= now;
  });
  if (node.state === 'assigned') setNode(s, build, node, 'running', now);
  follow(s, leader, build, node);
}

/** The reuse index entry for a successful attempt with a key. */
export function reuseRecordOf(build: BuildRecord, node: NodeRecord, a: AttemptRecord): ReuseRecord {
  return {
    key: a.key!,
    build_id: build.id,
    node: node.name,
    attempt_id: a.id,
    attempt_number: a.number,
    platform: node.platform,
    image_id: a.image_id,
    outputs: a.outputs,
    provenance: a.provenance,
    finished_at: a.finished_at ?? Date.now(),
  };
}
