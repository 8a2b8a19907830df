/**
 * The coordinator's engine: builds, nodes and attempts moving through their states
 * (shared/states.ts) in response to submissions, cancels, agent frames and time.
 *
 * Everything runs on the event loop without awaiting between reading and changing
 * state, so each handler's changes are atomic; handlers then `await store.commit()`
 * before the caller acknowledges anything. Dispatch is push: whenever nodes become ready
 * or slots free up, `scheduleSoon()` places ready nodes on agents (scheduler.ts).
 *
 * This class is the facade: the public methods the agent hub, the HTTP routes and the
 * simulation call. The work is done by modules that share one explicit state object
 * (engine-state.ts) and write records only through its change recorder
 * (engine-records.ts):
 *
 *   engine-transitions.ts  node/attempt/build state changes, shared-execution
 *                          followers, archiving and error reports
 *   engine-dispatch.ts     placement passes, attempts, durable-dispatch ordering
 *   engine-frames.ts       frames from agents (accept, reject, started, log, finished)
 *   engine-reuse.ts        `resolved`: reuse an earlier result, share an execution, proceed
 *   engine-retry.ts        the infrastructure attempt budget and the dead-letter list
 *   engine-agents.ts       hello/resume, welcome, disconnect, lost agents, the sweep
 *   engine-actions.ts      submit, cancel, retry a node, agent control, error reports
 *   engine-recover.ts      rebuilding the in-memory indexes after a restart
 *   engine-deadline.ts     build deadlines (one timer; re-armed on recovery)
 *   node-execution.ts      the node's execution: one object for the assign payload and
 *                          the reuse key (idempotency.ts)
 *
 * Faults: every dispatch is an attempt with its own id, and only the node's current
 * attempt on the agent (and agent process) it was given to can change the node.
 * Infrastructure failures queue the node again until its attempt budget is used up
 * (engine-retry.ts). A failed build gets an error report, `builds/error-<id>.json`.
 *
 * Emits typed events (EngineEvents): `node` (buildId, nodeName) whenever a node changes
 * state and `build` (buildId) when a build's state changes, for live followers.
 */
import { TypedEmitter, isNodeTerminal, systemTimers, type ErrorReportT, type Frame, type HelloPayload, type Payload, type PoolViewT, type ResolvedSpec } from '../../shared/index.js';
import type { AgentChannel, AgentEntry, AgentRegistry } from '../placement/agent-registry.js';
import { summarize, type AgentControlRecord, type BuildRecord, type BuildSummaryRecord, type DeadLetterRecord, type NodeRecord } from '../state/records.js';
import type { BuildGraph } from './build-graph.js';
import type { PoolCacheCounts } from './cache-counters.js';
import * as actions from './engine-actions.js';
import * as agentLife from './engine-agents.js';
import { scheduleSoon, settled } from './engine-dispatch.js';
import { onFrame, owned, seen } from './engine-frames.js';
import { deadLetters, retryOrExhaust } from './engine-retry.js';
import { recover } from './engine-recover.js';
import { createEngineState, graphOf, type EngineDeps, type EngineEvents, type EngineState, type HelloOutcome } from './engine-state.js';
import { errorReportPath } from './engine-transitions.js';
import type { Scheduler } from '../placement/scheduler.js';
import type { GroupView } from '../placement/budgets.js';
import { Deadlines } from './engine-deadline.js';

export { INFRA_ATTEMPT_BUDGET, type EngineDeps, type EngineEvents, type EngineTimings, type HelloOutcome } from './engine-state.js';

export class Engine extends TypedEmitter<EngineEvents> {
  private readonly s: EngineState;
  private readonly deadlines: Deadlines;
  readonly agents: AgentRegistry;
  readonly scheduler: Scheduler;

  constructor(deps: EngineDeps) {
    super();
    const s = createEngineState(deps, this);
    s.scheduleSoon = () => scheduleSoon(s);
    s.seams.owned = (entry, attemptId) => owned(s, entry, attemptId);
    s.seams.retryOrExhaust = (build, node, attempt, now, why) => retryOrExhaust(s, build, node, attempt, now, why);
    this.s = s;
    this.deadlines = new Deadlines(s, deps.timers ?? systemTimers);
    this.agents = s.agents;
    this.scheduler = s.scheduler;
  }

