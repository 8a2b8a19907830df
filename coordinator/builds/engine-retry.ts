/**
 * The infrastructure retry budget and the dead-letter list. An attempt lost to the
 * infrastructure (a lost agent, an assignment not accepted in time, Docker or disk
 * failures the agent reports as `infra`, an agent that cancelled on its own) queues its
 * node again, preferably on another agent, until the node's budget is used up
 * (INFRA_ATTEMPT_BUDGET; 1 with `retry: false`); then the node fails with `attempts
 * exhausted` and goes on the dead-letter list, from which an operator can retry it.
 */
import { isInfraAttempt, type AttemptRecord, type BuildRecord, type DeadLetterRecord, type NodeRecord } from '../state/records.js';
import { INFRA_ATTEMPT_BUDGET, nodeKey, type ActiveAttempt, type EngineState } from './engine-state.js';
import { failNode, finishAttempt, makeReady, refreshBuildState } from './engine-transitions.js';

/** Offers the node to `agent` only when no other agent can take it. */
export function preferNotOn(s: EngineState, build: BuildRecord, node: NodeRecord, agent: string): void {
  const key = nodeKey(build.id, node.name);
  const set = s.preferNot.get(key) ?? new Set<string>();
  set.add(agent);
  s.preferNot.set(key, set);
}

/** Marks an attempt lost and queues its node again while its attempt budget lasts. */
export function loseAttempt(s: EngineState, act: ActiveAttempt, why: string): void {
  const { build, node } = act;
  const now = s.now();
  const wasCancelling = act.attempt.state === 'cancelling';
  finishAttempt(s, act, 'lost', now, { reason: why });
  if (!wasCancelling && (node.state === 'assigned' || node.state === 'running')) s.seams.retryOrExhaust(build, node, act.attempt, now, why);
  refreshBuildState(s, build);
}

/**
 * After an infrastructure failure of `attempt`: queue the node again (avoiding that agent
 * when another can take it) while the budget lasts, else fail it as `attempts exhausted`,
 * skip what needs it and put it on the dead-letter list.
 */
export function retryOrExhaust(s: EngineState, build: BuildRecord, node: NodeRecord, attempt: AttemptRecord, now: number, why: string): void {
  const budget = node.retry === false ? 1 : INFRA_ATTEMPT_BUDGET;
  const used = node.attempts.slice(node.budget_from ?? 0).filter(isInfraAttempt).length;
  if (used < budget) {
    preferNotOn(s, build, node, attempt.agent);
    makeReady(s, build, node, now);
    return;
  }
  const reason = `attempts exhausted: ${used} infrastructure failure${used === 1 ? '' : 's'} (budget ${budget}${node.retry === false ? ', retry: false' : ''}); last: ${why}`;
  failNode(s, build, node, now, reason);
  s.records.setDeadLetter(nodeKey(build.id, node.name), {
    build_id: build.id,
    build_name: build.name,
    node: node.name,
    platform: node.platform,
    at: now,
    reason,
    attempts: node.attempts
      .slice(node.budget_from ?? 0)
      .map((a) => ({ id: a.id, number: a.number, agent: a.agent, state: a.state, reason: a.reason, error: a.error })),
  });
  s.log.warn({ build: build.id, node: node.name, attempts: used }, 'node dead-lettered: attempts exhausted');
}

/** The dead-letter list: nodes whose infrastructure failures used up their attempt budget, newest first. */
export function deadLetters(s: EngineState): DeadLetterRecord[] {
  return [...s.records.deadLetters().values()].sort((a, b) => b.at - a.at || (a.build_id < b.build_id ? 1 : -1));
}
