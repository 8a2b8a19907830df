/**
 * The invariants a simulation run must keep, checked after every step, around every
 * frame the engine handles, and at the end:
 * - one-result: at most one successful attempt per node; a successful attempt is the
 *   node's last and the node is `success`; a `success` node has exactly one result (its
 *   own attempt, or `reused_from`).
 * - terminal-stable: once a node (or build) is terminal its state and result never change.
 * - one-live-attempt: at most one attempt of a node holds a slot, and it is the latest;
 *   an assigned/running node has one (or follows a shared execution); any other node has
 *   only a `cancelling` one.
 * - fenced: a `started`, `log`, `finished`, `reject`, `resolved` or `accept` the engine
 *   acted on named the node's current attempt, on the agent process it was given to.
 * - attempt-budget: infrastructure failures (lost, infra-failed, agent-cancelled) per node
 *   within the budget (3; 1 with `retry: false`) and no attempt after the budget is used
 *   up; at most 3 rejections, none after the third (both counted since the last retry).
 * - slot-accounting: an agent's slots are held by exactly its live attempts, never more
 *   than its max_jobs.
 * - no-early-timeout: the coordinator fails a node as timed out only after the node's
 *   timeout really passed (on the coordinator's clock) since it was assigned.
 * - log-complete / log-prefix (end): a successful attempt's stored log is byte for byte
 *   what the agent produced; any other attempt's is a prefix of it (plus, for a reused or
 *   shared attempt, the coordinator's note).
 * Liveness (every node and build terminal once faults stopped) is checked by the harness.
 */
import { readFile } from 'node:fs/promises';
import type { AgentRegistry } from '../../coordinator/placement/agent-registry.js';
import type { LogStore } from '../../coordinator/logs/log-store.js';
import type { AttemptRecord, BuildRecord, NodeRecord } from '../../coordinator/state/records.js';
import { SLOT_HOLDING_ATTEMPT_STATES, isBuildTerminal, isNodeTerminal, type Frame, type Payload } from '../../shared/index.js';
import type { FrameObserver } from './sim-hub.js';
import type { SimConnection } from './sim-net.js';
import { scrub, type World } from './world.js';

export const INFRA_BUDGET = 3;
export const MAX_REJECTIONS = 3;

/** An attempt that ended because of the infrastructure, not the build (shared/states.ts). */
export function isInfraFailure(a: AttemptRecord): boolean {
  return a.state === 'lost' || ((a.state === 'failed' || a.state === 'cancelled') && a.infra);
}

interface Found {
  build: BuildRecord;
  node: NodeRecord;
  attempt: AttemptRecord;
}

interface FrameSnap {
  type: string;
  id: string;
  conn: SimConnection;
  current: boolean;
  why: string;
  state: AttemptRecord['state'] | undefined;
  logBytes: number;
  baseImages: AttemptRecord['base_images'];
  acceptedAt: number | null;
}

interface TerminalSeen {
  state: string;
  result: string | null;
}

const ATTEMPT_FRAMES = new Set(['accept', 'reject', 'resolved', 'started', 'log', 'finished']);

export class InvariantChecker implements FrameObserver {
  private readonly lastState = new Map<string, string>();
  private readonly terminal = new Map<string, TerminalSeen>();
  private readonly buildTerminal = new Map<string, string>();
  /** Frames naming an attempt that was not current when they arrived (refused or harmless), by type. */
  readonly notCurrent: Record<string, number> = {};
  /** Frames that arrived on a connection that was no longer the agent's current one. */
  staleConnection = 0;

  constructor(
    private readonly w: World,
    private readonly builds: () => readonly BuildRecord[],
    private agents: AgentRegistry,
    private readonly produced: Map<string, Buffer[]>,
  ) {}

  /** The coordinator restarted: its agent registry is a new one. */
  setRegistry(agents: AgentRegistry): void {
    this.agents = agents;
  }

  private nodeKey(b: BuildRecord, n: NodeRecord): string {
    return `${this.w.aliasBuild(b.id)}/${n.name}`;
  }

  find(attemptId: string): Found | null {
    for (const build of this.builds()) {
      for (const node of build.nodes) {
        for (const attempt of node.attempts) if (attempt.id === attemptId) return { build, node, attempt };
      }
    }
    return null;
  }

  // ------------------------------------------------------------ every step

