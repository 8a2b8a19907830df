/**
 * API actions on builds and agents: submit, cancel, retry a failed node (an operator's
 * retry, e.g. from the dead-letter list), pause/drain/resume an agent, and read a build's
 * error report. Each resolves once its changes are durable.
 */
import { unlink } from 'node:fs/promises';
import { KilnError, SLOT_HOLDING_ATTEMPT_STATES, isBuildTerminal, isNodeTerminal, newId, type Digest, type ErrorReportT, type ResolvedSpec } from '../../shared/index.js';
import type { AgentEntry } from '../placement/agent-registry.js';
import { pendingNode, type BuildRecord } from '../state/records.js';
import { graphOf, nodeKey, type EngineState } from './engine-state.js';
import { cancelAttempt, errorReportPath, inputDigests, makeReady, maybeArchive, refreshBuildState, setNode } from './engine-transitions.js';
import { buildErrorReport } from './error-report.js';

/** Creates a build from a validated spec; resolves after it is durable. */
export async function submit(s: EngineState, spec: ResolvedSpec, opts: { reuse?: boolean; submittedBy?: string } = {}): Promise<BuildRecord> {
  const now = s.now();
  const id = newId('b', now);
  const build: BuildRecord = {
    id,
    name: spec.name,
    state: 'pending',
    cancel_requested: false,
    reuse: opts.reuse ?? true,
    created_at: now,
    started_at: null,
    finished_at: null,
    nodes: spec.nodes.map(pendingNode),
    ...(spec.budget ? { budget: spec.budget } : {}),
    ...(spec.notify ? { notify: spec.notify } : {}),
    ...(opts.submittedBy !== undefined ? { submitted_by: opts.submittedBy } : {}),
  };
  s.records.addBuild(build);
  s.cas.touch(spec.nodes.flatMap((n) => [...(n.context ? [n.context] : []), ...n.inputs.flatMap((i) => (i.digest ? [i.digest] : []))]));
  s.ids.push(id);
  for (const node of build.nodes) {
    if (node.needs.length === 0) makeReady(s, build, node, now);
  }
  await s.store.commit();
  s.events.emit('build', id);
  s.scheduleSoon();
  return build;
}

/** Cancels every unfinished node; running ones get a `cancel` frame. */
export async function cancel(s: EngineState, id: string): Promise<BuildRecord> {
  const build = s.records.activeBuild(id);
  if (!build) {
    const archived = s.records.archivedSummary(id);
    if (archived) throw new KilnError('E_CONFLICT', `build ${id} already finished (${archived.state}); nothing to cancel`);
    throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
  }
  if (isBuildTerminal(build.state)) throw new KilnError('E_CONFLICT', `build ${id} already finished (${build.state}); nothing to cancel`);
  cancelUnfinished(s, build, 'the build was cancelled');
  await s.store.commit();
  maybeArchive(s, build);
  return build;
}

/**
 * Cancels every unfinished node of an active build with `reason` (the API's cancel, a
 * passed deadline): running ones are cancelled on their agents, the rest at once. The
 * caller commits.
 */
export function cancelUnfinished(s: EngineState, build: BuildRecord, reason: string): void {
  const now = s.now();
  s.records.build(build, (b) => {
    b.cancel_requested = true;
  });
  for (const node of build.nodes) {
    if (isNodeTerminal(node.state)) continue;
    const current = node.attempts[node.attempts.length - 1];
    if ((node.state === 'assigned' || node.state === 'running') && current && SLOT_HOLDING_ATTEMPT_STATES.has(current.state)) {
      // The engine's own record of the attempt (finishAttempt matches shared-execution leaders by identity).
      cancelAttempt(s, s.active.get(current.id) ?? { build, node, attempt: current }, reason);
    }
    setNode(s, build, node, 'cancelled', now, reason);
  }
  refreshBuildState(s, build);
}

/** Waits until the build is not being archived (a retry revives it from its archive file). */
async function archivingDone(s: EngineState, buildId: string): Promise<void> {
  while (s.archiving.has(buildId)) await Promise.allSettled([...s.background]);
}

/**
 * Runs a failed node again (an operator's retry, e.g. from the dead-letter list): the
 * node becomes `ready` with a fresh attempt budget, the nodes skipped because of it
 * become `pending`, and a finished build is made active again. Resolves once durable.
 */
