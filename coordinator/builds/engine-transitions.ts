/**
 * Node, attempt and build transitions: the state changes every other engine module is
 * made of. A node becomes ready (and is queued for placement), fails, is skipped with
 * everything downstream of it, or releases its dependents; an attempt is cancelled or
 * finishes (freeing its slot, settling the nodes that shared its execution); a build's
 * state is derived again from its node counts; a finished build is archived with its
 * error report. Every write goes through `s.records` (engine-records.ts).
 */
import { join } from 'node:path';
import { SLOT_HOLDING_ATTEMPT_STATES, attemptTransition, deriveBuildState, isBuildTerminal, isNodeTerminal, nodeTransition, type AttemptState, type NodeState } from '../../shared/index.js';
import type { AttemptRecord, BuildRecord, NodeRecord, ReusedFrom } from '../state/records.js';
import { writeFileDurable } from '../../shared/index.js';
import { countTransition } from './build-graph.js';
import { graphOf, logRef, nodeKey, track, type ActiveAttempt, type EngineState } from './engine-state.js';
import { buildErrorReport } from './error-report.js';
import { requirementOf } from '../placement/requirement.js';

/** Moves a node to `to` (checked against the state table); `also` changes more of it in the same write. */
export function setNode(s: EngineState, build: BuildRecord, node: NodeRecord, to: NodeState, now: number, reason: string | null = null, also?: (n: NodeRecord) => void): void {
  const from = node.state;
  const next = nodeTransition(from, to, `node ${build.id}/${node.name}`);
  s.records.node(build, node, (n) => {
    n.state = next;
    if (isNodeTerminal(to)) {
      n.finished_at = now;
      if (reason) n.reason = reason;
    }
    also?.(n);
  });
  s.tracing?.nodeChanged(build, node, from, to, now, isNodeTerminal(to));
  countTransition(graphOf(s, build), node, from, to);
  s.events.emit('node', build.id, node.name);
}

/** Fails a node and skips everything that needs it. */
export function failNode(s: EngineState, build: BuildRecord, node: NodeRecord, now: number, reason: string | null): void {
  setNode(s, build, node, 'failed', now, reason);
  s.log.info({ build: build.id, node: node.name, attempt: node.attempts[node.attempts.length - 1]?.id, reason: node.reason ?? node.attempts[node.attempts.length - 1]?.error ?? null }, 'node failed');
  skipDownstream(s, build, node, now);
}

/** After an attempt ended without a result: queue the node again, or fail it (and skip what needs it). */
export function requeueOrFail(s: EngineState, build: BuildRecord, node: NodeRecord, now: number, requeue: boolean, failReason: string): void {
  if (requeue) makeReady(s, build, node, now);
  else failNode(s, build, node, now, failReason);
}

/** The node's needs succeeded: it is ready and queued for placement (or fails when an input is missing). */
export function makeReady(s: EngineState, build: BuildRecord, node: NodeRecord, now: number): void {
  const inputs = inputDigests(s, build, node);
  if (typeof inputs === 'string') {
    failNode(s, build, node, now, inputs);
    return;
  }
  setNode(s, build, node, 'ready', now, null, (n) => {
    n.ready_at = now;
  });
  enqueue(s, build, node);
}

/** Queues a ready node for placement, with the agents it avoids or prefers not to use. */
export function enqueue(s: EngineState, build: BuildRecord, node: NodeRecord): void {
  const key = nodeKey(build.id, node.name);
  const avoid = s.avoid.get(key);
  const preferNot = s.preferNot.get(key);
  s.scheduler.enqueue({
    buildId: build.id,
    node: node.name,
    ...requirementOf(node),
    priority: node.priority ?? 0,
    budget: s.budgets.of(build, node), // issue 11 budgets (placement/budgets.ts)
    ...(avoid ? { avoid } : {}),
    ...(preferNot ? { preferNot } : {}),
  });
}

/** Input name -> digest for a node whose needs succeeded, or a message saying which input is missing. */
export function inputDigests(s: EngineState, build: BuildRecord, node: NodeRecord): Record<string, string> | string {
  const out: Record<string, string> = {};
  for (const i of node.inputs ?? []) {
    if (i.digest !== null) {
      out[i.name] = i.digest;
      continue;
    }
    const up = i.from ? graphOf(s, build).byName.get(i.from.node) : undefined;
    const last = up?.attempts[up.attempts.length - 1];
    const art = up?.state === 'success' ? last?.outputs?.find((o) => o.name === i.from!.output) : undefined;
    if (!art) return `input '${i.name}': node '${i.from?.node}' did not produce output '${i.from?.output}'`;
    out[i.name] = art.digest;
  }
  return out;
}