  checkStep(): void {
    const w = this.w;
    const live = new Map<string, AttemptRecord>();
    for (const b of this.builds()) {
      const ba = w.aliasBuild(b.id);
      const bt = this.buildTerminal.get(b.id);
      if (bt !== undefined && b.state !== bt) w.violate('terminal-stable', `build ${ba} was ${bt}, is now ${b.state}`);
      for (const n of b.nodes) {
        this.checkNode(b, n);
        for (const a of n.attempts) if (SLOT_HOLDING_ATTEMPT_STATES.has(a.state)) live.set(a.id, a);
      }
      if (bt === undefined && isBuildTerminal(b.state)) {
        this.buildTerminal.set(b.id, b.state);
        w.log(`build ${ba} -> ${b.state}`);
        const open = b.nodes.filter((n) => !isNodeTerminal(n.state));
        if (open.length > 0) w.violate('terminal-stable', `build ${ba} is ${b.state} with unfinished nodes ${open.map((n) => `${n.name}:${n.state}`).join(', ')}`);
      }
    }
    for (const entry of this.agents.all()) {
      for (const id of entry.running) {
        const a = live.get(id);
        if (!a) w.violate('slot-accounting', `agent ${entry.name} holds a slot for ${w.attempt(id)}, which ${this.find(id) ? `is ${this.find(id)!.attempt.state}` : 'is unknown'}`);
        else if (a.agent !== entry.name) w.violate('slot-accounting', `agent ${entry.name} holds a slot for ${w.attempt(id)}, an attempt of agent ${a.agent}`);
      }
      if (entry.maxJobs > 0 && entry.running.size > entry.maxJobs) w.violate('slot-accounting', `agent ${entry.name} holds ${entry.running.size} slots of ${entry.maxJobs}`);
    }
    this.checkBudgets();
    for (const a of live.values()) {
      if (!this.agents.get(a.agent)?.running.has(a.id)) w.violate('slot-accounting', `live attempt ${w.attempt(a.id)} (${a.state}) holds no slot of agent ${a.agent}`);
    }
  }

  /** Budgets (issue 11): no build holds more slots than its `concurrency`, no group more than its limit. */
  private checkBudgets(): void {
    const groups = new Map<string, { running: number; limit: number }>();
    for (const b of this.builds()) {
      let running = 0;
      for (const n of b.nodes) {
        const holding = n.attempts.filter((a) => SLOT_HOLDING_ATTEMPT_STATES.has(a.state)).length;
        running += holding;
        const group = n.concurrency_group ?? b.budget?.concurrency_group;
        if (group === undefined || holding === 0) continue;
        const limit = b.budget?.concurrency_groups?.[group] ?? 1;
        const g = groups.get(group) ?? { running: 0, limit };
        g.running += holding;
        g.limit = Math.max(g.limit, limit);
        groups.set(group, g);
      }
      const max = b.budget?.concurrency;
      if (max !== undefined && running > max) this.w.violate('budget', `build ${this.w.aliasBuild(b.id)} holds ${running} slots, its concurrency is ${max}`);
    }
    for (const [name, g] of groups) if (g.running > g.limit) this.w.violate('budget', `concurrency group ${name} holds ${g.running} slots, its limit is ${g.limit}`);
  }

