/**
 * The coordinator's engine: builds, nodes and attempts moving through their states
 * (shared/states.ts) in response to submissions, cancels, agent frames and time.
 *
 * Everything here runs on the event loop without awaiting between reading and changing
 * state, so each handler's changes are atomic; handlers then `await store.commit()`
 * before the caller acknowledges anything. Dispatch is push: whenever nodes become ready
 * or slots free up, `scheduleSoon()` places ready nodes on agents (scheduler.ts).
 *
 * Artifacts and reuse: when a node becomes ready its inputs' digests are known (the
 * outputs of the nodes it needs); the assignment carries them, and asks the agent to
 * `resolve` the node's base images first. With those the engine computes the node's
 * idempotency key (idempotency.ts) and either reuses an earlier successful attempt with
 * the same key (reuse-index.ts), lets the node follow an identical attempt that is being
 * built right now (shared execution), or lets the agent `proceed`. Every finished attempt
 * gets a provenance record in the CAS (provenance.ts).
 *
 * Faults: every dispatch is an attempt with its own id, and only the node's current
 * attempt on the agent (and agent process) it was given to can change the node (fencing,
 * `owned`). Infrastructure failures (a lost agent, an attempt not accepted in time, a
 * Docker Engine or disk failure the agent reports as `infra`, an agent that cancelled on
 * its own) queue the node again, preferably on another agent, until the node's attempt
 * budget (3; 1 with `retry: false`) is used up; then the node fails with `attempts
 * exhausted` and goes on the dead-letter list, from which an operator can retry it. The
 * agent's circuit breaker counts the failures of connected agents (see agent-registry.ts).
 * A failed build gets an error report, `builds/error-<id>.json` (error-report.ts).
 *
 * Emits `node` (buildId, nodeName) whenever a node changes state and `build` (buildId)
 * when a build's state changes, for live log and status followers.
 */
import { EventEmitter } from 'node:events';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  KilnError,
  SLOT_HOLDING_ATTEMPT_STATES,
  attemptTransition,
  deriveBuildState,
  formatDuration,
  isBuildTerminal,
  isNodeTerminal,
  newId,
  nodeTransition,
  type AttemptState,
  type Digest,
  type Frame,
  type HelloPayload,
  type NodeState,
  type Payload,
  type ErrorReportT,
  type PoolViewT,
  type ResolvedSpec,
} from '../../shared/index.js';
import type { AgentChannel, AgentEntry, AgentRegistry } from '../agents/agent-registry.js';
import type { LogStore } from '../logs/log-store.js';
import type { Cas } from '../cas/cas.js';
import { isInfraAttempt, summarize, type AgentControlRecord, type AttemptRecord, type BuildRecord, type BuildSummaryRecord, type DeadLetterRecord, type NodeRecord, type ReusedFrom } from '../state/records.js';
import { writeFileDurable } from '../state/durable-file.js';
import type { StateStore } from '../state/state-store.js';
import { buildGraph, countTransition, type BuildGraph } from './build-graph.js';
import { buildErrorReport } from './error-report.js';
import { idempotencyKey, specDigest } from './idempotency.js';
import { PoolStats, poolOf } from './pools.js';
import { provenanceRecord } from './provenance.js';
import type { ReuseIndex, ReuseRecord } from './reuse-index.js';
import { Scheduler, type ReadyRef } from './scheduler.js';

export interface EngineTimings {
  heartbeatIntervalMs: number;
  /** An agent silent (or disconnected) this long is lost. */
  lostAfterMs: number;
  /** After a coordinator restart, how long agents have to reclaim their attempts. */
  reconnectGraceMs: number;
  /** How long a cancelled attempt may take to confirm before its slot is freed anyway. */
  cancelGraceMs: number;
  /** Slack on top of a node's timeout before the coordinator gives up on the agent's report. */
  timeoutGraceMs: number;
  /** A connected agent that has not accepted an assignment this long never got it. */
  acceptTimeoutMs: number;
}

export interface EngineDeps {
  store: StateStore;
  logs: LogStore;
  cas: Cas;
  reuse: ReuseIndex;
  agents: AgentRegistry;
  logger: Logger;
  timings: EngineTimings;
  clock?: () => number;
  /** Runs placement "soon" (default setImmediate); a simulation passes its own queue. */
  defer?: (fn: () => void) => void;
}

interface ActiveAttempt {
  build: BuildRecord;
  node: NodeRecord;
  attempt: AttemptRecord;
}

export type HelloOutcome =
  | { ok: true; entry: AgentEntry; resume: Payload<'welcome'>['resume'] }
  | { ok: false; closeCode: number; reason: string };

const MAX_REJECTIONS = 3;
/** Attempts a node gets for infrastructure failures (lost agent, Docker down, disk full). */
export const INFRA_ATTEMPT_BUDGET = 3;
/** Attempts remembered as reported finished (for agents that reconnect after a lost ack). */
const MAX_RECORDED = 16_384;


export class Engine extends EventEmitter {
  private readonly store: StateStore;
  private readonly logs: LogStore;
  private readonly cas: Cas;
  private readonly reuse: ReuseIndex;
  readonly agents: AgentRegistry;
  private readonly log: Logger;
  private readonly t: EngineTimings;
  private readonly now: () => number;
  readonly scheduler: Scheduler;
  private readonly active = new Map<string, ActiveAttempt>();
  /** Idempotency key -> the attempt building it now (the leader of a shared execution). */
  private readonly inflight = new Map<string, ActiveAttempt>();
  /** Leader attempt id -> nodes waiting for its result. */
  private readonly followers = new Map<string, Array<{ build: BuildRecord; node: NodeRecord }>>();
  private readonly graphs = new WeakMap<BuildRecord, BuildGraph>();
  private readonly archiving = new Set<string>();
  private readonly avoid = new Map<string, Set<string>>();
  /** Agents where a node's attempt failed for infrastructure reasons: used for it only when nothing else is free. */
  private readonly preferNot = new Map<string, Set<string>>();
  private readonly poolStats = new PoolStats();
  private readonly defer: (fn: () => void) => void;
  private readonly ids: string[] = [];
  private scheduleQueued = false;
  /** Assignments placed since the last dispatch commit, sent once it is durable. */
  private unsent = new Map<string, { payload: Payload<'assign'> }>();
  /** Attempts whose assignment has not been sent yet (placed, commit in flight). */
  private readonly unsentAttempts = new Set<string>();
  /**
   * Attempts whose result an agent reported (`finished`), by id -> agent session: when an
   * agent reconnects still holding one (the ack was lost), it is told to send it again and
   * is acked, instead of being told to cancel work that was kept. Bounded (oldest dropped).
   */
  private readonly recorded = new Map<string, string>();
  /** The latest dispatch commit and its sends (settled()). */
  private lastDispatch: Promise<void> = Promise.resolve();
  /** Attempts told (durably) to build after the reuse check: a resent `resolved` gets `proceed` again. */
  private readonly decidedToBuild = new Set<string>();
  /** Durable assignments whose agent was between hello and welcome when they were due. */
  private readonly afterWelcome = new Map<string, Payload<'assign'>>();
  private stopped = false;
  /** Background work (archiving, log files) that shutdown waits for. */
  private readonly background = new Set<Promise<unknown>>();

  constructor(deps: EngineDeps) {
    super();
    this.setMaxListeners(0);
    this.store = deps.store;
    this.logs = deps.logs;
    this.cas = deps.cas;
    this.reuse = deps.reuse;
    this.agents = deps.agents;
    this.log = deps.logger;
    this.t = deps.timings;
    this.now = deps.clock ?? Date.now;
    this.defer = deps.defer ?? ((fn) => void setImmediate(fn));
    this.scheduler = new Scheduler(this.agents, this.now);
  }

  // ---------------------------------------------------------------- startup