  /** The state the engine's modules share. For tests and the simulation's mutation tests only. */
  get internals(): EngineState {
    return this.s;
  }

  // ---------------------------------------------------------------- startup

  /**
   * Rebuilds the in-memory indexes from the loaded state: ready queues, active attempts
   * (their agents get `reconnectGraceMs` to come back and claim them) and the build list.
   */
  async recover(): Promise<void> {
    await recover(this.s);
    await this.deadlines.recover();
  }

  /** Stops dispatching and waits for background work (archiving, log headers) to finish. */
  async stop(): Promise<void> {
    this.s.stopped = true;
    this.deadlines.stop();
    await this.idle();
  }

  /** Resolves once background work (archiving, error reports, log files) started so far is done. */
  async idle(): Promise<void> {
    while (this.s.background.size > 0) await Promise.allSettled([...this.s.background]);
  }

  /** Resolves once placement queued so far has run and its assignments were sent (tests, simulations). */
  settled(): Promise<void> {
    return settled(this.s);
  }

  // ---------------------------------------------------------------- queries

  buildIds(): readonly string[] {
    return this.s.ids;
  }

  /**
   * A standby's read-only copy (never recovered): the build list taken again from the state,
   * after the leader's journal rows were applied to it. Ids are time-ordered, as at recovery.
   */
  relist(): void {
    this.s.ids.length = 0;
    this.s.ids.push(...this.s.records.buildIds());
    this.s.ids.sort();
  }

  /** A build that is not archived (yet), or undefined. */
  activeBuild(id: string): BuildRecord | undefined {
    return this.s.records.activeBuild(id);
  }

  /** The list entry of a build (active: summarised now; archived: its index entry), or null. */
  buildSummary(id: string): BuildSummaryRecord | null {
    const active = this.s.records.activeBuild(id);
    return active ? summarize(active) : (this.s.records.archivedSummary(id) ?? null);
  }

  /** What an operator set for an agent (paused or draining), or undefined when active. */
  agentControl(name: string): AgentControlRecord | undefined {
    return this.s.records.agentControl(name);
  }

  getBuild(id: string): Promise<BuildRecord | null> {
    return this.s.store.getBuild(id);
  }

  /** Pins or unpins a build's artifacts; resolves once durable (and tells `build` listeners: the list row shows it). */
  async setPinned(id: string, pinned: boolean): Promise<BuildRecord | null> {
    const build = await this.s.store.setPinned(id, pinned);
    if (build) this.emit('build', id);
    return build;
  }

  /** Resolves once every change made before the call is durable (the state store's commit). */
  durable(): Promise<void> {
    return this.s.store.commit();
  }

  graph(build: BuildRecord): BuildGraph {
    return graphOf(this.s, build);
  }

  activeAttempts(): number {
    return this.s.active.size;
  }

  /** The dead-letter list: nodes whose infrastructure failures used up their attempt budget, newest first. */
  deadLetters(): DeadLetterRecord[] {
    return deadLetters(this.s);
  }

  /** Why a build failed (null when no node failed). Throws E_NOT_FOUND for an unknown build. */
  errorReport(buildId: string): Promise<ErrorReportT | null> {
    return actions.errorReport(this.s, buildId);
  }

  errorReportPath(buildId: string): string {
    return errorReportPath(this.s, buildId);
  }

  /** Layer cache: hits, misses and pushes per pool since start (GET /metrics). */
  cacheCounts(): Map<string, PoolCacheCounts> {
    return this.s.cacheCounters.snapshot();
  }

  /** The coordinator's concurrency group limits (config `concurrency_groups`): submit checks every group used has a limit. */
  get concurrencyGroups(): ReadonlyMap<string, number> {
    return this.s.budgets.configured;
  }

  /** Why a ready node waits for its build's concurrency or its group (`waiting: ...`), or null. */
  budgetWaiting(build: BuildRecord, node: NodeRecord): string | null {
    return node.state === 'ready' ? this.s.budgets.blockedBy(this.s.budgets.of(build, node)) : null;
  }

