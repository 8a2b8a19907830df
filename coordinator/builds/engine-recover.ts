/**
 * Recovery after a coordinator restart: rebuilds the engine's in-memory indexes from the
 * loaded state. Ready nodes are queued again; attempts that held a slot become active
 * again and their agents get `reconnectGraceMs` to come back and claim them (an agent
 * process that restarted meanwhile lost them); shared executions are re-linked to their
 * leaders (or resolved again when the leader finished while the coordinator was down);
 * operators' agent controls are applied; finished builds are archived.
 */
import { SLOT_HOLDING_ATTEMPT_STATES } from '../../shared/index.js';
import { remember, type EngineState } from './engine-state.js';
import { loseAttempt } from './engine-retry.js';
import { archiveFinished, enqueue, follow, makeReady, refreshBuildState } from './engine-transitions.js';

/**
 * Rebuilds the in-memory indexes from the loaded state: ready queues, active attempts
 * (their agents get `reconnectGraceMs` to come back and claim them) and the build list.
 */
export async function recover(s: EngineState): Promise<void> {
  const now = s.now();
  s.ids.push(...s.records.buildIds());
  s.ids.sort();
  let changed = false;
  for (const build of s.records.activeBuilds()) {
    for (const node of build.nodes) {
      if (node.state === 'ready') enqueue(s, build, node);
      for (const attempt of node.attempts) {
        if (attempt.state === 'success' || attempt.state === 'failed') remember(s, attempt); // only an agent's `finished` makes these
        if (!SLOT_HOLDING_ATTEMPT_STATES.has(attempt.state)) continue;
        s.active.set(attempt.id, { build, node, attempt });
        const entry = s.agents.placeholder(attempt.agent, attempt.session, now, s.t.reconnectGraceMs);
        if (entry.session === attempt.session) {
          s.agents.hold(entry, attempt.id, attempt.gpus ?? [], now);
        } else {
          loseAttempt(s, { build, node, attempt }, 'the agent restarted while the coordinator was down');
          changed = true;
        }
      }
    }
    if (refreshBuildState(s, build)) changed = true;
  }
  for (const act of s.active.values()) {
    if (act.attempt.key !== null) s.inflight.set(act.attempt.key, act);
    // Resolved before the restart and still assigned: it was (or may as well be) told to build.
    if (act.attempt.state === 'assigned' && act.attempt.base_images !== null) s.decidedToBuild.add(act.attempt.id);
  }
  for (const build of s.records.activeBuilds()) {
    for (const node of build.nodes) {
      if (node.state !== 'running' || !node.waiting_on) continue;
      const leader = s.active.get(node.waiting_on);
      if (leader) follow(s, leader, build, node);
      else {
        // The leader finished while the coordinator was down: resolve the node again.
        s.records.node(build, node, (n) => {
          n.waiting_on = null;
        });
        makeReady(s, build, node, now);
        changed = true;
      }
    }
  }
  for (const [name, ctl] of s.records.agentControls()) {
    const entry = s.agents.get(name);
    if (entry) s.agents.setControl(entry, ctl.control);
  }
  if (changed) await s.store.commit();
  archiveFinished(s);
}