  /**
   * Rebuilds the in-memory indexes from the loaded state: ready queues, active attempts
   * (their agents get `reconnectGraceMs` to come back and claim them) and the build list.
   */
  async recover(): Promise<void> {
    const now = this.now();
    this.ids.push(...this.store.data.builds.keys(), ...this.store.data.archived.keys());
    this.ids.sort();
    let changed = false;
    for (const build of this.store.data.builds.values()) {
      for (const node of build.nodes) {
        if (node.state === 'ready') this.enqueue(build, node);
        for (const attempt of node.attempts) {
          if (attempt.state === 'success' || attempt.state === 'failed') this.remember(attempt); // only an agent's `finished` makes these
          if (!SLOT_HOLDING_ATTEMPT_STATES.has(attempt.state)) continue;
          this.active.set(attempt.id, { build, node, attempt });
          const entry = this.agents.placeholder(attempt.agent, attempt.session, now, this.t.reconnectGraceMs);
          if (entry.session === attempt.session) {
            this.agents.hold(entry, attempt.id, attempt.gpus ?? [], now);
          } else {
            this.loseAttempt({ build, node, attempt }, 'the agent restarted while the coordinator was down');
            changed = true;
          }
        }
      }
      if (this.refreshBuildState(build)) changed = true;
    }
    for (const act of this.active.values()) {
      if (act.attempt.key !== null) this.inflight.set(act.attempt.key, act);
      // Resolved before the restart and still assigned: it was (or may as well be) told to build.
      if (act.attempt.state === 'assigned' && act.attempt.base_images !== null) this.decidedToBuild.add(act.attempt.id);
    }
    for (const build of this.store.data.builds.values()) {
      for (const node of build.nodes) {
        if (node.state !== 'running' || !node.waiting_on) continue;
        const leader = this.active.get(node.waiting_on);
        if (leader) this.follow(leader, build, node);
        else {
          // The leader finished while the coordinator was down: resolve the node again.
          node.waiting_on = null;
          this.makeReady(build, node, now);
          changed = true;
        }
      }
    }
    for (const [name, ctl] of this.store.data.agentControls) {
      const entry = this.agents.get(name);
      if (entry) entry.control = ctl.control;
    }
    if (changed) await this.store.commit();
    for (const build of this.store.data.builds.values()) this.maybeArchive(build);
  }

  /** Stops dispatching and waits for background work (archiving, log headers) to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  /** Resolves once background work (archiving, error reports, log files) started so far is done. */
  async idle(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  /** Resolves once placement queued so far has run and its assignments were sent (tests, simulations). */
  async settled(): Promise<void> {
    for (;;) {
      await new Promise((r) => setImmediate(r));
      if (this.scheduleQueued) continue;
      const last = this.lastDispatch;
      await last;
      if (!this.scheduleQueued && last === this.lastDispatch) return;
    }
  }

  private track(p: Promise<unknown>): void {
    const t = p.finally(() => this.background.delete(t));
    this.background.add(t);
  }

  // ---------------------------------------------------------------- queries

  buildIds(): readonly string[] {
    return this.ids;
  }

  /** A build that is not archived (yet), or undefined. */
  activeBuild(id: string): BuildRecord | undefined {
    return this.store.data.builds.get(id);
  }

  /** The list entry of a build (active: summarised now; archived: its index entry), or null. */
  buildSummary(id: string): BuildSummaryRecord | null {
    const active = this.store.data.builds.get(id);
    return active ? summarize(active) : (this.store.data.archived.get(id) ?? null);
  }

  /** What an operator set for an agent (paused or draining), or undefined when active. */
  agentControl(name: string): AgentControlRecord | undefined {
    return this.store.data.agentControls.get(name);
  }

  async getBuild(id: string): Promise<BuildRecord | null> {
    return this.store.getBuild(id);
  }

  /** Pins or unpins a build's artifacts; resolves once durable. */
  async setPinned(id: string, pinned: boolean): Promise<BuildRecord | null> {
    return this.store.setPinned(id, pinned);
  }

  graph(build: BuildRecord): BuildGraph {
    let g = this.graphs.get(build);
    if (!g) {
      g = buildGraph(build);
      this.graphs.set(build, g);
    }
    return g;
  }

  activeAttempts(): number {
    return this.active.size;
  }

  // ---------------------------------------------------------------- API actions

  /** Creates a build from a validated spec; resolves after it is durable. */
  async submit(spec: ResolvedSpec, opts: { reuse?: boolean } = {}): Promise<BuildRecord> {
    const now = this.now();
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
      nodes: spec.nodes.map((n) => ({
        ...n,
        state: 'pending' as NodeState,
        attempts: [],
        ready_at: null,
        started_at: null,
        finished_at: null,
        reason: null,
        reused_from: null,
        waiting_on: null,
      })),
    };
    this.store.data.builds.set(id, build);
    this.store.markNew(id);
    this.cas.touch(spec.nodes.flatMap((n) => [...(n.context ? [n.context] : []), ...n.inputs.flatMap((i) => (i.digest ? [i.digest] : []))]));
    this.ids.push(id);
    for (const node of build.nodes) {
      if (node.needs.length === 0) this.makeReady(build, node, now);
    }
    await this.store.commit();
    this.emit('build', id);
    this.scheduleSoon();
    return build;
  }

  /** Cancels every unfinished node; running ones get a `cancel` frame. */
  async cancel(id: string): Promise<BuildRecord> {
    const build = this.store.data.builds.get(id);
    if (!build) {
      const archived = this.store.data.archived.get(id);
      if (archived) throw new KilnError('E_CONFLICT', `build ${id} already finished (${archived.state}); nothing to cancel`);
      throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    }
    if (isBuildTerminal(build.state)) throw new KilnError('E_CONFLICT', `build ${id} already finished (${build.state}); nothing to cancel`);
    const now = this.now();
    build.cancel_requested = true;
    this.store.markBuild(id);
    for (const node of build.nodes) {
      if (isNodeTerminal(node.state)) continue;
      const current = node.attempts[node.attempts.length - 1];
      if ((node.state === 'assigned' || node.state === 'running') && current && SLOT_HOLDING_ATTEMPT_STATES.has(current.state)) {
        // The engine's own record of the attempt (finishAttempt matches shared-execution leaders by identity).
        this.cancelAttempt(this.active.get(current.id) ?? { build, node, attempt: current }, 'the build was cancelled');
      }
      this.setNode(build, node, 'cancelled', now, 'the build was cancelled');
    }
    this.refreshBuildState(build);
    await this.store.commit();
    this.maybeArchive(build);
    return build;
  }