  /** Nodes of the build holding a slot now (counted for builds with a `concurrency`). */
  buildRunning(buildId: string): number {
    return this.s.budgets.buildRunning(buildId);
  }

  /** Concurrency groups (configured or in use): limit, running, ready nodes held back. */
  concurrencyGroupViews(): GroupView[] {
    const ready: Array<{ build: BuildRecord; node: NodeRecord }> = [];
    for (const b of this.s.records.activeBuilds()) for (const n of b.nodes) if (n.state === 'ready') ready.push({ build: b, node: n });
    return this.s.budgets.groups(ready);
  }

  /** Per-pool queue depth, wait times, running counts and agents. */
  pools(): PoolViewT[] {
    const nodes: NodeRecord[] = [];
    for (const b of this.s.records.activeBuilds()) for (const n of b.nodes) if (!isNodeTerminal(n.state)) nodes.push(n);
    return this.s.poolStats.view(this.agents, nodes, this.s.now());
  }

  // ---------------------------------------------------------------- API actions

  /** Creates a build from a validated spec; resolves after it is durable. */
  async submit(spec: ResolvedSpec, opts: { reuse?: boolean; submittedBy?: string } = {}): Promise<BuildRecord> {
    const build = await actions.submit(this.s, spec, opts);
    this.deadlines.add(build);
    return build;
  }

  /** Cancels every unfinished node; running ones get a `cancel` frame. */
  cancel(id: string): Promise<BuildRecord> {
    return actions.cancel(this.s, id);
  }

  /** Runs a failed node again with a fresh attempt budget (engine-actions.ts); resolves once durable. */
  async retryNode(buildId: string, nodeName: string): Promise<BuildRecord> {
    const build = await actions.retryNode(this.s, buildId, nodeName);
    this.deadlines.add(build); // a revived build's deadline (not yet passed: checked above) is armed again
    return build;
  }

  /** Pauses, drains or resumes an agent (operator action); persisted, so it survives a restart. */
  setAgentControl(name: string, control: 'active' | 'paused' | 'draining', reason: string | null): Promise<AgentEntry> {
    return actions.setAgentControl(this.s, name, control, reason);
  }

  // ---------------------------------------------------------------- agents

  /** Handles an accepted hello: registers the agent and decides which reported attempts continue. */
  hello(hello: HelloPayload, channel: AgentChannel): Promise<HelloOutcome> {
    return agentLife.hello(this.s, hello, channel);
  }

  /** The welcome was sent on this connection: the agent may now be given work. */
  welcomed(entry: AgentEntry, channel: AgentChannel): void {
    agentLife.welcomed(this.s, entry, channel);
  }

  /** The agent's socket closed: its attempts wait `lostAfterMs` for it to come back. */
  disconnected(entry: AgentEntry, channel: AgentChannel, how: 'dropped' | 'shutdown' = 'dropped'): void {
    agentLife.disconnected(this.s, entry, channel, how);
  }

  /** The agent's credential was revoked (`channel`: its connection, now closing): it is lost now, its attempts queued again. */
  agentCutOff(name: string, channel: AgentChannel | null, why: string): Promise<void> {
    return agentLife.cutOff(this.s, name, channel, why);
  }

  /** Any frame from the agent proves it alive. */
  seen(entry: AgentEntry): void {
    seen(this.s, entry);
  }

  /**
   * Handles one validated frame from a connected agent. Returns the ack to send (after
   * any commit), or null. Frames naming an attempt that is not this agent's current
   * attempt are refused and the agent is told to cancel it.
   */
  frame(entry: AgentEntry, frame: Frame): Promise<Payload<'ack'> | null> {
    return onFrame(this.s, entry, frame);
  }

  /** Periodic checks: lost agents, unconfirmed cancels, attempts past their deadline. */
  sweep(): Promise<void> {
    return agentLife.sweep(this.s);
  }

  /** Runs placement once, soon; calls in the same turn share one pass. */
  scheduleSoon(): void {
    scheduleSoon(this.s);
  }
}