  private checkNode(b: BuildRecord, n: NodeRecord): void {
    const w = this.w;
    const k = this.nodeKey(b, n);
    const prev = this.lastState.get(k);
    if (prev !== n.state) {
      w.log(`node ${k}: ${prev ?? '-'} -> ${n.state}${n.reason && isNodeTerminal(n.state) ? ` (${scrub(w, n.reason)})` : ''}`);
      this.lastState.set(k, n.state);
      if (n.state === 'failed' && n.reason && /the agent did not report/.test(n.reason)) {
        const last = n.attempts[n.attempts.length - 1];
        if (last && w.now - last.assigned_at < n.timeout_ms) {
          w.violate('no-early-timeout', `${k} failed as timed out ${w.now - last.assigned_at} ms after ${w.attempt(last.id)} was assigned; its timeout is ${n.timeout_ms} ms (the agent's clock said started_at ${last.started_at}, assigned_at ${last.assigned_at})`);
        }
      }
    }
    const last = n.attempts[n.attempts.length - 1];
    const successes = n.attempts.filter((a) => a.state === 'success');
    if (successes.length > 1) w.violate('one-result', `${k} has ${successes.length} successful attempts: ${successes.map((a) => w.attempt(a.id)).join(', ')}`);
    if (successes.length === 1 && (n.state !== 'success' || last !== successes[0])) {
      w.violate('one-result', `${k} is ${n.state} with successful attempt ${w.attempt(successes[0]!.id)} (latest attempt ${w.attempt(last?.id)})`);
    }
    if (n.state === 'success' && successes.length === 0 && !n.reused_from) w.violate('one-result', `${k} is success without a successful attempt or a reused result`);
    if (n.state === 'success' && successes.length === 1 && n.reused_from) w.violate('one-result', `${k} has its own successful attempt and a reused result`);

    const liveAttempts = n.attempts.filter((a) => SLOT_HOLDING_ATTEMPT_STATES.has(a.state));
    if (liveAttempts.length > 1) w.violate('one-live-attempt', `${k} has ${liveAttempts.length} live attempts: ${liveAttempts.map((a) => `${w.attempt(a.id)}:${a.state}`).join(', ')}`);
    if (liveAttempts.length === 1 && liveAttempts[0] !== last) w.violate('one-live-attempt', `${k}: live attempt ${w.attempt(liveAttempts[0]!.id)} is not the latest (${w.attempt(last?.id)})`);
    if ((n.state === 'assigned' || n.state === 'running') && liveAttempts.length === 0 && !n.waiting_on) {
      w.violate('one-live-attempt', `${k} is ${n.state} with no live attempt and no shared execution to wait for`);
    }
    if (n.state !== 'assigned' && n.state !== 'running' && liveAttempts.some((a) => a.state !== 'cancelling')) {
      w.violate('one-live-attempt', `${k} is ${n.state} but attempt ${w.attempt(liveAttempts[0]!.id)} is ${liveAttempts[0]!.state}`);
    }

    const budget = n.retry === false ? 1 : INFRA_BUDGET;
    const counted = n.attempts.slice(n.budget_from ?? 0);
    let infra = 0;
    let rejected = 0;
    counted.forEach((a, i) => {
      const after = counted.length - 1 - i;
      if (isInfraFailure(a)) {
        infra++;
        if (infra > budget) w.violate('attempt-budget', `${k}: ${infra} infrastructure failures, budget ${budget}${n.retry === false ? ' (retry: false)' : ''}`);
        else if (infra === budget && after > 0) w.violate('attempt-budget', `${k}: ${after} attempt(s) after the budget of ${budget} was used up by ${w.attempt(a.id)}`);
      }
    });
    counted.forEach((a, i) => {
      if (a.state !== 'rejected') return;
      rejected++;
      if (rejected > MAX_REJECTIONS) w.violate('attempt-budget', `${k}: ${rejected} rejections`);
      else if (rejected === MAX_REJECTIONS && i < counted.length - 1) w.violate('attempt-budget', `${k}: attempts after the ${MAX_REJECTIONS}rd rejection`);
    });

    const result = n.state === 'success' ? (successes[0]?.id ?? n.reused_from?.attempt_id ?? null) : null;
    const seen = this.terminal.get(k);
    if (isNodeTerminal(n.state)) {
      if (!seen) this.terminal.set(k, { state: n.state, result });
      else if (seen.state !== n.state || seen.result !== result) {
        w.violate('terminal-stable', `${k} was ${seen.state} (result ${w.attempt(seen.result ?? undefined)}), is now ${n.state} (result ${w.attempt(result ?? undefined)})`);
      }
    } else if (seen) {
      w.violate('terminal-stable', `${k} was ${seen.state}, is now ${n.state}`);
    }
  }

  /** An operator retried a node of `build`: what is not terminal any more may change again. */
  retried(build: BuildRecord): void {
    for (const n of build.nodes) if (!isNodeTerminal(n.state)) this.terminal.delete(this.nodeKey(build, n));
    if (!isBuildTerminal(build.state)) this.buildTerminal.delete(build.id);
  }

  // ------------------------------------------------------------ frames