/** A node succeeded: its dependents whose needs all succeeded become ready. */
export function releaseDependents(s: EngineState, build: BuildRecord, node: NodeRecord, now: number): void {
  const g = graphOf(s, build);
  for (const name of g.dependents.get(node.name) ?? []) {
    const d = g.byName.get(name)!;
    if (d.state === 'pending' && d.needs.every((n) => g.byName.get(n)?.state === 'success')) makeReady(s, build, d, now);
  }
}

export function skipDownstream(s: EngineState, build: BuildRecord, node: NodeRecord, now: number): void {
  const g = graphOf(s, build);
  const queue = [node.name];
  while (queue.length > 0) {
    const name = queue.shift()!;
    for (const dep of g.dependents.get(name) ?? []) {
      const d = g.byName.get(dep)!;
      if (d.state !== 'pending') continue;
      setNode(s, build, d, 'skipped', now, `skipped: needs '${name}', which ${g.byName.get(name)!.state}`);
      queue.push(dep);
    }
  }
}

/** Cancels an attempt: at once when its agent never got it or is gone, else by telling the agent (confirmed later). */
export function cancelAttempt(s: EngineState, act: ActiveAttempt, reason: string): void {
  const { attempt } = act;
  const agent = s.agents.get(attempt.agent);
  if (s.unsentAttempts.has(attempt.id)) {
    // The agent never got the assignment (it is sent after the dispatch commit): nothing to cancel there.
    s.unsent.delete(attempt.id);
    finishAttempt(s, act, 'cancelled', s.now(), { reason });
  } else if (agent?.state === 'connected' && agent.session === attempt.session && agent.channel) {
    const next = attemptTransition(attempt.state, 'cancelling');
    const now = s.now();
    s.records.attempt(act, (a) => {
      a.state = next;
      a.reason = reason;
      a.finished_at = now;
    });
    agent.channel.send('cancel', { attempt_id: attempt.id, reason });
  } else {
    finishAttempt(s, act, 'cancelled', s.now(), { reason });
  }
}

/** Ends an attempt: frees its slot, settles the nodes sharing its execution, closes its log. */
export function finishAttempt(s: EngineState, act: ActiveAttempt, to: AttemptState, now: number, extra: { reason?: string | null }): void {
  const { attempt } = act;
  const next = attemptTransition(attempt.state, to);
  s.records.attempt(act, (a) => {
    a.state = next;
    a.finished_at = now;
    if (extra.reason !== undefined) a.reason = extra.reason;
  });
  s.tracing?.attemptEnded(act.build, act.node, attempt, now);
  s.active.delete(attempt.id);
  s.unsentAttempts.delete(attempt.id);
  s.afterWelcome.delete(attempt.id);
  s.decidedToBuild.delete(attempt.id);
  s.agents.release(attempt.agent, attempt.id);
  if (attempt.key !== null && s.inflight.get(attempt.key) === act) {
    s.inflight.delete(attempt.key);
    settleFollowers(s, act, to, now);
  }
  // No more bytes are accepted for a finished attempt: flush and close its log file.
  track(s, s.logs.close(logRef(act)).catch(() => {}));
  s.events.emit('node', act.build.id, act.node.name);
}

/** Recomputes the build state from its nodes; returns true when it changed. */
export function refreshBuildState(s: EngineState, build: BuildRecord): boolean {
  const g = graphOf(s, build);
  const next = deriveBuildState({ cancelRequested: build.cancel_requested, started: build.started_at !== null, counts: g.counts, leafSuccesses: g.leafSuccesses });
  if (next === build.state) return false;
  s.records.build(build, (b) => {
    b.state = next;
    if (next !== 'pending' && b.started_at === null) b.started_at = s.now();
    if (isBuildTerminal(next)) b.finished_at = s.now();
  });
  if (isBuildTerminal(next)) {
    s.log.info({ build: build.id, state: next }, 'build finished');
    s.tracing?.buildEnded(build, s.now());
  }
  s.events.emit('build', build.id);
  return true;
}

// ------------------------------------------------------------ shared execution

