/**
 * One agent as the coordinator knows it: the read-only view the rest of the coordinator
 * gets (`AgentEntry`), and the registry's own record behind it (`Agent`).
 *
 * Everything that decides whether the agent gets work (state, welcome, operator control,
 * health, slots, GPUs) is a getter on the record: only the agent registry changes it,
 * through its methods, which check the agent state table (`agentTransition`, shared/) and
 * keep the placement index current. Writing a field from outside throws.
 *
 * A reconnect makes a new record (a new connection, a new hello) that takes over the
 * previous record's slots, GPUs in use and circuit breaker (the same objects), so an
 * attempt released through either record frees the same slot.
 */
import { agentTransition, type AgentState, type GpuUsePayload, type HealthPayload, type HelloPayload, type LoadPayload, type Payload, type ToAgentType } from '../../shared/index.js';
import type { HeapMember } from './agent-heap.js';
import type { CapClass } from './capability-classes.js';
import type { BreakerView, BreakerState, CircuitBreaker } from './circuit-breaker.js';

export type { AgentState };

export interface AgentChannel {
  send<T extends ToAgentType>(type: T, payload: Payload<T>): void;
  close(code: number, reason: string): void;
}

/** Set by an operator; only `active` agents get new work (`draining` ones finish what they run). */
export type AgentControl = 'active' | 'paused' | 'draining';

export interface AgentMetrics {
  at: number;
  load: LoadPayload | null;
  gpus: GpuUsePayload[];
}

/** What others may ask an agent's circuit breaker; the registry alone feeds it events. */
export interface BreakerReader {
  readonly state: BreakerState;
  readonly trial: string | null;
  stateAt(now: number): BreakerState;
  admits(now: number): number;
  view(now: number): BreakerView;
}

/** An agent as the rest of the coordinator sees it: read-only; changes go through the AgentRegistry. */
export interface AgentEntry {
  readonly name: string;
  readonly session: string;
  /** null for an agent known only from the state file (see AGENT_STATES). */
  readonly hello: HelloPayload | null;
  readonly state: AgentState;
  /** The welcome went out on this connection: assignments may follow. */
  readonly welcomed: boolean;
  readonly channel: AgentChannel | null;
  /** Attempts holding one of this agent's slots. */
  readonly running: ReadonlySet<string>;
  /** Its platforms, normalized (native and emulated). */
  readonly platforms: ReadonlySet<string>;
  readonly maxJobs: number;
  readonly connectedAt: number | null;
  /** When the last frame came. */
  readonly lastSeenAt: number;
  /** When a disconnected agent becomes lost. */
  readonly lostAt: number | null;
  /** Set by an operator; only `active` agents get new work. */
  readonly control: AgentControl;
  /** What the agent last reported (hello or heartbeat). */
  readonly health: HealthPayload;
  /** Host load and GPU use from the last heartbeat that carried them. */
  readonly metrics: AgentMetrics | null;
  /** Attempt id -> the GPU indexes (nvidia-smi) it holds exclusively. */
  readonly gpusInUse: ReadonlyMap<string, readonly number[]>;
  readonly breaker: BreakerReader;
}

export interface AgentInit {
  session: string;
  hello: HelloPayload | null;
  state: AgentState;
  channel: AgentChannel | null;
  slots: Set<string>;
  platforms: ReadonlySet<string>;
  maxJobs: number;
  connectedAt: number | null;
  lastSeenAt: number;
  lostAt: number | null;
  control: AgentControl;
  health: HealthPayload;
  gpus: Map<string, number[]>;
  breaker: CircuitBreaker;
}

/**
 * The registry's record of an agent. Its setters are methods that only change fields; the
 * registry calls them and then re-indexes the agent (agent-registry.ts).
 */
export class Agent implements AgentEntry, HeapMember {
  readonly session: string;
  readonly hello: HelloPayload | null;
  readonly platforms: ReadonlySet<string>;
  readonly maxJobs: number;
  readonly connectedAt: number | null;
  /** The attempts holding a slot (shared with the records this one replaced). */
  readonly slots: Set<string>;
  /** Attempt id -> GPUs (shared with the records this one replaced). */
  readonly gpus: Map<string, number[]>;
  readonly breaker: CircuitBreaker;

  // placement index bookkeeping (see AgentRegistry.reindex)
  /** This object is the registry's record for the name (false once replaced or forgotten). */
  current = false;
  cls: CapClass<Agent> | null = null;
  heapIx = -1;
  load = 0;
  runs = 0;
  countedConnected = false;
  countedFree = false;

  #state: AgentState;
  #welcomed = false;
  #channel: AgentChannel | null;
  #lastSeenAt: number;
  #lostAt: number | null;
  #control: AgentControl;
  #health: HealthPayload;
  #metrics: AgentMetrics | null = null;

  constructor(
    readonly name: string,
    init: AgentInit,
  ) {
    this.session = init.session;
    this.hello = init.hello;
    this.#state = init.state;
    this.#channel = init.channel;
    this.slots = init.slots;
    this.platforms = init.platforms;
    this.maxJobs = init.maxJobs;
    this.connectedAt = init.connectedAt;
    this.#lastSeenAt = init.lastSeenAt;
    this.#lostAt = init.lostAt;
    this.#control = init.control;
    this.#health = init.health;
    this.gpus = init.gpus;
    this.breaker = init.breaker;
  }

  get state(): AgentState {
    return this.#state;
  }
  get welcomed(): boolean {
    return this.#welcomed;
  }
  get channel(): AgentChannel | null {
    return this.#channel;
  }
  get running(): ReadonlySet<string> {
    return this.slots;
  }
  get lastSeenAt(): number {
    return this.#lastSeenAt;
  }
  get lostAt(): number | null {
    return this.#lostAt;
  }
  get control(): AgentControl {
    return this.#control;
  }
  get health(): HealthPayload {
    return this.#health;
  }
  get metrics(): AgentMetrics | null {
    return this.#metrics;
  }
  get gpusInUse(): ReadonlyMap<string, readonly number[]> {
    return this.gpus;
  }

  /** May get new work now, ignoring free slots and time (the heap membership test). */
  get eligible(): boolean {
    if (this.#state !== 'connected' || !this.#welcomed || this.#control !== 'active' || !this.#health.accepting || this.cls === null) return false;
    const b = this.breaker.state;
    return b === 'closed' || (b === 'half_open' && this.breaker.trial === null);
  }

  // ------------------------------------------------ changes (the registry's alone)

  /** Moves to `to`; throws on a transition the agent state table does not allow. */
  moveTo(to: AgentState, channel: AgentChannel | null, lostAt: number | null): void {
    this.#state = agentTransition(this.#state, to, `agent ${this.name}`);
    this.#channel = channel;
    this.#lostAt = lostAt;
    if (to !== 'connected') this.#welcomed = false;
  }

  setWelcomed(): void {
    this.#welcomed = true;
  }

  setControl(control: AgentControl): void {
    this.#control = control;
  }

  /** true when whether it accepts work changed. */
  setHealth(health: HealthPayload): boolean {
    const was = this.#health.accepting;
    this.#health = health;
    return health.accepting !== was;
  }

  setMetrics(metrics: AgentMetrics): void {
    this.#metrics = metrics;
  }

  setLastSeen(now: number): void {
    this.#lastSeenAt = now;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      session: this.session,
      state: this.state,
      welcomed: this.welcomed,
      control: this.control,
      health: this.health,
      running: [...this.slots],
      maxJobs: this.maxJobs,
      gpusInUse: Object.fromEntries(this.gpus),
    };
  }
}