  before(conn: SimConnection, frame: Frame): FrameSnap | null {
    const p = frame.payload as { attempt_id?: string };
    if (!ATTEMPT_FRAMES.has(frame.type) || !p.attempt_id) return null;
    const f = this.find(p.attempt_id);
    const a = f?.attempt;
    let why = '';
    if (!f || !a) why = 'unknown attempt';
    else if (f.node.attempts[f.node.attempts.length - 1] !== a) why = `not the latest attempt of its node (${this.w.attempt(f.node.attempts[f.node.attempts.length - 1]!.id)} is)`;
    else if (!SLOT_HOLDING_ATTEMPT_STATES.has(a.state)) why = `the attempt is ${a.state}`;
    else if (a.agent !== conn.agent || a.session !== conn.session) why = `the attempt belongs to ${a.agent} session ${a.session}, the frame came from session ${conn.session}`;
    if (why) this.notCurrent[frame.type] = (this.notCurrent[frame.type] ?? 0) + 1;
    if (conn.coordSession?.entry && this.agents.get(conn.agent) !== conn.coordSession?.entry) this.staleConnection++;
    return {
      type: frame.type,
      id: p.attempt_id,
      conn,
      current: why === '',
      why,
      state: a?.state,
      logBytes: a?.log_bytes ?? 0,
      baseImages: a?.base_images ?? null,
      acceptedAt: a?.accepted_at ?? null,
    };
  }

  after(token: unknown, ack: Payload<'ack'> | null): void {
    const s = token as FrameSnap | null;
    if (!s) return;
    const w = this.w;
    const a = this.find(s.id)?.attempt;
    if (s.type === 'finished' && !ack) w.violate('fenced', `finished of ${w.attempt(s.id)} from ${s.conn.label} got no ack (the agent would resend it forever)`);
    if (s.type === 'log' && ack?.log_offset !== undefined) {
      const produced = (this.produced.get(s.id) ?? []).reduce((n, b) => n + b.length, 0);
      if (ack.log_offset > produced) w.violate('log-complete', `log ack for ${w.attempt(s.id)} says ${ack.log_offset} bytes, the agent produced ${produced}`);
    }
    if (!a) return;
    let accepted = false;
    switch (s.type) {
      case 'started':
        accepted = s.state === 'assigned' && a.state === 'running';
        break;
      case 'finished':
        accepted = s.state !== undefined && SLOT_HOLDING_ATTEMPT_STATES.has(s.state) && !SLOT_HOLDING_ATTEMPT_STATES.has(a.state);
        break;
      case 'log':
        accepted = a.log_bytes > s.logBytes;
        break;
      case 'reject':
        accepted = s.state !== 'rejected' && a.state === 'rejected';
        break;
      case 'resolved':
        accepted = s.baseImages === null && a.base_images !== null;
        break;
      case 'accept':
        accepted = s.acceptedAt === null && a.accepted_at !== null;
        break;
    }
    if (accepted && !s.current) w.violate('fenced', `the engine acted on ${s.type} of ${w.attempt(s.id)} from ${s.conn.label}, which was not current: ${s.why}`);
  }

  // ------------------------------------------------------------ end of run

  /** Compares every attempt's stored log with what its agent produced (after the engine stopped). */
  async checkLogs(logs: LogStore): Promise<void> {
    const w = this.w;
    for (const b of this.builds()) {
      for (const n of b.nodes) {
        for (const a of n.attempts) {
          const alias = w.attempt(a.id);
          const produced = Buffer.concat(this.produced.get(a.id) ?? []);
          const file = await readFile(logs.attemptPath(b.id, n.name, a.number)).catch(() => null);
          if (!file) {
            if (a.state === 'success' && produced.length > 0) w.violate('log-complete', `${alias} succeeded but has no log file (the agent produced ${produced.length} bytes)`);
            continue;
          }
          const header = Buffer.from(a.log_header);
          if (!file.subarray(0, header.length).equals(header)) {
            w.violate('log-complete', `${alias}: the log file does not start with the attempt header`);
            continue;
          }
          const body = file.subarray(header.length);
          if (a.state === 'success') {
            if (!body.equals(produced)) w.violate('log-complete', `${alias}: stored ${body.length} log bytes, the agent produced ${produced.length}; first difference at byte ${firstDiff(body, produced)}`);
            continue;
          }
          let agentPart = body;
          if (a.state === 'reused') {
            const text = body.toString('latin1');
            const at = Math.max(text.lastIndexOf('[kiln] reused:'), text.lastIndexOf("[kiln] node '"));
            if (at >= 0) agentPart = body.subarray(0, at);
          }
          if (!produced.subarray(0, agentPart.length).equals(agentPart)) {
            w.violate('log-complete', `${alias} (${a.state}): the stored log (${agentPart.length} agent bytes) is not a prefix of what the agent produced (${produced.length} bytes); first difference at byte ${firstDiff(agentPart, produced)}`);
          }
        }
      }
    }
  }
}

function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}
