/**
 * The agent life cycle as the engine sees it: hello (register, and decide for each
 * attempt the agent reports whether it continues), welcomed (assignments held back
 * during the handshake go out), disconnected (its attempts wait `lostAfterMs` for it),
 * and the periodic sweep (silent or vanished agents are lost, unaccepted assignments are
 * offered again, unconfirmed cancels and attempts past their deadline are ended).
 */
import { CLOSE_CODES, formatDuration, type HelloPayload, type Payload } from '../../shared/index.js';
import type { AgentChannel, AgentEntry } from '../placement/agent-registry.js';
import { logRef, type EngineState, type HelloOutcome } from './engine-state.js';
import { loseAttempt } from './engine-retry.js';
import { archiveFinished, cancelAttempt, failNode, finishAttempt, refreshBuildState } from './engine-transitions.js';
import { sendAssign } from './engine-dispatch.js';

/**
 * Handles an accepted hello (the version was already negotiated): registers the agent,
 * decides for each attempt it reports whether it continues, and releases the attempts
 * it held before but no longer reports.
 */
export async function hello(s: EngineState, hello: HelloPayload, channel: AgentChannel): Promise<HelloOutcome> {
  const now = s.now();
  const existing = s.agents.get(hello.name);
  if (existing && existing.state === 'connected' && existing.session !== hello.session) {
    return { ok: false, closeCode: CLOSE_CODES.NAME_IN_USE, reason: `agent name '${hello.name}' is in use by another connected agent process` };
  }
  if (existing?.state === 'connected' && existing.channel) existing.channel.close(CLOSE_CODES.REPLACED, 'replaced by a newer connection of the same agent');
  const { entry } = s.agents.connect(hello, channel, now);
  s.agents.setControl(entry, s.records.agentControl(hello.name)?.control ?? 'active');
  const reported = new Map(hello.running.map((r) => [r.attempt_id, r]));
  const resume: Payload<'welcome'>['resume'] = [];
  let changed = false;
  for (const attemptId of [...entry.running]) {
    const act = s.active.get(attemptId);
    if (!act) {
      s.agents.release(entry.name, attemptId);
      continue;
    }
    if (act.attempt.session === hello.session && s.unsentAttempts.has(attemptId)) {
      // Placed on this agent process while it reconnected; the assignment goes out on the new connection.
      continue;
    }
    if (act.attempt.session === hello.session && reported.has(attemptId)) {
      const offset = await s.logs.agentBytes(logRef(act));
      // It may have ended while the log size was read (a cancel, the build archived): then it
      // is decided below like any attempt the coordinator no longer runs.
      if (s.active.get(attemptId) !== act) continue;
      s.records.attempt(act, (a) => {
        a.log_bytes = offset;
        // The agent has it, so it was accepted even if that frame was lost.
        a.accepted_at ??= now;
      });
      const cancelling = act.attempt.state === 'cancelling';
      resume.push({ attempt_id: attemptId, action: cancelling ? 'cancel' : 'continue', log_offset: offset });
      reported.delete(attemptId);
      if (cancelling) {
        // A `cancel` decision makes the agent drop the attempt without a report: it is done now.
        finishAttempt(s, act, 'cancelled', now, { reason: act.attempt.reason });
        changed = true;
      }
    } else {
      const why = act.attempt.session !== hello.session ? 'the agent restarted' : 'the agent reconnected without it';
      loseAttempt(s, act, why);
      changed = true;
    }
  }
  for (const r of reported.values()) {
    // Its result is recorded (the ack was lost): `continue` makes the agent resend `finished`, which is acked.
    const kept = s.recorded.get(r.attempt_id) === hello.session;
    resume.push({ attempt_id: r.attempt_id, action: kept ? 'continue' : 'cancel', log_offset: r.log_bytes });
  }
  if (changed) {
    await s.store.commit();
    archiveFinished(s);
  }
  s.log.info({ agent: hello.name, platforms: hello.platforms, max_jobs: hello.max_jobs, resumed: resume.length }, 'agent connected');
  s.scheduleSoon();
  return { ok: true, entry, resume };
}

/** The welcome was sent on this connection: the agent may now be given work. */
export function welcomed(s: EngineState, entry: AgentEntry, channel: AgentChannel): void {
  if (entry.channel !== channel || entry.state !== 'connected') return;
  s.agents.markWelcomed(entry);
  for (const [attemptId, payload] of s.afterWelcome) {
    const act = s.active.get(attemptId);
    if (!act || act.attempt.agent !== entry.name) continue;
    s.afterWelcome.delete(attemptId);
    if (act.attempt.state === 'assigned' && act.attempt.session === entry.session) sendAssign(s, channel, attemptId, payload);
  }
  s.scheduleSoon();
}

/**
 * The agent's socket closed: its attempts wait `lostAfterMs` for it to come back. One that
 * shut down cleanly (`how: 'shutdown'`) has left: nothing waits for it, and attempts it
 * still held are lost at the next sweep.
 */