/** The node waits for `leader`'s result (an identical attempt being built now). */
export function follow(s: EngineState, leader: ActiveAttempt, build: BuildRecord, node: NodeRecord): void {
  s.records.node(build, node, (n) => {
    n.waiting_on = leader.attempt.id;
  });
  const list = s.followers.get(leader.attempt.id) ?? [];
  list.push({ build, node });
  s.followers.set(leader.attempt.id, list);
}

/** The leader of a shared execution ended: its followers succeed, fail or are queued again. */
function settleFollowers(s: EngineState, leader: ActiveAttempt, to: AttemptState, now: number): void {
  const list = s.followers.get(leader.attempt.id);
  s.followers.delete(leader.attempt.id);
  if (!list) return;
  const la = leader.attempt;
  for (const { build, node } of list) {
    if (node.state !== 'running' || node.waiting_on !== la.id) continue;
    const mine = node.attempts[node.attempts.length - 1];
    const from: ReusedFrom = { build_id: leader.build.id, node: leader.node.name, attempt_id: la.id, attempt_number: la.number };
    if (to === 'success') {
      if (mine) fillReused(s, { build, node, attempt: mine }, from, la);
      setNode(s, build, node, 'success', now, null, (n) => {
        n.waiting_on = null;
        n.reused_from = from;
      });
      releaseDependents(s, build, node, now);
    } else {
      s.records.node(build, node, (n) => {
        n.waiting_on = null;
      });
      if (to === 'failed' && !la.infra) failNode(s, build, node, now, `the identical node '${leader.node.name}' of build ${leader.build.id} failed: ${la.error ?? 'failed'}`);
      else makeReady(s, build, node, now);
    }
    refreshBuildState(s, build);
    maybeArchive(s, build);
  }
  s.scheduleSoon();
}

/** Gives an attempt the result of an earlier (or a leader's) attempt. */
export function fillReused(s: EngineState, act: ActiveAttempt, from: ReusedFrom, result: Pick<AttemptRecord, 'image_id' | 'outputs' | 'provenance'>): void {
  s.records.attempt(act, (a) => {
    a.reused_from = from;
    a.image_id = result.image_id;
    a.outputs = result.outputs;
    a.provenance = result.provenance;
  });
}

// ------------------------------------------------------------ archive

export function errorReportPath(s: EngineState, buildId: string): string {
  return join(s.store.archiveDir, `error-${buildId}.json`);
}

/** Archives a finished build once none of its attempts holds a slot. */
export function maybeArchive(s: EngineState, build: BuildRecord): void {
  if (!isBuildTerminal(build.state) || s.records.activeBuild(build.id) !== build || s.archiving.has(build.id)) return;
  for (const n of build.nodes) for (const a of n.attempts) if (SLOT_HOLDING_ATTEMPT_STATES.has(a.state)) return;
  s.archiving.add(build.id);
  const work = writeErrorReport(s, build)
    .then(() => s.store.archive(build))
    .then(() => {
      for (const n of build.nodes) {
        s.avoid.delete(nodeKey(build.id, n.name));
        s.preferNot.delete(nodeKey(build.id, n.name));
      }
      return s.store.commit();
    })
    .catch((err: unknown) => s.log.error({ err, build: build.id }, 'archiving a finished build failed'))
    .finally(() => s.archiving.delete(build.id));
  track(s, work);
}

/** Archives every finished active build that can be. */
export function archiveFinished(s: EngineState): void {
  for (const b of s.records.activeBuilds()) maybeArchive(s, b);
}

/**
 * Writes `builds/error-<id>.json` for a build with a failed node (after its logs are
 * flushed), beside the embedded state's archive; the API computes the report from the build
 * either way, so a PostgreSQL state (shared by coordinators) keeps no local copy.
 */
async function writeErrorReport(s: EngineState, build: BuildRecord): Promise<void> {
  if (!s.store.persist || s.store.kind !== 'embedded' || !build.nodes.some((n) => n.state === 'failed')) return;
  try {
    for (const n of build.nodes) {
      const last = n.attempts[n.attempts.length - 1];
      if (n.state === 'failed' && last) await s.logs.close(logRef({ build, node: n, attempt: last }));
    }
    const report = await buildErrorReport(build, s.logs, s.records.deadLetters(), s.tracing?.traceId(build.id));
    if (report) await writeFileDurable(errorReportPath(s, build.id), `${JSON.stringify(report, null, 2)}\n`, 0o600);
  } catch (err) {
    s.log.error({ err, build: build.id }, 'writing the error report failed');
  }
}
