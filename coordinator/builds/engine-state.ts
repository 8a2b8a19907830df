/**
 * The engine's state, shared explicitly by its modules (engine-*.ts): the collaborators
 * (state store, logs, CAS, reuse index, agent registry, logger, clock, timings), the
 * record access every read and write goes through (engine-records.ts), and the in-memory
 * indexes that are rebuilt on recovery (active attempts, shared executions, dispatches
 * waiting for their commit, ...). Each module is a set of functions taking this object
 * first; the `Engine` class (engine.ts) creates it and is the facade over the modules.
 *
 * Also the small helpers every module uses (graph, log reference, background work).
 */
import type { Logger } from 'pino';
import type { Payload, Timers, TypedEmitter } from '../../shared/index.js';
import type { AgentEntry, AgentRegistry } from '../placement/agent-registry.js';
import type { Cas } from '../cas/cas.js';
import type { AttemptLogRef, LogStorage } from '../logs/log-storage.js';
import type { AttemptRecord, BuildRecord, NodeRecord } from '../state/records.js';
import type { StateStore } from '../state/state-store.js';
import { buildGraph, type BuildGraph } from './build-graph.js';
import { Records } from './engine-records.js';
import { PoolStats } from '../placement/pools.js';
import type { ReuseIndex } from './reuse-index.js';
import { CacheCounters } from './cache-counters.js';
import type { LayerCacheConfig } from './layer-cache-refs.js';
import { Scheduler } from '../placement/scheduler.js';
import { Budgets } from '../placement/budgets.js';
import { ActiveAttempts } from './active-attempts.js';
import type { BuildTracing } from '../tracing/build-spans.js';

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
  logs: LogStorage;
  cas: Cas;
  reuse: ReuseIndex;
  agents: AgentRegistry;
  logger: Logger;
  timings: EngineTimings;
  clock?: () => number;
  /** Runs placement "soon" (default setImmediate); a simulation passes its own queue. */
  defer?: (fn: () => void) => void;
  /** The fleet-wide layer cache (config `cache`); none when absent. */
  layerCache?: LayerCacheConfig | null;
  /** The coordinator's concurrency group limits (config `concurrency_groups`). */
  concurrencyGroups?: ReadonlyMap<string, number>;
  /** Timers for build deadlines (default: Node's setTimeout); tests pass manual ones. */
  timers?: Timers;
  /** The build traces (coordinator/tracing/); none when tracing is off. */
  tracing?: BuildTracing | null;
}

/** What the engine emits: event name -> listener arguments (for live log and status followers). */
export interface EngineEvents {
  /** A node changed state (or its current attempt ended). */
  node: [buildId: string, node: string];
  /** A build changed state (or was submitted, or retried). */
  build: [buildId: string];
}

/** An attempt that holds a slot on an agent, with its node and build. */
export interface ActiveAttempt {
  build: BuildRecord;
  node: NodeRecord;
  attempt: AttemptRecord;
}

export type HelloOutcome =
  | { ok: true; entry: AgentEntry; resume: Payload<'welcome'>['resume'] }
  | { ok: false; closeCode: number; reason: string };

/** Rejections of one node (after its last retry) before it fails. */
export const MAX_REJECTIONS = 3;
/** Attempts a node gets for infrastructure failures (lost agent, Docker down, disk full). */
export const INFRA_ATTEMPT_BUDGET = 3;
/** Attempts remembered as reported finished (for agents that reconnect after a lost ack). */
export const MAX_RECORDED = 16_384;

export interface EngineSeams {
  /** Fencing: the agent's current attempt `attemptId`, or null (engine-frames.ts). */
  owned: (entry: AgentEntry, attemptId: string) => ActiveAttempt | null;
  /** The infrastructure attempt budget: queue the node again or exhaust it (engine-retry.ts). */
  retryOrExhaust: (build: BuildRecord, node: NodeRecord, attempt: AttemptRecord, now: number, why: string) => void;
}

export interface EngineState {
  readonly store: StateStore;
  /** Every read and write of builds, nodes, attempts, dead letters and agent controls (commit: `store`). */
  readonly records: Records;
  readonly logs: LogStorage;
  readonly cas: Cas;
  readonly reuse: ReuseIndex;
  readonly agents: AgentRegistry;
  readonly log: Logger;
  readonly t: EngineTimings;
  readonly now: () => number;
  readonly defer: (fn: () => void) => void;
  readonly events: TypedEmitter<EngineEvents>;
  readonly scheduler: Scheduler;
  readonly poolStats: PoolStats;
  /** Layer cache: the config, and hit/miss/push counts per pool. */
  readonly layerCache: LayerCacheConfig | null;
  readonly cacheCounters: CacheCounters;
  /** Build concurrency and concurrency groups: running counts (kept by `active`) and limits. */
  readonly budgets: Budgets;
  /** Runs placement soon (engine-dispatch.ts); calls in the same turn share one pass. */
  scheduleSoon: () => void;
  /** Spans of builds, nodes, queue waits and attempts; null when tracing is off (each hook: one null check). */
  readonly tracing: BuildTracing | null;
  /**
   * Two decisions the engine's modules call through here, so that the simulation's
   * mutation tests can replace them on one engine and prove the invariant checker
   * catches a broken engine (test/unit/simulation.test.ts). Set by the Engine.
   */
  readonly seams: EngineSeams;