export function disconnected(s: EngineState, entry: AgentEntry, channel: AgentChannel, how: 'dropped' | 'shutdown' = 'dropped'): void {
  if (entry.channel !== channel || entry.state !== 'connected') return;
  const lostAt = how === 'dropped' ? s.now() + s.t.lostAfterMs : entry.running.size > 0 ? s.now() : null;
  s.agents.markDisconnected(entry, lostAt);
  if (how === 'shutdown') s.log.info({ agent: entry.name, running: entry.running.size }, `agent ${entry.name} left (shut down)`);
  else s.log.warn({ agent: entry.name, running: entry.running.size }, 'agent disconnected');
}

/**
 * The agent's credential was revoked: it is lost now rather than after `lostAfterMs`, so
 * its attempts are queued again at once (as for a lost agent). `channel` is the revoked
 * connection (being closed); an agent connected on another channel is left alone.
 */
export async function cutOff(s: EngineState, name: string, channel: AgentChannel | null, why: string): Promise<void> {
  const entry = s.agents.get(name);
  if (!entry || entry.state === 'lost') return;
  if (entry.state === 'connected') {
    if (channel === null || entry.channel !== channel) return;
    s.agents.markDisconnected(entry, null);
  }
  if (agentLost(s, entry, why)) {
    await s.store.commit();
    archiveFinished(s);
  }
  s.scheduleSoon();
}

/** Periodic checks: lost agents, unconfirmed cancels, attempts past their deadline. */
export async function sweep(s: EngineState): Promise<void> {
  const now = s.now();
  const t = s.t;
  let changed = false;
  // A circuit breaker that let its cool-down pass offers a trial slot.
  if (s.agents.tick(now)) s.scheduleSoon();
  for (const entry of [...s.agents.all()]) {
    if (entry.state === 'connected' && now - entry.lastSeenAt > t.lostAfterMs) {
      entry.channel?.close(CLOSE_CODES.HEARTBEAT_TIMEOUT, `no frame for ${formatDuration(now - entry.lastSeenAt)}`);
      changed = agentLost(s, entry, `agent ${entry.name} was silent for ${formatDuration(now - entry.lastSeenAt)}`) || changed;
    } else if (entry.state === 'disconnected' && entry.lostAt !== null && entry.lostAt <= now) {
      // An agent known only from the state file (never connected since the restart) had the reconnect grace.
      const why = entry.hello === null ? `did not reconnect within the reconnect grace (${formatDuration(t.reconnectGraceMs)}) after the coordinator restarted` : `disconnected and did not come back within ${formatDuration(t.lostAfterMs)}`;
      changed = agentLost(s, entry, `agent ${entry.name} ${why}`) || changed;
    }
  }
  for (const act of [...s.active.values()]) {
    const a = act.attempt;
    const agent = s.agents.get(a.agent);
    if (a.state === 'assigned' && a.accepted_at === null && agent?.state === 'connected' && now - a.assigned_at > t.acceptTimeoutMs) {
      // The assignment never arrived (or the agent ignored it): offer the node again.
      agent.channel?.send('cancel', { attempt_id: a.id, reason: 'not accepted in time' });
      s.agents.recordInfraFailure(a.agent, now);
      loseAttempt(s, act, `agent ${a.agent} did not accept the assignment within ${formatDuration(t.acceptTimeoutMs)}`);
      changed = true;
    } else if (a.state === 'cancelling' && now - (a.finished_at ?? a.assigned_at) > t.cancelGraceMs) {
      finishAttempt(s, act, 'cancelled', now, { reason: `${a.reason ?? 'cancelled'}; the agent did not confirm within ${formatDuration(t.cancelGraceMs)}` });
      changed = true;
    } else if ((a.state === 'running' || a.state === 'assigned') && now - (a.started_at ?? a.assigned_at) > act.node.timeout_ms + (act.node.test?.timeout_ms ?? 0) + t.timeoutGraceMs) {
      cancelAttempt(s, act, `timed out after ${formatDuration(act.node.timeout_ms)}`);
      failNode(s, act.build, act.node, now, `timed out after ${formatDuration(act.node.timeout_ms)} (the agent did not report)`);
      refreshBuildState(s, act.build);
      changed = true;
    }
  }
  if (changed) {
    await s.store.commit();
    archiveFinished(s);
    s.scheduleSoon();
  }
}

/** The agent is gone for good: its attempts are lost (their nodes queued again while their budget lasts). */
function agentLost(s: EngineState, entry: AgentEntry, why: string): boolean {
  s.agents.markLost(entry);
  s.log.warn({ agent: entry.name, attempts: entry.running.size }, why);
  let changed = false;
  for (const id of [...entry.running]) {
    const act = s.active.get(id);
    if (act) {
      loseAttempt(s, act, why);
      changed = true;
    }
    s.agents.release(entry.name, id);
  }
  return changed;
}