  /**
   * Runs a failed node again (an operator's retry, e.g. from the dead-letter list): the
   * node becomes `ready` with a fresh attempt budget, the nodes skipped because of it
   * become `pending`, and a finished build is made active again. Resolves once durable.
   */
  async retryNode(buildId: string, nodeName: string): Promise<BuildRecord> {
    while (this.archiving.has(buildId)) await Promise.allSettled([...this.background]);
    const found = this.store.data.builds.get(buildId) ?? (await this.store.getBuild(buildId));
    if (!found) throw new KilnError('E_NOT_FOUND', `build ${buildId} not found`);
    const probe = found.nodes.find((n) => n.name === nodeName);
    if (!probe) throw new KilnError('E_NOT_FOUND', `build ${buildId} has no node '${nodeName}' (nodes: ${found.nodes.map((n) => n.name).slice(0, 20).join(', ')})`);
    if (found.cancel_requested) throw new KilnError('E_CONFLICT', `build ${buildId} was cancelled; submit it again instead`);
    if (probe.state !== 'failed') throw new KilnError('E_CONFLICT', `node '${nodeName}' of build ${buildId} is ${probe.state}; only a failed node can be retried`);
    while (this.archiving.has(buildId)) await Promise.allSettled([...this.background]);
    const build = this.store.data.builds.get(buildId) ?? (await this.store.revive(buildId));
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${buildId} not found`);
    const g = this.graph(build);
    const node = g.byName.get(nodeName)!;
    if (node.state !== 'failed') throw new KilnError('E_CONFLICT', `node '${nodeName}' of build ${buildId} is ${node.state}; only a failed node can be retried`);
    const inputs = this.inputDigests(build, node);
    if (typeof inputs === 'string') throw new KilnError('E_CONFLICT', `node '${nodeName}' cannot run: ${inputs}`);
    const gone = [...(node.context ? [node.context] : []), ...Object.values(inputs)].filter((d) => !this.cas.has(d as Digest));
    if (gone.length > 0) throw new KilnError('E_CONFLICT', `node '${nodeName}' cannot run again: ${gone.join(', ')} ${gone.length > 1 ? 'are' : 'is'} no longer in the CAS (retention); submit the build again`);
    const now = this.now();
    node.retries = (node.retries ?? 0) + 1;
    node.budget_from = node.attempts.length;
    node.reason = null;
    node.finished_at = null;
    this.avoid.delete(`${buildId}/${nodeName}`);
    this.preferNot.delete(`${buildId}/${nodeName}`);
    this.makeReady(build, node, now);
    // Nodes skipped because of it wait again, if nothing else they need failed.
    const back = new Set([nodeName]);
    for (let changed = true; changed; ) {
      changed = false;
      for (const d of build.nodes) {
        if (d.state !== 'skipped' || !d.needs.some((n) => back.has(n))) continue;
        // Back unless something else it needs failed for good (needs still on their way are fine).
        if (d.needs.some((n) => !back.has(n) && ['failed', 'skipped', 'cancelled'].includes(g.byName.get(n)?.state ?? 'failed'))) continue;
        this.setNode(build, d, 'pending', now);
        d.reason = null;
        d.finished_at = null;
        back.add(d.name);
        changed = true;
      }
    }
    const key = `${buildId}/${nodeName}`;
    if (this.store.data.deadLetter.delete(key)) {
      this.store.markDeadLetter(key);
    }
    build.finished_at = null;
    this.store.markBuild(buildId);
    this.refreshBuildState(build);
    await this.store.commit();
    if (this.store.persist) await unlink(this.errorReportPath(buildId)).catch(() => {});
    this.log.info({ build: buildId, node: nodeName, retries: node.retries }, 'node retried');
    this.emit('build', buildId);
    this.scheduleSoon();
    return build;
  }

  /** The dead-letter list: nodes whose infrastructure failures used up their attempt budget, newest first. */
  deadLetters(): DeadLetterRecord[] {
    return [...this.store.data.deadLetter.values()].sort((a, b) => b.at - a.at || (a.build_id < b.build_id ? 1 : -1));
  }

  /** Why a build failed (null when no node failed). Throws E_NOT_FOUND for an unknown build. */
  async errorReport(buildId: string): Promise<ErrorReportT | null> {
    const build = await this.store.getBuild(buildId);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${buildId} not found`);
    return buildErrorReport(build, this.logs, this.store.data.deadLetter);
  }

  errorReportPath(buildId: string): string {
    return join(this.store.archiveDir, `error-${buildId}.json`);
  }

  /** Per-pool queue depth, wait times, running counts and agents. */
  pools(): PoolViewT[] {
    const nodes: NodeRecord[] = [];
    for (const b of this.store.data.builds.values()) for (const n of b.nodes) if (!isNodeTerminal(n.state)) nodes.push(n);
    return this.poolStats.view(this.agents, nodes, this.now());
  }

  /** Pauses, drains or resumes an agent (operator action); persisted, so it survives a restart. */
  async setAgentControl(name: string, control: 'active' | 'paused' | 'draining', reason: string | null): Promise<AgentEntry> {
    const entry = this.agents.get(name);
    if (!entry) throw new KilnError('E_NOT_FOUND', `agent '${name}' is not known to this coordinator`);
    entry.control = control;
    const controls = this.store.data.agentControls;
    if (control === 'active') controls.delete(name);
    else controls.set(name, { control, at: this.now(), reason });
    this.store.markControl(name);
    await this.store.commit();
    this.log.info({ agent: name, control, reason }, control === 'active' ? 'agent resumed' : `agent ${control === 'paused' ? 'paused' : 'draining'}`);
    if (control === 'active') this.scheduleSoon();
    return entry;
  }

  // ---------------------------------------------------------------- agents

  /**
   * Handles an accepted hello (the version was already negotiated): registers the agent,
   * decides for each attempt it reports whether it continues, and releases the attempts
   * it held before but no longer reports.
   */
  async hello(hello: HelloPayload, channel: AgentChannel): Promise<HelloOutcome> {
    const now = this.now();
    const existing = this.agents.get(hello.name);
    if (existing && existing.state === 'connected' && existing.session !== hello.session) {
      return { ok: false, closeCode: 4009, reason: `agent name '${hello.name}' is in use by another connected agent process` };
    }
    if (existing?.state === 'connected' && existing.channel) existing.channel.close(4010, 'replaced by a newer connection of the same agent');
    const { entry } = this.agents.connect(hello, channel, now);
    entry.control = this.store.data.agentControls.get(hello.name)?.control ?? 'active';
    if (hello.health) entry.health = hello.health;
    const reported = new Map(hello.running.map((r) => [r.attempt_id, r]));
    const resume: Payload<'welcome'>['resume'] = [];
    let changed = false;
    for (const attemptId of [...entry.running]) {
      const act = this.active.get(attemptId);
      if (!act) {
        this.agents.release(entry.name, attemptId);
        continue;
      }
      if (act.attempt.session === hello.session && this.unsentAttempts.has(attemptId)) {
        // Placed on this agent process while it reconnected; the assignment goes out on the new connection.
        continue;
      }
      if (act.attempt.session === hello.session && reported.has(attemptId)) {
        const offset = await this.logs.agentBytes(this.logRef(act));
        act.attempt.log_bytes = offset;
        // The agent has it, so it was accepted even if that frame was lost.
        act.attempt.accepted_at ??= now;
        const cancelling = act.attempt.state === 'cancelling';
        resume.push({ attempt_id: attemptId, action: cancelling ? 'cancel' : 'continue', log_offset: offset });
        reported.delete(attemptId);
        if (cancelling) {
          // A `cancel` decision makes the agent drop the attempt without a report: it is done now.
          this.finishAttempt(act, 'cancelled', now, { reason: act.attempt.reason });
          changed = true;
        }
      } else {
        const why = act.attempt.session !== hello.session ? 'the agent restarted' : 'the agent reconnected without it';
        this.loseAttempt(act, why);
        changed = true;
      }
    }
    for (const r of reported.values()) {
      // Its result is recorded (the ack was lost): `continue` makes the agent resend `finished`, which is acked.
      const kept = this.recorded.get(r.attempt_id) === hello.session;
      resume.push({ attempt_id: r.attempt_id, action: kept ? 'continue' : 'cancel', log_offset: r.log_bytes });
    }
    if (changed) {
      await this.store.commit();
      for (const b of this.store.data.builds.values()) this.maybeArchive(b);
    }
    this.log.info({ agent: hello.name, platforms: hello.platforms, max_jobs: hello.max_jobs, resumed: resume.length }, 'agent connected');
    this.scheduleSoon();
    return { ok: true, entry, resume };
  }

  /** The welcome was sent on this connection: the agent may now be given work. */
  welcomed(entry: AgentEntry, channel: AgentChannel): void {
    if (entry.channel !== channel || entry.state !== 'connected') return;
    entry.welcomed = true;
    for (const [attemptId, payload] of this.afterWelcome) {
      const act = this.active.get(attemptId);
      if (!act || act.attempt.agent !== entry.name) continue;
      this.afterWelcome.delete(attemptId);
      if (act.attempt.state === 'assigned' && act.attempt.session === entry.session) channel.send('assign', payload);
    }
    this.scheduleSoon();
  }

  /** The agent's socket closed: its attempts wait `lostAfterMs` for it to come back; one that shut down cleanly has left. */
  disconnected(entry: AgentEntry, channel: AgentChannel, how: 'dropped' | 'shutdown' = 'dropped'): void {
    if (entry.channel !== channel || entry.state !== 'connected') return;
    entry.state = 'disconnected';
    entry.welcomed = false;
    entry.channel = null;
    // Nothing waits for a departed agent; attempts it still held are lost at the next sweep.
    entry.lostAt = how === 'dropped' ? this.now() + this.t.lostAfterMs : entry.running.size > 0 ? this.now() : null;
    if (how === 'shutdown') this.log.info({ agent: entry.name, running: entry.running.size }, `agent ${entry.name} left (shut down)`);
    else this.log.warn({ agent: entry.name, running: entry.running.size }, 'agent disconnected');
  }

  /** Any frame from the agent proves it alive. */
  seen(entry: AgentEntry): void {
    entry.lastSeenAt = this.now();
  }

  /**
   * Handles one validated frame from a connected agent. Returns the ack to send (after
   * any commit), or null. Frames naming an attempt that is not this agent's current
   * attempt are refused and the agent is told to cancel it.
   */
  async frame(entry: AgentEntry, frame: Frame): Promise<Payload<'ack'> | null> {
    this.seen(entry);
    switch (frame.type) {
      case 'heartbeat': {
        const wasAccepting = entry.health.accepting;
        this.agents.setHeartbeat(entry, frame.payload, this.now());
        if (entry.health.accepting !== wasAccepting) {
          this.log.info({ agent: entry.name, accepting: entry.health.accepting, problem: entry.health.problem }, entry.health.accepting ? 'agent takes work again' : 'agent takes no work');
          if (entry.health.accepting) this.scheduleSoon();
        }
        return { ref: frame.id };
      }
      case 'accept': {
        const act = this.owned(entry, frame.payload.attempt_id);
        if (act) {
          act.attempt.accepted_at = this.now();
          this.store.markNode(act.build.id, act.node.name);
        }
        return null;
      }
      case 'reject':
        await this.onReject(entry, frame.payload.attempt_id, frame.payload.reason);
        return null;
      case 'resolved':
        await this.onResolved(entry, frame.payload);
        return null;
      case 'started':
        await this.onStarted(entry, frame.payload.attempt_id);
        return null;
      case 'log': {
        const act = this.owned(entry, frame.payload.attempt_id);
        if (!act) return null;
        const written = await this.logs.append(this.logRef(act), frame.payload.offset, frame.payload.data);
        act.attempt.log_bytes = Math.max(act.attempt.log_bytes, written);
        return { ref: frame.id, attempt_id: act.attempt.id, log_offset: written };
      }
      case 'finished':
        return this.onFinished(entry, frame.id, frame.payload);
      case 'ack':
      case 'error':
        if (frame.type === 'error') this.log.warn({ agent: entry.name, ...frame.payload }, 'agent reported an error');
        return null;
      default:
        return null;
    }
  }

  private owned(entry: AgentEntry, attemptId: string): ActiveAttempt | null {
    const act = this.active.get(attemptId);
    if (act && act.attempt.agent === entry.name && act.attempt.session === entry.session) return act;
    // Fencing: an attempt that is not current on this agent must not run.
    entry.channel?.send('cancel', { attempt_id: attemptId, reason: 'this attempt is no longer current on this agent' });
    return null;
  }

  private async onReject(entry: AgentEntry, attemptId: string, reason: string): Promise<void> {
    const act = this.owned(entry, attemptId);
    if (!act || (act.attempt.state !== 'assigned' && act.attempt.state !== 'cancelling')) return; // a started attempt cannot be rejected
    const { build, node, attempt } = act;
    const now = this.now();
    if (attempt.state === 'cancelling') {
      // Cancelled while the assignment was on its way: the reject is the agent's confirmation.
      this.finishAttempt(act, 'cancelled', now, { reason: attempt.reason });
      this.refreshBuildState(build);
      await this.store.commit();
      this.maybeArchive(build);
      this.scheduleSoon();
      return;
    }
    this.finishAttempt(act, 'rejected', now, { reason: `rejected by agent ${entry.name}: ${reason}` });
    if (node.state === 'assigned') {
      // Offered elsewhere first; the same agent only when nobody else can take it (it may
      // have rejected for a passing reason), and after MAX_REJECTIONS the node fails.
      const key = `${build.id}/${node.name}`;
      const preferNot = this.preferNot.get(key) ?? new Set<string>();
      preferNot.add(entry.name);
      this.preferNot.set(key, preferNot);
      const rejections = node.attempts.slice(node.budget_from ?? 0).filter((a) => a.state === 'rejected').length;
      this.requeueOrFail(build, node, now, rejections < MAX_REJECTIONS, `rejected ${rejections} times; last: ${attempt.reason}`);
    }
    this.refreshBuildState(build);
    await this.store.commit();
    this.maybeArchive(build);
    this.scheduleSoon();
  }

  private async onStarted(entry: AgentEntry, attemptId: string): Promise<void> {
    const act = this.owned(entry, attemptId);
    if (!act || act.attempt.state !== 'assigned') return;
    act.attempt.state = attemptTransition(act.attempt.state, 'running');
    // The coordinator's clock, not the frame's `at`: deadlines must not depend on the agent's clock.
    act.attempt.started_at = this.now();
    this.store.markNode(act.build.id, act.node.name);
    if (act.node.state === 'assigned') {
      this.setNode(act.build, act.node, 'running', this.now());
      act.node.started_at = act.attempt.started_at;
    }
    await this.store.commit();
  }

  private async onFinished(entry: AgentEntry, ref: number, p: Payload<'finished'>): Promise<Payload<'ack'>> {
    const ack = { ref, attempt_id: p.attempt_id };
    const act = this.active.get(p.attempt_id);
    if (!act || act.attempt.agent !== entry.name || act.attempt.session !== entry.session) {
      // Already recorded (a resend after a lost ack) or fenced: ack so the agent stops
      // resending, but only once what was recorded is on disk (the first copy's commit may
      // still be in flight: an agent that drops its result on this ack must not lose it).
      return this.ackWhenDurable(ack);
    }
    // Every log chunk sent before `finished` is written before the node turns terminal,
    // so a follower that sees the node done has all of its log.
    await this.logs.close(this.logRef(act));
    if (this.active.get(p.attempt_id) !== act) return this.ackWhenDurable(ack); // changed while the log was flushed (e.g. recorded from a resend)
    const { build, node, attempt } = act;
    // Known from now on (in memory): an agent that reconnects holding it is told to send it
    // again, and that resend is acked only once this result is on disk (ackWhenDurable).
    this.remember(attempt);
    const wasCancelling = attempt.state === 'cancelling';
    // An agent that cancels on its own (shut down) gives the node back: an infrastructure failure.
    const agentCancelled = !wasCancelling && p.status === 'cancelled';
    let status: AttemptState = wasCancelling || agentCancelled ? 'cancelled' : p.status;
    let error = p.error;
    if (status === 'success') {
      const problem = this.outputsProblem(node, p.outputs);
      if (problem) {
        status = 'failed';
        error = problem;
      }
    }
    attempt.exit_code = p.exit_code;
    attempt.error = error;
    attempt.failed_step = p.failed_step;
    attempt.infra = p.infra || agentCancelled;
    attempt.test_exit_code = p.test_exit_code ?? null;
    attempt.image_id = p.image_id;
    attempt.fetch_ms = p.timings.fetch_ms;
    attempt.build_ms = p.timings.build_ms;
    attempt.started_at ??= p.timings.started_at;
    attempt.log_bytes = Math.max(attempt.log_bytes, p.log_bytes);
    attempt.outputs = status === 'success' ? p.outputs : [];
    if (attempt.base_images === null && p.base_images.length > 0) attempt.base_images = p.base_images;
    attempt.dockerfile_digest ??= p.dockerfile_digest;
    if (attempt.key === null && attempt.spec_digest !== null && attempt.base_images !== null) attempt.key = idempotencyKey(attempt.spec_digest, attempt.base_images);
    // An executor that builds nothing (benchmarks) leaves no provenance.
    if (!wasCancelling && entry.hello?.executor !== 'noop') {
      await this.recordProvenance(act, status, this.now());
      if (this.active.get(p.attempt_id) !== act) return this.ackWhenDurable(ack);
      if (status === 'success' && attempt.key !== null) {
        await this.reuse.put(reuseRecordOf(build, node, attempt)).catch((err: unknown) => this.log.error({ err, attempt: attempt.id }, 'writing the reuse record failed'));
        if (this.active.get(p.attempt_id) !== act) return this.ackWhenDurable(ack);
      }
    }
    const now = this.now();
    const infraFailure = !wasCancelling && (agentCancelled || (status === 'failed' && p.infra));
    // The breaker hears the verdict while the attempt still holds its slot (so it knows a trial's).
    // An agent shutting down is not a broken host: its cancels do not feed the breaker.
    if (infraFailure && !agentCancelled) this.agents.recordInfraFailure(entry.name, now);
    else if (!wasCancelling) this.agents.recordHealthy(entry.name, now, attempt.id);
    this.finishAttempt(act, status, now, wasCancelling ? { reason: attempt.reason } : agentCancelled ? { reason: `agent ${entry.name} cancelled the build on its own (${p.error ?? 'shutting down'})` } : {});
    if (!wasCancelling && (node.state === 'assigned' || node.state === 'running')) {
      node.started_at ??= attempt.started_at ?? now;
      if (status === 'success') {
        this.setNode(build, node, 'success', now);
        this.releaseDependents(build, node, now);
      } else if (infraFailure) {
        this.retryOrExhaust(build, node, attempt, now, attempt.reason ?? `infrastructure failure on agent ${entry.name}: ${error ?? 'no detail'}`);
      } else {
        this.setNode(build, node, 'failed', now, null);
        this.skipDownstream(build, node, now);
      }
    }
    this.refreshBuildState(build);
    // The freed slot and released dependents may be placed before this result is durable
    // (their assignments leave only after a later commit); the ack to the agent waits for it.
    this.scheduleSoon();
    await this.store.commit();
    this.maybeArchive(build);
    return ack;
  }

  /** An ack for a result handled elsewhere: sent once everything recorded so far is on disk. */
  private async ackWhenDurable(ack: Payload<'ack'>): Promise<Payload<'ack'>> {
    await this.store.commit();
    return ack;
  }

  private remember(attempt: AttemptRecord): void {
    this.recorded.set(attempt.id, attempt.session);
    if (this.recorded.size > MAX_RECORDED) this.recorded.delete(this.recorded.keys().next().value!);
  }

  /** Why a successful attempt's outputs are not acceptable (undeclared, missing, not in the CAS), or null. */
  private outputsProblem(node: NodeRecord, outputs: Payload<'finished'>['outputs']): string | null {
    const got = new Map(outputs.map((o) => [o.name, o]));
    for (const o of node.outputs) {
      const a = got.get(o.name);
      if (!a) return `the agent reported no artifact for output '${o.name}' (${o.path})`;
      if (!this.cas.has(a.digest as Digest)) return `output '${o.name}' (${a.digest}) was not uploaded to the CAS`;
    }
    for (const name of got.keys()) if (!node.outputs.some((o) => o.name === name)) return `the agent reported an undeclared output '${name}'`;
    return null;
  }

  private async recordProvenance(act: ActiveAttempt, status: AttemptState, now: number): Promise<void> {
    const { build, node, attempt } = act;
    try {
      const rec = provenanceRecord(build, node, { ...attempt, state: status, finished_at: now }, this.agents.get(attempt.agent)?.hello ?? null);
      await this.cas.putBuffer(rec.digest, rec.bytes);
      attempt.provenance = rec.digest;
    } catch (err) {
      this.log.error({ err, attempt: attempt.id }, 'storing the provenance record failed');
    }
  }

  // ---------------------------------------------------------------- reuse

  /**
   * The agent resolved the node's base images: compute the idempotency key, then reuse an
   * earlier result, follow an identical attempt in flight, or tell the agent to proceed.
   */
  private async onResolved(entry: AgentEntry, p: Payload<'resolved'>): Promise<void> {
    const act = this.owned(entry, p.attempt_id);
    if (!act || act.attempt.state !== 'assigned') return;
    const { attempt } = act;
    if (attempt.base_images !== null) {
      // A resend (after a reconnect). Once the decision to build is durable, say it again;
      // while it is being made, the handler making it sends `proceed` when it is durable.
      if (this.decidedToBuild.has(attempt.id)) this.sendProceed(act);
      return;
    }
    attempt.base_images = p.base_images;
    attempt.dockerfile_digest = p.dockerfile_digest;
    attempt.key = attempt.spec_digest !== null ? idempotencyKey(attempt.spec_digest, p.base_images) : null;
    this.store.markNode(act.build.id, act.node.name);
    const key = attempt.key;
    if (key !== null && this.reuseAllowed(act.build, act.node)) {
      const rec = await this.reuse.get(key).catch((err: unknown) => {
        this.log.error({ err, key }, 'reading the reuse index failed; building');
        return null;
      });
      if (this.active.get(attempt.id) !== act || attempt.state !== 'assigned') return;
      if (rec && rec.platform === act.node.platform && rec.outputs.every((o) => this.cas.has(o.digest as Digest))) {
        // The log says why nothing was built before the node turns terminal (followers read it then).
        await this.writeLogNote(act, `[kiln] reused: node '${rec.node}' of build ${rec.build_id} (attempt ${rec.attempt_number}) built the same thing (key ${rec.key}); nothing was built. Its log: kiln logs ${rec.build_id} ${rec.node}\n`);
        if (this.active.get(attempt.id) !== act || attempt.state !== 'assigned') return;
        this.reuseResult(act, rec);
        await this.store.commit();
        return;
      }
      const leader = this.inflight.get(key);
      if (leader && leader !== act && this.active.get(leader.attempt.id) === leader && leader.attempt.state !== 'cancelling') {
        await this.writeLogNote(
          act,
          `[kiln] node '${leader.node.name}' of build ${leader.build.id} (attempt ${leader.attempt.number}) is building the same thing right now (key ${key}); waiting for its result instead of building. Its log: kiln logs ${leader.build.id} ${leader.node.name}\n`,
        );
        if (this.active.get(attempt.id) !== act || attempt.state !== 'assigned') return;
        if (this.inflight.get(key) === leader && (leader.attempt.state as AttemptState) !== 'cancelling') {
          this.shareExecution(act, leader);
          await this.store.commit();
          return;
        }
      }
    }
    if (key !== null && !this.inflight.has(key)) this.inflight.set(key, act);
    // The decision to build is durable before the agent hears it.
    await this.store.commit();
    if (this.active.get(attempt.id) !== act || attempt.state !== 'assigned') return;
    this.decidedToBuild.add(attempt.id);
    this.sendProceed(act);
  }

  /** Tells the attempt's agent (its current connection, when welcomed) to build. */
  private sendProceed(act: ActiveAttempt): void {
    const agent = this.agents.get(act.attempt.agent);
    if (agent?.state === 'connected' && agent.welcomed && agent.session === act.attempt.session) agent.channel?.send('proceed', { attempt_id: act.attempt.id });
  }

  /**
   * Writes a coordinator note as the attempt's whole log (an attempt that builds nothing
   * gets no bytes from its agent) and flushes it, before the node changes state.
   */
  private async writeLogNote(act: ActiveAttempt, text: string): Promise<void> {
    try {
      await this.logs.appendNote(this.logRef(act), text);
      await this.logs.close(this.logRef(act));
    } catch (err) {
      this.log.warn({ err, attempt: act.attempt.id }, 'writing the attempt log note failed');
    }
  }

  private reuseAllowed(build: BuildRecord, node: NodeRecord): boolean {
    return build.reuse !== false && node.reuse !== false && !node.no_cache;
  }

  /** Ends the attempt as `reused` and the node as `success` with the earlier result. */
  private reuseResult(act: ActiveAttempt, rec: ReuseRecord): void {
    const { build, node, attempt } = act;
    const now = this.now();
    const from: ReusedFrom = { build_id: rec.build_id, node: rec.node, attempt_id: rec.attempt_id, attempt_number: rec.attempt_number };
    this.fillReused(attempt, from, rec.image_id, rec.outputs, rec.provenance);
    this.agents.get(attempt.agent)?.channel?.send('cancel', { attempt_id: attempt.id, reason: `reused the result of ${rec.build_id}/${rec.node}` });
    this.finishAttempt(act, 'reused', now, { reason: `reused the result of ${rec.build_id}/${rec.node} attempt ${rec.attempt_number}` });
    node.started_at ??= now;
    node.reused_from = from;
    this.setNode(build, node, 'success', now);
    this.releaseDependents(build, node, now);
    this.refreshBuildState(build);
    this.scheduleSoon();
    this.maybeArchive(build);
  }

  private fillReused(attempt: AttemptRecord, from: ReusedFrom, imageId: string | null, outputs: AttemptRecord['outputs'], provenance: string | null): void {
    attempt.reused_from = from;
    attempt.image_id = imageId;
    attempt.outputs = outputs;
    attempt.provenance = provenance;
  }

  /** Shared execution: the node waits for `leader`, an attempt of an identical node being built now. */
  private shareExecution(act: ActiveAttempt, leader: ActiveAttempt): void {
    const { build, node, attempt } = act;
    const now = this.now();
    const where = `node '${leader.node.name}' of build ${leader.build.id} (attempt ${leader.attempt.number})`;
    this.agents.get(attempt.agent)?.channel?.send('cancel', { attempt_id: attempt.id, reason: `shares the execution of ${leader.build.id}/${leader.node.name}` });
    attempt.reused_from = { build_id: leader.build.id, node: leader.node.name, attempt_id: leader.attempt.id, attempt_number: leader.attempt.number };
    this.finishAttempt(act, 'reused', now, { reason: `shares the execution of ${where}` });
    node.started_at ??= now;
    if (node.state === 'assigned') this.setNode(build, node, 'running', now);
    this.follow(leader, build, node);
  }

  private follow(leader: ActiveAttempt, build: BuildRecord, node: NodeRecord): void {
    node.waiting_on = leader.attempt.id;
    this.store.markNode(build.id, node.name);
    const list = this.followers.get(leader.attempt.id) ?? [];
    list.push({ build, node });
    this.followers.set(leader.attempt.id, list);
  }

  /** The leader of a shared execution ended: its followers succeed, fail or are queued again. */
  private settleFollowers(leader: ActiveAttempt, to: AttemptState, now: number): void {
    const list = this.followers.get(leader.attempt.id);
    this.followers.delete(leader.attempt.id);
    if (!list) return;
    const la = leader.attempt;
    for (const { build, node } of list) {
      if (node.state !== 'running' || node.waiting_on !== la.id) continue;
      node.waiting_on = null;
      const mine = node.attempts[node.attempts.length - 1];
      const from: ReusedFrom = { build_id: leader.build.id, node: leader.node.name, attempt_id: la.id, attempt_number: la.number };
      if (to === 'success') {
        if (mine) this.fillReused(mine, from, la.image_id, la.outputs, la.provenance);
        node.reused_from = from;
        this.setNode(build, node, 'success', now);
        this.releaseDependents(build, node, now);
      } else if (to === 'failed' && !la.infra) {
        this.setNode(build, node, 'failed', now, `the identical node '${leader.node.name}' of build ${leader.build.id} failed: ${la.error ?? 'failed'}`);
        this.skipDownstream(build, node, now);
      } else {
        this.makeReady(build, node, now);
      }
      this.refreshBuildState(build);
      this.maybeArchive(build);
    }
    this.scheduleSoon();
  }

  // ---------------------------------------------------------------- time

  /** Periodic checks: lost agents, unconfirmed cancels, attempts past their deadline. */
  async sweep(): Promise<void> {
    const now = this.now();
    let changed = false;
    // A circuit breaker that let its cool-down pass offers a trial slot.
    if (this.agents.tick(now)) this.scheduleSoon();
    for (const entry of [...this.agents.all()]) {
      if (entry.state === 'connected' && now - entry.lastSeenAt > this.t.lostAfterMs) {
        entry.channel?.close(4008, `no frame for ${formatDuration(now - entry.lastSeenAt)}`);
        changed = this.agentLost(entry, `agent ${entry.name} was silent for ${formatDuration(now - entry.lastSeenAt)}`) || changed;
      } else if (entry.state === 'disconnected' && entry.lostAt !== null && entry.lostAt <= now) {
        // An agent known only from the state file (never connected since the restart) had the reconnect grace.
        const why = entry.hello === null ? `did not reconnect within the reconnect grace (${formatDuration(this.t.reconnectGraceMs)}) after the coordinator restarted` : `disconnected and did not come back within ${formatDuration(this.t.lostAfterMs)}`;
        changed = this.agentLost(entry, `agent ${entry.name} ${why}`) || changed;
      }
    }
    for (const act of [...this.active.values()]) {
      const a = act.attempt;
      const agent = this.agents.get(a.agent);
      if (a.state === 'assigned' && a.accepted_at === null && agent?.state === 'connected' && now - a.assigned_at > this.t.acceptTimeoutMs) {
        // The assignment never arrived (or the agent ignored it): offer the node again.
        agent.channel?.send('cancel', { attempt_id: a.id, reason: 'not accepted in time' });
        this.agents.recordInfraFailure(a.agent, now);
        this.loseAttempt(act, `agent ${a.agent} did not accept the assignment within ${formatDuration(this.t.acceptTimeoutMs)}`);
        changed = true;
      } else if (a.state === 'cancelling' && now - (a.finished_at ?? a.assigned_at) > this.t.cancelGraceMs) {
        this.finishAttempt(act, 'cancelled', now, { reason: `${a.reason ?? 'cancelled'}; the agent did not confirm within ${formatDuration(this.t.cancelGraceMs)}` });
        changed = true;
      } else if ((a.state === 'running' || a.state === 'assigned') && now - (a.started_at ?? a.assigned_at) > act.node.timeout_ms + (act.node.test?.timeout_ms ?? 0) + this.t.timeoutGraceMs) {
        this.cancelAttempt(act, `timed out after ${formatDuration(act.node.timeout_ms)}`);
        this.setNode(act.build, act.node, 'failed', now, `timed out after ${formatDuration(act.node.timeout_ms)} (the agent did not report)`);
        this.skipDownstream(act.build, act.node, now);
        this.refreshBuildState(act.build);
        changed = true;
      }
    }
    if (changed) {
      await this.store.commit();
      for (const b of this.store.data.builds.values()) this.maybeArchive(b);
      this.scheduleSoon();
    }
  }

  private agentLost(entry: AgentEntry, why: string): boolean {
    entry.state = 'lost';
    entry.channel = null;
    entry.lostAt = null;
    this.log.warn({ agent: entry.name, attempts: entry.running.size }, why);
    let changed = false;
    for (const id of [...entry.running]) {
      const act = this.active.get(id);
      if (act) {
        this.loseAttempt(act, why);
        changed = true;
      }
      this.agents.release(entry.name, id);
    }
    return changed;
  }

  /** Marks an attempt lost and queues its node again while its attempt budget lasts. */
  private loseAttempt(act: ActiveAttempt, why: string): void {
    const { build, node } = act;
    const now = this.now();
    const wasCancelling = act.attempt.state === 'cancelling';
    this.finishAttempt(act, 'lost', now, { reason: why });
    if (!wasCancelling && (node.state === 'assigned' || node.state === 'running')) this.retryOrExhaust(build, node, act.attempt, now, why);
    this.refreshBuildState(build);
  }

  /**
   * After an infrastructure failure of `attempt`: queue the node again (avoiding that agent
   * when another can take it) while the budget lasts, else fail it as `attempts exhausted`,
   * skip what needs it and put it on the dead-letter list.
   */
  private retryOrExhaust(build: BuildRecord, node: NodeRecord, attempt: AttemptRecord, now: number, why: string): void {
    const budget = node.retry === false ? 1 : INFRA_ATTEMPT_BUDGET;
    const used = node.attempts.slice(node.budget_from ?? 0).filter(isInfraAttempt).length;
    if (used < budget) {
      const key = `${build.id}/${node.name}`;
      const set = this.preferNot.get(key) ?? new Set<string>();
      set.add(attempt.agent);
      this.preferNot.set(key, set);
      this.makeReady(build, node, now);
      return;
    }
    const reason = `attempts exhausted: ${used} infrastructure failure${used === 1 ? '' : 's'} (budget ${budget}${node.retry === false ? ', retry: false' : ''}); last: ${why}`;
    this.setNode(build, node, 'failed', now, reason);
    this.skipDownstream(build, node, now);
    const key = `${build.id}/${node.name}`;
    this.store.data.deadLetter.set(key, {
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
    this.store.markDeadLetter(key);
    this.log.warn({ build: build.id, node: node.name, attempts: used }, 'node dead-lettered: attempts exhausted');
  }

  // ---------------------------------------------------------------- dispatch

  /** Runs placement once, soon; calls in the same turn share one pass. */
  scheduleSoon(): void {
    if (this.scheduleQueued || this.stopped) return;
    this.scheduleQueued = true;
    this.defer(() => {
      this.scheduleQueued = false;
      this.schedule();
    });
  }

  private schedule(): void {
    const placed = this.scheduler.placeAll(
      (ref) => this.readyNode(ref) !== null,
      (ref, agent, gpus) => this.dispatch(ref, agent, gpus),
    );
    if (placed === 0) return;
    // An assignment goes out only once its attempt is on disk: a coordinator that dies in
    // between must not leave an agent building an attempt the restarted one never heard of.
    const sends = this.unsent;
    this.unsent = new Map();
    this.lastDispatch = this.store.commit().then(
      () => {
        for (const [attemptId, send] of sends) {
          this.unsentAttempts.delete(attemptId);
          const act = this.active.get(attemptId);
          if (!act || act.attempt.state !== 'assigned') continue; // cancelled meanwhile (already finished, see cancelAttempt)
          const agent = this.agents.get(act.attempt.agent);
          // Not connected now: the agent reconnects without it and the attempt is lost then.
          if (agent?.state !== 'connected' || !agent.channel || agent.session !== act.attempt.session) continue;
          if (!agent.welcomed) this.afterWelcome.set(attemptId, send.payload); // reconnecting: no frame may overtake the welcome
          else agent.channel.send('assign', send.payload);
        }
      },
      (err: unknown) => {
        for (const attemptId of sends.keys()) this.unsentAttempts.delete(attemptId);
        this.log.error({ err }, 'state commit failed after dispatch; assignments not sent');
      },
    );
  }

  private readyNode(ref: ReadyRef): { build: BuildRecord; node: NodeRecord } | null {
    const build = this.store.data.builds.get(ref.buildId);
    if (!build) return null;
    const node = this.graph(build).byName.get(ref.node);
    return node && node.state === 'ready' ? { build, node } : null;
  }

  private dispatch(ref: ReadyRef, agent: AgentEntry, gpus: number[]): void {
    const found = this.readyNode(ref);
    if (!found || !agent.channel) return;
    const { build, node } = found;
    const now = this.now();
    const number = node.attempts.length + 1;
    const prev = node.attempts[node.attempts.length - 1];
    const attempt: AttemptRecord = {
      id: newId('a', now),
      number,
      agent: agent.name,
      session: agent.session,
      state: 'assigned',
      assigned_at: now,
      accepted_at: null,
      started_at: null,
      finished_at: null,
      exit_code: null,
      error: null,
      failed_step: null,
      infra: false,
      image_id: null,
      log_bytes: 0,
      log_header: prev ? `[kiln] attempt ${number} on agent ${agent.name} (attempt ${prev.number} on ${prev.agent}: ${prev.state}${prev.reason ? `, ${prev.reason}` : ''})\n` : '',
      reason: null,
      fetch_ms: null,
      build_ms: null,
      inputs: {},
      spec_digest: null,
      key: null,
      base_images: null,
      dockerfile_digest: null,
      outputs: [],
      provenance: null,
      reused_from: null,
    };
    const inputs = this.inputDigests(build, node);
    if (typeof inputs === 'string') return; // cannot happen: checked when the node became ready
    attempt.inputs = inputs;
    attempt.spec_digest = specDigest(node, inputs);
    attempt.gpus = gpus;
    attempt.emulated = !this.agents.isNative(agent, node.platform);
    node.attempts.push(attempt);
    this.setNode(build, node, 'assigned', now);
    this.active.set(attempt.id, { build, node, attempt });
    this.agents.hold(agent, attempt.id, gpus, now);
    this.poolStats.recordDispatch(poolOf(node), now - (node.ready_at ?? now));
    if (build.started_at === null) {
      build.started_at = now;
      this.store.markBuild(build.id);
    }
    this.refreshBuildState(build);
    this.unsentAttempts.add(attempt.id);
    this.unsent.set(attempt.id, {
      payload: {
      attempt_id: attempt.id,
      build_id: build.id,
      node: node.name,
      attempt: number,
      platform: node.platform,
      context: node.context,
      dockerfile: node.dockerfile,
      dockerfile_inline: node.dockerfile_inline,
      build_args: node.build_args,
      target: node.target,
      timeout_ms: node.timeout_ms,
      image_tag: `kiln-build/${build.id}:${node.name}`,
      no_cache: node.no_cache,
      inputs: node.inputs.map((i) => ({ name: i.name, digest: inputs[i.name]!, mount: i.mount, env: i.env })),
      outputs: node.outputs,
      // Resolve first only when the result may be reused; an executor that builds nothing has nothing to resolve.
      resolve: this.reuseAllowed(build, node) && agent.hello?.executor !== 'noop',
      gpus,
      test: node.test ? { command: node.test.command, timeout_ms: node.test.timeout_ms, env: node.test.env } : null,
      },
    });
    if (attempt.log_header) this.track(this.logs.ensure(this.logRef({ build, node, attempt })).catch(() => {}));
  }

  private enqueue(build: BuildRecord, node: NodeRecord): void {
    const key = `${build.id}/${node.name}`;
    const avoid = this.avoid.get(key);
    const preferNot = this.preferNot.get(key);
    this.scheduler.enqueue({
      buildId: build.id,
      node: node.name,
      ...requirementOf(node),
      priority: node.priority ?? 0,
      ...(avoid ? { avoid } : {}),
      ...(preferNot ? { preferNot } : {}),
    });
  }

  // ---------------------------------------------------------------- transitions

  private setNode(build: BuildRecord, node: NodeRecord, to: NodeState, now: number, reason: string | null = null): void {
    const from = node.state;
    node.state = nodeTransition(from, to, `node ${build.id}/${node.name}`);
    this.store.markNode(build.id, node.name);
    countTransition(this.graph(build), node, from, to);
    if (isNodeTerminal(to)) {
      node.finished_at = now;
      if (reason) node.reason = reason;
    }
    this.emit('node', build.id, node.name);
  }

  /** After an attempt ended without a result: queue the node again, or fail it (and skip what needs it). */
  private requeueOrFail(build: BuildRecord, node: NodeRecord, now: number, requeue: boolean, failReason: string): void {
    if (requeue) {
      this.makeReady(build, node, now);
    } else {
      this.setNode(build, node, 'failed', now, failReason);
      this.skipDownstream(build, node, now);
    }
  }

  private makeReady(build: BuildRecord, node: NodeRecord, now: number): void {
    const inputs = this.inputDigests(build, node);
    if (typeof inputs === 'string') {
      this.setNode(build, node, 'failed', now, inputs);
      this.skipDownstream(build, node, now);
      return;
    }
    this.setNode(build, node, 'ready', now);
    node.ready_at = now;
    this.enqueue(build, node);
  }

  /** Input name -> digest for a node whose needs succeeded, or a message saying which input is missing. */
  private inputDigests(build: BuildRecord, node: NodeRecord): Record<string, string> | string {
    const out: Record<string, string> = {};
    for (const i of node.inputs ?? []) {
      if (i.digest !== null) {
        out[i.name] = i.digest;
        continue;
      }
      const up = i.from ? this.graph(build).byName.get(i.from.node) : undefined;
      const last = up?.attempts[up.attempts.length - 1];
      const art = up?.state === 'success' ? last?.outputs?.find((o) => o.name === i.from!.output) : undefined;
      if (!art) return `input '${i.name}': node '${i.from?.node}' did not produce output '${i.from?.output}'`;
      out[i.name] = art.digest;
    }
    return out;
  }

  private releaseDependents(build: BuildRecord, node: NodeRecord, now: number): void {
    const g = this.graph(build);
    for (const name of g.dependents.get(node.name) ?? []) {
      const d = g.byName.get(name)!;
      if (d.state === 'pending' && d.needs.every((n) => g.byName.get(n)?.state === 'success')) this.makeReady(build, d, now);
    }
  }

  private skipDownstream(build: BuildRecord, node: NodeRecord, now: number): void {
    const g = this.graph(build);
    const queue = [node.name];
    while (queue.length > 0) {
      const name = queue.shift()!;
      for (const dep of g.dependents.get(name) ?? []) {
        const d = g.byName.get(dep)!;
        if (d.state !== 'pending') continue;
        this.setNode(build, d, 'skipped', now, `skipped: needs '${name}', which ${g.byName.get(name)!.state}`);
        queue.push(dep);
      }
    }
  }

  private cancelAttempt(act: ActiveAttempt, reason: string): void {
    const { attempt } = act;
    const agent = this.agents.get(attempt.agent);
    if (this.unsentAttempts.has(attempt.id)) {
      // The agent never got the assignment (it is sent after the dispatch commit): nothing to cancel there.
      this.unsent.delete(attempt.id);
      this.finishAttempt(act, 'cancelled', this.now(), { reason });
    } else if (agent?.state === 'connected' && agent.session === attempt.session && agent.channel) {
      attempt.state = attemptTransition(attempt.state, 'cancelling');
      attempt.reason = reason;
      attempt.finished_at = this.now();
      this.store.markNode(act.build.id, act.node.name);
      agent.channel.send('cancel', { attempt_id: attempt.id, reason });
    } else {
      this.finishAttempt(act, 'cancelled', this.now(), { reason });
    }
  }

  private finishAttempt(act: ActiveAttempt, to: AttemptState, now: number, extra: { reason?: string | null }): void {
    const { attempt } = act;
    attempt.state = attemptTransition(attempt.state, to);
    attempt.finished_at = now;
    if (extra.reason !== undefined) attempt.reason = extra.reason;
    this.store.markNode(act.build.id, act.node.name);
    this.active.delete(attempt.id);
    this.unsentAttempts.delete(attempt.id);
    this.afterWelcome.delete(attempt.id);
    this.decidedToBuild.delete(attempt.id);
    this.agents.release(attempt.agent, attempt.id);
    if (attempt.key !== null && this.inflight.get(attempt.key) === act) {
      this.inflight.delete(attempt.key);
      this.settleFollowers(act, to, now);
    }
    // No more bytes are accepted for a finished attempt: flush and close its log file.
    this.track(this.logs.close(this.logRef(act)).catch(() => {}));
    this.emit('node', act.build.id, act.node.name);
  }

  /** Recomputes the build state from its nodes; returns true when it changed. */
  private refreshBuildState(build: BuildRecord): boolean {
    const g = this.graph(build);
    const next = deriveBuildState({ cancelRequested: build.cancel_requested, started: build.started_at !== null, counts: g.counts, leafSuccesses: g.leafSuccesses });
    if (next === build.state) return false;
    build.state = next;
    this.store.markBuild(build.id);
    if (next !== 'pending' && build.started_at === null) build.started_at = this.now();
    if (isBuildTerminal(next)) {
      build.finished_at = this.now();
      this.log.info({ build: build.id, state: next }, 'build finished');
    }
    this.emit('build', build.id);
    return true;
  }

  /** Archives a finished build once none of its attempts holds a slot. */
  private maybeArchive(build: BuildRecord): void {
    if (!isBuildTerminal(build.state) || this.store.data.builds.get(build.id) !== build || this.archiving.has(build.id)) return;
    for (const n of build.nodes) for (const a of n.attempts) if (SLOT_HOLDING_ATTEMPT_STATES.has(a.state)) return;
    this.archiving.add(build.id);
    const work = this.writeErrorReport(build)
      .then(() => this.store.archive(build))
      .then(() => {
        for (const n of build.nodes) {
          this.avoid.delete(`${build.id}/${n.name}`);
          this.preferNot.delete(`${build.id}/${n.name}`);
        }
        return this.store.commit();
      })
      .catch((err: unknown) => this.log.error({ err, build: build.id }, 'archiving a finished build failed'))
      .finally(() => this.archiving.delete(build.id));
    this.track(work);
  }

  /** Writes `builds/error-<id>.json` for a build with a failed node (after its logs are flushed). */
  private async writeErrorReport(build: BuildRecord): Promise<void> {
    if (!this.store.persist || !build.nodes.some((n) => n.state === 'failed')) return;
    try {
      for (const n of build.nodes) {
        const last = n.attempts[n.attempts.length - 1];
        if (n.state === 'failed' && last) await this.logs.close(this.logRef({ build, node: n, attempt: last }));
      }
      const report = await buildErrorReport(build, this.logs, this.store.data.deadLetter);
      if (report) await writeFileDurable(this.errorReportPath(build.id), `${JSON.stringify(report, null, 2)}\n`, 0o600);
    } catch (err) {
      this.log.error({ err, build: build.id }, 'writing the error report failed');
    }
  }

  private logRef(act: { build: BuildRecord; node: NodeRecord; attempt: AttemptRecord }) {
    return { buildId: act.build.id, node: act.node.name, number: act.attempt.number, header: act.attempt.log_header };
  }
}

/** What a node needs from an agent, as the scheduler matches it. */
export function requirementOf(node: NodeRecord) {
  return {
    platform: node.platform,
    labels: node.labels,
    labelsNot: node.labels_not ?? {},
    allowEmulation: node.allow_emulation ?? false,
    gpus: node.gpus ?? null,
  };
}

function reuseRecordOf(build: BuildRecord, node: NodeRecord, a: AttemptRecord): ReuseRecord {
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