export async function retryNode(s: EngineState, buildId: string, nodeName: string): Promise<BuildRecord> {
  await archivingDone(s, buildId);
  const found = s.records.activeBuild(buildId) ?? (await s.store.getBuild(buildId));
  if (!found) throw new KilnError('E_NOT_FOUND', `build ${buildId} not found`);
  const probe = found.nodes.find((n) => n.name === nodeName);
  if (!probe) throw new KilnError('E_NOT_FOUND', `build ${buildId} has no node '${nodeName}' (nodes: ${found.nodes.map((n) => n.name).slice(0, 20).join(', ')})`);
  if (found.cancel_requested) throw new KilnError('E_CONFLICT', `build ${buildId} was cancelled; submit it again instead`);
  const deadlineMs = found.budget?.deadline_ms;
  if (deadlineMs !== undefined && s.now() >= found.created_at + deadlineMs) {
    throw new KilnError('E_CONFLICT', `build ${buildId}'s deadline passed at ${new Date(found.created_at + deadlineMs).toISOString()}; submit it again instead`);
  }
  if (probe.state !== 'failed') throw new KilnError('E_CONFLICT', `node '${nodeName}' of build ${buildId} is ${probe.state}; only a failed node can be retried`);
  await archivingDone(s, buildId);
  const build = s.records.activeBuild(buildId) ?? (await s.store.revive(buildId));
  if (!build) throw new KilnError('E_NOT_FOUND', `build ${buildId} not found`);
  const g = graphOf(s, build);
  const node = g.byName.get(nodeName)!;
  if (node.state !== 'failed') throw new KilnError('E_CONFLICT', `node '${nodeName}' of build ${buildId} is ${node.state}; only a failed node can be retried`);
  const inputs = inputDigests(s, build, node);
  if (typeof inputs === 'string') throw new KilnError('E_CONFLICT', `node '${nodeName}' cannot run: ${inputs}`);
  const gone = [...(node.context ? [node.context] : []), ...Object.values(inputs)].filter((d) => !s.cas.has(d as Digest));
  if (gone.length > 0) throw new KilnError('E_CONFLICT', `node '${nodeName}' cannot run again: ${gone.join(', ')} ${gone.length > 1 ? 'are' : 'is'} no longer in the CAS (retention); submit the build again`);
  const now = s.now();
  s.records.node(build, node, (n) => {
    n.retries = (n.retries ?? 0) + 1;
    n.budget_from = n.attempts.length;
    n.reason = null;
    n.finished_at = null;
  });
  const key = nodeKey(buildId, nodeName);
  s.avoid.delete(key);
  s.preferNot.delete(key);
  makeReady(s, build, node, now);
  // Nodes skipped because of it wait again, if nothing else they need failed.
  const back = new Set([nodeName]);
  for (let changed = true; changed; ) {
    changed = false;
    for (const d of build.nodes) {
      if (d.state !== 'skipped' || !d.needs.some((n) => back.has(n))) continue;
      // Back unless something else it needs failed for good (needs still on their way are fine).
      if (d.needs.some((n) => !back.has(n) && ['failed', 'skipped', 'cancelled'].includes(g.byName.get(n)?.state ?? 'failed'))) continue;
      setNode(s, build, d, 'pending', now, null, (n) => {
        n.reason = null;
        n.finished_at = null;
      });
      back.add(d.name);
      changed = true;
    }
  }
  s.records.setDeadLetter(key, null);
  s.records.build(build, (b) => {
    b.finished_at = null;
  });
  refreshBuildState(s, build);
  await s.store.commit();
  if (s.store.persist) await unlink(errorReportPath(s, buildId)).catch(() => {});
  s.log.info({ build: buildId, node: nodeName, retries: node.retries }, 'node retried');
  s.events.emit('build', buildId);
  s.scheduleSoon();
  return build;
}

/** Pauses, drains or resumes an agent (operator action); persisted, so it survives a restart. */
export async function setAgentControl(s: EngineState, name: string, control: 'active' | 'paused' | 'draining', reason: string | null): Promise<AgentEntry> {
  const entry = s.agents.get(name);
  if (!entry) throw new KilnError('E_NOT_FOUND', `agent '${name}' is not known to this coordinator`);
  s.agents.setControl(entry, control);
  s.records.setAgentControl(name, control === 'active' ? null : { control, at: s.now(), reason });
  await s.store.commit();
  s.log.info({ agent: name, control, reason }, control === 'active' ? 'agent resumed' : `agent ${control === 'paused' ? 'paused' : 'draining'}`);
  if (control === 'active') s.scheduleSoon();
  return entry;
}

/** Why a build failed (null when no node failed). Throws E_NOT_FOUND for an unknown build. */
export async function errorReport(s: EngineState, buildId: string): Promise<ErrorReportT | null> {
  const build = await s.store.getBuild(buildId);
  if (!build) throw new KilnError('E_NOT_FOUND', `build ${buildId} not found`);
  return buildErrorReport(build, s.logs, s.records.deadLetters(), s.tracing?.traceId(build.id));
}