  /** Attempts holding a slot, by attempt id. */
  readonly active: ActiveAttempts<ActiveAttempt>;
  /** Idempotency key -> the attempt building it now (the leader of a shared execution). */
  readonly inflight: Map<string, ActiveAttempt>;
  /** Leader attempt id -> nodes waiting for its result. */
  readonly followers: Map<string, Array<{ build: BuildRecord; node: NodeRecord }>>;
  readonly graphs: WeakMap<BuildRecord, BuildGraph>;
  /** Builds being archived now. */
  readonly archiving: Set<string>;
  /** `<build>/<node>` -> agents the node must not be placed on. */
  readonly avoid: Map<string, Set<string>>;
  /** `<build>/<node>` -> agents where its attempt failed for infrastructure reasons: used only when nothing else is free. */
  readonly preferNot: Map<string, Set<string>>;
  /** Every build id (active and archived), in creation order. */
  readonly ids: string[];
  scheduleQueued: boolean;
  /** Assignments placed since the last dispatch commit, sent once it is durable. */
  unsent: Map<string, { payload: Payload<'assign'> }>;
  /** Attempts whose assignment has not been sent yet (placed, commit in flight). */
  readonly unsentAttempts: Set<string>;
  /**
   * Attempts whose result an agent reported (`finished`), by id -> agent session: when an
   * agent reconnects still holding one (the ack was lost), it is told to send it again and
   * is acked, instead of being told to cancel work that was kept. Bounded (oldest dropped).
   */
  readonly recorded: Map<string, string>;
  /** The latest dispatch commit and its sends (settled()). */
  lastDispatch: Promise<void>;
  /** Attempts told (durably) to build after the reuse check: a resent `resolved` gets `proceed` again. */
  readonly decidedToBuild: Set<string>;
  /** Durable assignments whose agent was between hello and welcome when they were due. */
  readonly afterWelcome: Map<string, Payload<'assign'>>;
  stopped: boolean;
  /** Background work (archiving, log files) that shutdown waits for. */
  readonly background: Set<Promise<unknown>>;
}

export function createEngineState(deps: EngineDeps, events: TypedEmitter<EngineEvents>): EngineState {
  const now = deps.clock ?? Date.now;
  const budgets = new Budgets(deps.concurrencyGroups);
  const state: EngineState = {
    store: deps.store,
    records: new Records(deps.store),
    logs: deps.logs,
    cas: deps.cas,
    reuse: deps.reuse,
    agents: deps.agents,
    log: deps.logger,
    t: deps.timings,
    now,
    defer: deps.defer ?? ((fn) => void setImmediate(fn)),
    events,
    scheduler: new Scheduler(deps.agents, now, (b) => budgets.admits(b)),
    poolStats: new PoolStats(),
    layerCache: deps.layerCache ?? null,
    cacheCounters: new CacheCounters(),
    budgets,
    scheduleSoon: () => {},
    tracing: deps.tracing ?? null,
    seams: {
      owned: () => null,
      retryOrExhaust: () => {},
    },
    // An attempt of a budgeted node that ends frees a budget slot: place again.
    active: new ActiveAttempts<ActiveAttempt>(budgets, () => state.scheduleSoon()),
    inflight: new Map(),
    followers: new Map(),
    graphs: new WeakMap(),
    archiving: new Set(),
    avoid: new Map(),
    preferNot: new Map(),
    ids: [],
    scheduleQueued: false,
    unsent: new Map(),
    unsentAttempts: new Set(),
    recorded: new Map(),
    lastDispatch: Promise.resolve(),
    decidedToBuild: new Set(),
    afterWelcome: new Map(),
    stopped: false,
    background: new Set(),
  };
  return state;
}

/** The build's derived graph (nodes by name, dependents, state counts), made once per record. */
export function graphOf(s: EngineState, build: BuildRecord): BuildGraph {
  let g = s.graphs.get(build);
  if (!g) {
    g = buildGraph(build);
    s.graphs.set(build, g);
  }
  return g;
}

/** Background work that shutdown (and idle()) waits for. */
export function track(s: EngineState, p: Promise<unknown>): void {
  const t = p.finally(() => s.background.delete(t));
  s.background.add(t);
}

export function logRef(act: { build: BuildRecord; node: NodeRecord; attempt: AttemptRecord }): AttemptLogRef {
  return { buildId: act.build.id, node: act.node.name, number: act.attempt.number, header: act.attempt.log_header };
}

/** Remembers that an attempt's result was reported (see `recorded`). */
export function remember(s: EngineState, attempt: AttemptRecord): void {
  s.recorded.set(attempt.id, attempt.session);
  if (s.recorded.size <= MAX_RECORDED) return;
  // The oldest quarter goes in one pass: deleting only the first key each time made every
  // call skip the holes earlier deletes left at the front of the Map (microseconds each).
  let drop = s.recorded.size - (MAX_RECORDED >> 2) * 3;
  for (const id of s.recorded.keys()) {
    s.recorded.delete(id);
    if (--drop <= 0) break;
  }
}

/** `<build>/<node>`: the key of per-node maps and of the dead-letter list. */
export function nodeKey(buildId: string, node: string): string {
  return `${buildId}/${node}`;
}
