/**
 * The agents the coordinator knows about, in memory: who is connected, what each one can
 * run, which attempts (and GPUs) hold its slots, whether it may get work now (operator
 * control, reported health, circuit breaker), and when a silent or disconnected agent
 * counts as lost.
 *
 * Agent states:
 * - `connected`: a WebSocket is open and the hello was accepted. It gets work only once
 *   the welcome has been sent (`welcomed`), so no assignment can overtake the welcome.
 * - `disconnected`: the socket closed (or the coordinator restarted while the agent had
 *   attempts); its attempts keep their slots until `lostAt`, so an agent that comes back
 *   in time carries on without re-running anything.
 * - `lost`: silent past the lost timeout; its attempts were re-queued elsewhere.
 *
 * An agent gets new work only while connected, welcomed, `control === 'active'` (not
 * paused or draining by an operator), healthy (`health.accepting`) and its circuit
 * breaker admits it (circuit-breaker.ts).
 *
 * Placement index: agents with the same capabilities (platforms and which of them are
 * emulated, labels, GPU inventory) form a *class*. Each class keeps the agents that may
 * get work now in an indexed min-heap by (load = running / max_jobs, running, name), so the
 * least-loaded agent of a class is its root. A requirement's matching classes are cached
 * (and recomputed when a class appears or disappears), so picking an agent costs
 * O(classes + log agents), not O(agents). The engine changes entries directly
 * (`entry.state = ...`, `entry.control = ...`, `entry.running.delete(...)`); those fields
 * are accessors that keep the index current.
 */
import {
  normalizePlatform,
  type GpuInfoPayload,
  type GpuRequirement,
  type GpuUsePayload,
  type HealthPayload,
  type HeartbeatPayload,
  type HelloPayload,
  type LoadPayload,
  type Payload,
  type ToAgentType,
} from '../../shared/index.js';
import { CircuitBreaker, DEFAULT_BREAKER_OPTIONS, checkBreakerOptions, type BreakerOptions } from './circuit-breaker.js';
import { requirementKey, type Requirement } from '../builds/scheduler.js';

export interface AgentChannel {
  send<T extends ToAgentType>(type: T, payload: Payload<T>): void;
  close(code: number, reason: string): void;
}

export type AgentState = 'connected' | 'disconnected' | 'lost';
export type AgentControl = 'active' | 'paused' | 'draining';

export interface AgentMetrics {
  at: number;
  load: LoadPayload | null;
  gpus: GpuUsePayload[];
}

export interface AgentEntry {
  name: string;
  session: string;
  hello: HelloPayload | null;
  state: AgentState;
  /** The welcome went out on this connection: assignments may follow. */
  welcomed: boolean;
  channel: AgentChannel | null;
  /** Attempts holding one of this agent's slots. */
  running: Set<string>;
  platforms: Set<string>;
  maxJobs: number;
  connectedAt: number | null;
  lastSeenAt: number;
  /** When a disconnected agent becomes lost. */
  lostAt: number | null;
  /** Set by an operator; only `active` agents get new work. */
  control: AgentControl;
  /** What the agent last reported (hello or heartbeat). */
  health: HealthPayload;
  /** Host load and GPU use from the last heartbeat that carried them. */
  metrics: AgentMetrics | null;
  /** Attempt id -> the GPU indexes (nvidia-smi) it holds exclusively. */
  gpusInUse: Map<string, number[]>;
  breaker: CircuitBreaker;
}

export interface RegistryOptions {
  breaker?: BreakerOptions;
}

/** The agent chosen for a ready node, with the GPUs it would get. */
export interface Placement {
  agent: AgentEntry;
  gpus: number[];
}

const HEALTHY: HealthPayload = Object.freeze({ accepting: true, problem: null }) as HealthPayload;

/** A set of attempt ids that tells the registry whenever it changes. */
class SlotSet extends Set<string> {
  /** The registry's current entry using this set (a reconnect hands it to the new entry). */
  owner: Agent | null = null;
  onChange: ((kind: 'add' | 'delete' | 'clear', id: string | null) => void) | null = null;

  override add(id: string): this {
    if (super.has(id)) return this;
    super.add(id);
    this.onChange?.('add', id);
    return this;
  }

  override delete(id: string): boolean {
    if (!super.delete(id)) return false;
    this.onChange?.('delete', id);
    return true;
  }

  override clear(): void {
    if (this.size === 0) return;
    super.clear();
    this.onChange?.('clear', null);
  }
}

interface GpuCap {
  index: number;
  modelLower: string;
  memory: number;
}

/** Agents with identical capabilities. */
class CapClass {
  readonly members = new Set<Agent>();
  /** Members that may get work now, as a min-heap by (load, running, name). */
  readonly heap: Agent[] = [];
  /** Members in state `connected`. */
  connected = 0;

  constructor(
    readonly key: string,
    readonly native: ReadonlySet<string>,
    readonly emulated: ReadonlySet<string>,
    /** The agents' labels (a Map: keys come from agents and are matched against keys from specs). */
    readonly labels: ReadonlyMap<string, string>,
    readonly gpus: readonly GpuCap[],
  ) {}
}

type Tier = 'native' | 'emulated';

interface MatchSet {
  version: number;
  native: CapClass[];
  emulated: CapClass[];
}

/** Heap order, on the values cached by the last reindex: load, then running, then name. */
function less(a: Agent, b: Agent): boolean {
  if (a.load !== b.load) return a.load < b.load;
  if (a.runs !== b.runs) return a.runs < b.runs;
  return a.name < b.name;
}

/** An agent entry whose state-changing fields report to the registry. */
class Agent implements AgentEntry {
  session: string;
  hello: HelloPayload | null;
  channel: AgentChannel | null;
  readonly running: SlotSet;
  platforms: Set<string>;
  maxJobs: number;
  connectedAt: number | null;
  lastSeenAt: number;
  lostAt: number | null;
  metrics: AgentMetrics | null = null;
  readonly gpusInUse: Map<string, number[]>;
  readonly breaker: CircuitBreaker;

  // placement index bookkeeping (see AgentRegistry.reindex)
  /** This object is the registry's entry for the name (false once replaced or forgotten). */
  current = false;
  cls: CapClass | null = null;
  heapIx = -1;
  load = 0;
  runs = 0;
  countedConnected = false;
  countedFree = false;

  #state: AgentState;
  #welcomed = false;
  #control: AgentControl;
  #health: HealthPayload;

  constructor(
    readonly name: string,
    private readonly changed: (a: Agent) => void,
    init: {
      session: string;
      hello: HelloPayload | null;
      state: AgentState;
      channel: AgentChannel | null;
      running: SlotSet;
      platforms: Set<string>;
      maxJobs: number;
      connectedAt: number | null;
      lastSeenAt: number;
      lostAt: number | null;
      control: AgentControl;
      health: HealthPayload;
      gpusInUse: Map<string, number[]>;
      breaker: CircuitBreaker;
    },
  ) {
    this.session = init.session;
    this.hello = init.hello;
    this.#state = init.state;
    this.channel = init.channel;
    this.running = init.running;
    this.platforms = init.platforms;
    this.maxJobs = init.maxJobs;
    this.connectedAt = init.connectedAt;
    this.lastSeenAt = init.lastSeenAt;
    this.lostAt = init.lostAt;
    this.#control = init.control;
    this.#health = init.health;
    this.gpusInUse = init.gpusInUse;
    this.breaker = init.breaker;
    this.running.owner = this;
  }

  get state(): AgentState {
    return this.#state;
  }
  set state(v: AgentState) {
    if (v === this.#state) return;
    this.#state = v;
    this.changed(this);
  }

  get welcomed(): boolean {
    return this.#welcomed;
  }
  set welcomed(v: boolean) {
    if (v === this.#welcomed) return;
    this.#welcomed = v;
    this.changed(this);
  }

  get control(): AgentControl {
    return this.#control;
  }
  set control(v: AgentControl) {
    if (v === this.#control) return;
    this.#control = v;
    this.changed(this);
  }

  get health(): HealthPayload {
    return this.#health;
  }
  set health(v: HealthPayload) {
    const was = this.#health.accepting;
    this.#health = v;
    if (v.accepting !== was) this.changed(this);
  }

  /** May get new work now, ignoring free slots and time (the heap membership test). */
  get eligible(): boolean {
    if (this.#state !== 'connected' || !this.#welcomed || this.#control !== 'active' || !this.#health.accepting || this.cls === null) return false;
    const b = this.breaker.state;
    return b === 'closed' || (b === 'half_open' && this.breaker.trial === null);
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      session: this.session,
      state: this.state,
      welcomed: this.welcomed,
      control: this.control,
      health: this.health,
      running: [...this.running],
      maxJobs: this.maxJobs,
      gpusInUse: Object.fromEntries(this.gpusInUse),
    };
  }
}

function gpuFits(g: { modelLower: string; memory: number }, req: GpuRequirement, modelLower: string | null): boolean {
  return g.memory >= req.min_memory_mib && (modelLower === null || g.modelLower.includes(modelLower));
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function describeGpus(req: GpuRequirement): string {
  return `${plural(req.count, 'GPU')}${req.min_memory_mib > 0 ? ` with >= ${req.min_memory_mib} MiB` : ''}${req.model ? ` of model '${req.model}'` : ''}`;
}

function names(list: string[], max = 3): string {
  const shown = list.slice(0, max).join(', ');
  return list.length > max ? `${shown} and ${list.length - max} more` : shown;
}

export class AgentRegistry {
  private readonly agents = new Map<string, Agent>();
  private readonly classes = new Map<string, CapClass>();
  /** Bumped when a class appears or disappears: cached matches are stale then. */
  private version = 0;
  private readonly matchCache = new Map<string, MatchSet>();
  /** Agents whose breaker is open (tick looks only at these). */
  private readonly openBreakers = new Set<string>();
  /** Agents that may get work now and have a free slot. */
  private free = 0;
  private readonly breakerOptions: BreakerOptions;
  private readonly onChanged = (a: Agent) => this.reindex(a);

  constructor(opts: RegistryOptions = {}) {
    this.breakerOptions = checkBreakerOptions({ ...(opts.breaker ?? DEFAULT_BREAKER_OPTIONS) });
  }

  get(name: string): AgentEntry | undefined {
    return this.agents.get(name);
  }

  all(): IterableIterator<AgentEntry> {
    return this.agents.values();
  }

  connected(): AgentEntry[] {
    return [...this.agents.values()].filter((a) => a.state === 'connected');
  }

  /** Records a placeholder for an agent that held attempts before a coordinator restart. */
  placeholder(name: string, session: string, now: number, graceMs: number): AgentEntry {
    let entry = this.agents.get(name);
    if (!entry) {
      entry = new Agent(name, this.onChanged, {
        session,
        hello: null,
        state: 'disconnected',
        channel: null,
        running: this.slotSet(),
        platforms: new Set(),
        maxJobs: 0,
        connectedAt: null,
        lastSeenAt: now,
        lostAt: now + graceMs,
        control: 'active',
        health: HEALTHY,
        gpusInUse: new Map(),
        breaker: new CircuitBreaker(this.breakerOptions),
      });
      entry.current = true;
      this.agents.set(name, entry);
    }
    return entry;
  }

  /**
   * Registers a connection after an accepted hello; returns the previous entry state. The
   * new entry keeps the previous one's operator control, circuit breaker, running
   * attempts and their GPUs.
   */
  connect(hello: HelloPayload, channel: AgentChannel, now: number): { entry: AgentEntry; previousSession: string | null } {
    const prev = this.agents.get(hello.name);
    if (prev) {
      this.detach(prev);
      prev.current = false;
    }
    const entry = new Agent(hello.name, this.onChanged, {
      session: hello.session,
      hello,
      state: 'connected',
      channel,
      running: prev?.running ?? this.slotSet(),
      platforms: new Set(hello.platforms.map((p) => normalizePlatform(p.platform))),
      maxJobs: hello.max_jobs,
      connectedAt: now,
      lastSeenAt: now,
      lostAt: null,
      control: prev?.control ?? 'active',
      health: hello.health ?? HEALTHY,
      gpusInUse: prev?.gpusInUse ?? new Map(),
      breaker: prev?.breaker ?? new CircuitBreaker(this.breakerOptions),
    });
    entry.current = true;
    this.agents.set(hello.name, entry);
    this.attach(entry);
    return { entry, previousSession: prev ? prev.session : null };
  }

  forget(name: string): void {
    const a = this.agents.get(name);
    if (!a) return;
    this.detach(a);
    a.current = false;
    this.agents.delete(name);
    this.openBreakers.delete(name);
  }

  // ------------------------------------------------------------ capabilities

  /** true when the agent can run a node with this requirement (capabilities only; ignores load, control and health). */
  matches(a: AgentEntry, req: Requirement): boolean {
    const cls = this.classOf(a);
    if (!cls) return false;
    const tier = classTier(cls, req);
    return tier === 'native' || (tier === 'emulated' && req.allowEmulation);
  }

  /** true when the agent runs this platform natively (not under emulation). */
  isNative(a: AgentEntry, platform: string): boolean {
    return this.classOf(a)?.native.has(normalizePlatform(platform)) ?? false;
  }

  /** Slots the agent can fill now: 0 unless connected, welcomed, active, healthy and its breaker admits work. */
  freeSlots(a: AgentEntry, now: number): number {
    if (a.state !== 'connected' || !a.welcomed || a.control !== 'active' || !a.health.accepting) return 0;
    const free = a.maxJobs - a.running.size;
    if (free <= 0) return 0;
    return Math.min(free, a.breaker.admits(now));
  }

  /**
   * Free GPUs of the agent meeting `req` (count, memory per GPU, model substring), or null
   * when there are not enough; [] when `req` is null. Prefers the smallest GPUs that fit,
   * keeping big ones for nodes that need them.
   */
  allocateGpus(a: AgentEntry, req: GpuRequirement | null): number[] | null {
    if (!req) return [];
    const gpus = a.hello?.gpus;
    if (!gpus || gpus.length < req.count) return null;
    let used: Set<number> | null = null;
    if (a.gpusInUse.size > 0) {
      used = new Set();
      for (const list of a.gpusInUse.values()) for (const i of list) used.add(i);
    }
    const modelLower = req.model ? req.model.toLowerCase() : null;
    const fit: GpuInfoPayload[] = [];
    for (const g of gpus) {
      if (used?.has(g.index)) continue;
      if (gpuFits({ modelLower: g.model.toLowerCase(), memory: g.memory_mib }, req, modelLower)) fit.push(g);
    }
    if (fit.length < req.count) return null;
    fit.sort((x, y) => x.memory_mib - y.memory_mib || x.index - y.index);
    return fit
      .slice(0, req.count)
      .map((g) => g.index)
      .sort((x, y) => x - y);
  }

  // ------------------------------------------------------------ slots

  /** An attempt takes one of the agent's slots (and these GPUs). */
  hold(a: AgentEntry, attemptId: string, gpus: number[], now: number): void {
    if (gpus.length > 0) a.gpusInUse.set(attemptId, [...gpus]);
    a.breaker.onHold(attemptId, now);
    if (a.running.has(attemptId)) this.reindexEntry(a);
    else a.running.add(attemptId); // reindexes
  }

  /** The attempt gives its slot and GPUs back. */
  release(name: string, attemptId: string): void {
    const a = this.agents.get(name);
    if (!a) return;
    if (!a.running.delete(attemptId)) {
      // not holding a slot, but may still hold GPUs or be the trial
      a.gpusInUse.delete(attemptId);
      a.breaker.onRelease(attemptId);
      this.reindex(a);
    }
  }

  // ------------------------------------------------------------ health, breaker

  recordInfraFailure(name: string, now: number): void {
    const a = this.agents.get(name);
    if (!a) return;
    if (a.breaker.recordFailure(now)) this.openBreakers.add(name);
    this.reindex(a);
  }

  /** An attempt on the agent ended without an infrastructure failure (`attemptId`: see CircuitBreaker.recordSuccess). */
  recordHealthy(name: string, now: number, attemptId?: string): void {
    const a = this.agents.get(name);
    if (!a) return;
    if (a.breaker.recordSuccess(now, attemptId)) this.reindex(a);
  }

  /** Moves breakers whose cool-down is over to half-open; true when some did (a trial slot opened). */
  tick(now: number): boolean {
    if (this.openBreakers.size === 0) return false;
    let any = false;
    for (const name of [...this.openBreakers]) {
      const a = this.agents.get(name);
      if (!a) {
        this.openBreakers.delete(name);
        continue;
      }
      if (a.breaker.tick(now)) {
        any = true;
        this.reindex(a);
      }
      if (a.breaker.state !== 'open') this.openBreakers.delete(name);
    }
    return any;
  }

  /** Stores a heartbeat's load, GPU use and health. */
  setHeartbeat(a: AgentEntry, hb: HeartbeatPayload, now: number): void {
    if (hb.load !== undefined || hb.gpus !== undefined) a.metrics = { at: now, load: hb.load ?? null, gpus: hb.gpus ?? [] };
    if (hb.health) a.health = { accepting: hb.health.accepting, problem: hb.health.problem };
  }

  // ------------------------------------------------------------ placement

  /** true when some agent may get work now and has a free slot (as of the last tick). */
  anyFree(): boolean {
    return this.free > 0;
  }

  /**
   * The agent a node with `req` should go to now, or null: native agents before emulated
   * ones (those only with `allowEmulation`), then the least loaded (running / max_jobs),
   * fewer running, name. Agents in `avoid` never; agents in `preferNot` only when no other
   * one is free. Breakers are taken as of the last `tick`. `key` is `requirementKey(req)`
   * when the caller has it already.
   */
  pick(req: Requirement, now: number, key?: string, avoidSet?: ReadonlySet<string>, preferNotSet?: ReadonlySet<string>): Placement | null {
    if (this.free === 0) return null;
    const m = this.matching(req, key);
    if (m.native.length === 0 && (m.emulated.length === 0 || !req.allowEmulation)) return null;
    const avoid = avoidSet && avoidSet.size > 0 ? avoidSet : null;
    const preferNot = preferNotSet && preferNotSet.size > 0 ? preferNotSet : null;
    if (preferNot) {
      const strict = (a: Agent) => preferNot.has(a.name) || (avoid !== null && avoid.has(a.name));
      const p = this.pickTiers(m, req, strict, now);
      if (p) return p;
    }
    return this.pickTiers(m, req, avoid ? (a: Agent) => avoid.has(a.name) : null, now);
  }

  /**
   * Why no connected agent could ever run a node with `req` (ignoring load, control,
   * health and breakers), naming what is missing; null when some connected agent can.
   */
  whyNoMatch(req: Requirement): string | null {
    const platform = normalizePlatform(req.platform);
    const live = [...this.classes.values()].filter((c) => c.connected > 0);
    const withPlatform = live.filter((c) => c.native.has(platform) || c.emulated.has(platform));
    if (withPlatform.length === 0) return `no connected agent has platform ${platform}`;
    const usable = req.allowEmulation ? withPlatform : withPlatform.filter((c) => c.native.has(platform));
    if (usable.length === 0) {
      const emulating = this.connectedNames(withPlatform);
      return `no connected agent has platform ${platform} natively (${emulating.length === 1 ? 'agent' : 'agents'} ${names(emulating)} ${emulating.length === 1 ? 'emulates' : 'emulate'} it; set allow_emulation: true)`;
    }
    const labelled = usable.filter((c) => labelsMatch(c, req));
    if (labelled.length === 0) {
      const rules: Array<{ text: string; ok: (c: CapClass) => boolean; not: boolean }> = [];
      for (const [k, v] of Object.entries(req.labels)) rules.push({ text: `${k}=${v}`, ok: (c) => c.labels.get(k) === v, not: false });
      for (const [k, vs] of Object.entries(req.labelsNot)) {
        for (const v of vs) rules.push({ text: `${k}!=${v}`, ok: (c) => c.labels.get(k) !== v, not: true });
      }
      const impossible = rules.filter((r) => !usable.some(r.ok));
      const where = `with platform ${platform}`;
      const has = impossible.filter((r) => !r.not).map((r) => r.text);
      const hasNot = impossible.filter((r) => r.not).map((r) => r.text.replace('!=', '='));
      const parts: string[] = [];
      if (has.length > 0) parts.push(`no connected agent ${where} has ${has.length === 1 ? 'label' : 'labels'} ${has.join(', ')}`);
      if (hasNot.length > 0) parts.push(`every connected agent ${where} has ${hasNot.join(', ')} (the node requires ${impossible.filter((r) => r.not).map((r) => r.text).join(', ')})`);
      if (parts.length > 0) return parts.join('; ');
      return `no connected agent ${where} has labels ${rules.map((r) => r.text).join(', ')} together`;
    }
    if (req.gpus) {
      const g = req.gpus;
      if (!labelled.some((c) => gpuCount(c, g) >= g.count)) {
        let most = 0;
        let on: CapClass | null = null;
        for (const c of labelled) {
          const n = gpuCount(c, g);
          if (n > most) {
            most = n;
            on = c;
          }
        }
        const best = on ? ` (the most on one agent is ${most}, on ${this.connectedNames([on])[0]})` : '';
        return `no connected agent has ${describeGpus(g)}${best}`;
      }
    }
    return null;
  }

  // ------------------------------------------------------------ internals

  private slotSet(): SlotSet {
    const s = new SlotSet();
    s.onChange = (kind, id) => {
      const a = s.owner;
      if (!a || !a.current) return;
      if (kind === 'delete') {
        a.gpusInUse.delete(id!);
        a.breaker.onRelease(id!);
      } else if (kind === 'clear') {
        a.gpusInUse.clear();
        a.breaker.onReleaseAll();
      }
      this.reindex(a);
    };
    return s;
  }

  private classOf(a: AgentEntry): CapClass | null {
    const own = a instanceof Agent ? a.cls : null;
    if (own) return own;
    if (!a.hello) return null;
    return this.classes.get(classKey(a.hello)) ?? buildClass(a.hello);
  }

  private attach(a: Agent): void {
    if (!a.hello) return;
    const key = classKey(a.hello);
    let cls = this.classes.get(key);
    if (!cls) {
      cls = buildClass(a.hello, key);
      this.classes.set(key, cls);
      this.version++;
    }
    cls.members.add(a);
    a.cls = cls;
    this.reindex(a);
  }

  private detach(a: Agent): void {
    const cls = a.cls;
    if (!cls) return;
    if (a.heapIx >= 0) heapRemove(cls.heap, a.heapIx);
    if (a.countedConnected) cls.connected--;
    if (a.countedFree) this.free--;
    a.countedConnected = false;
    a.countedFree = false;
    cls.members.delete(a);
    a.cls = null;
    if (cls.members.size === 0) {
      this.classes.delete(cls.key);
      this.version++;
    }
  }

  private reindexEntry(a: AgentEntry): void {
    if (a instanceof Agent) this.reindex(a);
  }

  /** Brings the agent's place in its class (connected count, heap, free count) up to date. */
  private reindex(a: Agent): void {
    if (!a.current) return; // a replaced entry
    if (a.breaker.state === 'open') this.openBreakers.add(a.name);
    const cls = a.cls;
    if (!cls) return;
    const conn = a.state === 'connected';
    if (conn !== a.countedConnected) {
      cls.connected += conn ? 1 : -1;
      a.countedConnected = conn;
    }
    a.runs = a.running.size;
    a.load = a.maxJobs > 0 ? a.runs / a.maxJobs : Infinity;
    const eligible = a.eligible;
    if (eligible) {
      if (a.heapIx < 0) heapInsert(cls.heap, a);
      else heapUpdate(cls.heap, a.heapIx);
    } else if (a.heapIx >= 0) {
      heapRemove(cls.heap, a.heapIx);
    }
    const free = eligible && a.running.size < a.maxJobs;
    if (free !== a.countedFree) {
      this.free += free ? 1 : -1;
      a.countedFree = free;
    }
  }

  private matching(req: Requirement, key?: string): MatchSet {
    const k = key ?? requirementKey(req);
    const hit = this.matchCache.get(k);
    if (hit && hit.version === this.version) return hit;
    const m: MatchSet = { version: this.version, native: [], emulated: [] };
    for (const c of this.classes.values()) {
      const tier = classTier(c, req);
      if (tier) m[tier].push(c);
    }
    if (this.matchCache.size >= 4096) this.matchCache.clear();
    this.matchCache.set(k, m);
    return m;
  }

  private pickTiers(m: MatchSet, req: Requirement, excluded: ((a: Agent) => boolean) | null, now: number): Placement | null {
    const p = this.pickIn(m.native, req, excluded, now);
    if (p || !req.allowEmulation) return p;
    return this.pickIn(m.emulated, req, excluded, now);
  }

  private pickIn(classes: CapClass[], req: Requirement, excluded: ((a: Agent) => boolean) | null, now: number): Placement | null {
    let best: Agent | null = null;
    let bestGpus: number[] = [];
    const g = req.gpus;
    for (const c of classes) {
      if (c.heap.length === 0) continue;
      if (g) {
        // GPUs are per agent: look at every agent of the class that may get work
        for (const a of c.heap) {
          if (a.running.size >= a.maxJobs || (best !== null && !less(a, best)) || excluded?.(a) || this.freeSlots(a, now) === 0) continue;
          const gpus = this.allocateGpus(a, g);
          if (gpus) {
            best = a;
            bestGpus = gpus;
          }
        }
      } else {
        const a = excluded ? heapFirst(c.heap, excluded) : c.heap[0]!;
        if (a && a.running.size < a.maxJobs && (best === null || less(a, best))) best = a;
      }
    }
    return best ? { agent: best, gpus: bestGpus } : null;
  }

  private connectedNames(classes: CapClass[]): string[] {
    const out: string[] = [];
    for (const c of classes) for (const a of c.members) if (a.state === 'connected') out.push(a.name);
    return out.sort();
  }
}

// ---------------------------------------------------------------- classes

function classKey(hello: HelloPayload): string {
  const plats = new Map<string, boolean>();
  for (const p of hello.platforms) {
    const n = normalizePlatform(p.platform);
    plats.set(n, (plats.get(n) ?? false) || !p.emulated);
  }
  const platformPart = [...plats].map(([p, native]) => `${p}${native ? '' : '~emulated'}`).sort();
  const labelPart = Object.keys(hello.labels)
    .sort()
    .map((k) => [k, hello.labels[k]]);
  const gpuPart = hello.gpus.map((g) => `${g.memory_mib}:${g.model}`).sort();
  return JSON.stringify([platformPart, labelPart, gpuPart]);
}

function buildClass(hello: HelloPayload, key = classKey(hello)): CapClass {
  const native = new Set<string>();
  const emulated = new Set<string>();
  for (const p of hello.platforms) {
    const n = normalizePlatform(p.platform);
    if (!p.emulated) native.add(n);
  }
  for (const p of hello.platforms) {
    const n = normalizePlatform(p.platform);
    if (p.emulated && !native.has(n)) emulated.add(n);
  }
  const gpus = hello.gpus.map((g) => ({ index: g.index, modelLower: g.model.toLowerCase(), memory: g.memory_mib }));
  return new CapClass(key, native, emulated, new Map(Object.entries(hello.labels)), gpus);
}

function labelsMatch(c: CapClass, req: Requirement): boolean {
  for (const [k, v] of Object.entries(req.labels)) if (c.labels.get(k) !== v) return false;
  for (const [k, not] of Object.entries(req.labelsNot)) {
    const have = c.labels.get(k);
    if (have !== undefined && not.includes(have)) return false;
  }
  return true;
}

function gpuCount(c: CapClass, g: GpuRequirement): number {
  const modelLower = g.model ? g.model.toLowerCase() : null;
  let n = 0;
  for (const x of c.gpus) if (gpuFits(x, g, modelLower)) n++;
  return n;
}

/** How agents of the class run `req`'s platform, when their labels and GPUs fit it. */
function classTier(c: CapClass, req: Requirement): Tier | null {
  const p = normalizePlatform(req.platform);
  const tier: Tier | null = c.native.has(p) ? 'native' : c.emulated.has(p) ? 'emulated' : null;
  if (!tier || !labelsMatch(c, req)) return null;
  if (req.gpus && gpuCount(c, req.gpus) < req.gpus.count) return null;
  return tier;
}

// ---------------------------------------------------------------- indexed heap

function place(h: Agent[], i: number, a: Agent): void {
  h[i] = a;
  a.heapIx = i;
}

function siftUp(h: Agent[], i: number): void {
  const a = h[i]!;
  while (i > 0) {
    const p = (i - 1) >> 1;
    const parent = h[p]!;
    if (!less(a, parent)) break;
    place(h, i, parent);
    i = p;
  }
  place(h, i, a);
}

function siftDown(h: Agent[], i: number): void {
  const a = h[i]!;
  const n = h.length;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && less(h[r]!, h[l]!) ? r : l;
    if (!less(h[c]!, a)) break;
    place(h, i, h[c]!);
    i = c;
  }
  place(h, i, a);
}

function heapInsert(h: Agent[], a: Agent): void {
  h.push(a);
  a.heapIx = h.length - 1;
  siftUp(h, h.length - 1);
}

function heapUpdate(h: Agent[], i: number): void {
  const a = h[i]!;
  siftUp(h, i);
  siftDown(h, a.heapIx);
}

function heapRemove(h: Agent[], i: number): void {
  const a = h[i]!;
  const last = h.pop()!;
  a.heapIx = -1;
  if (i < h.length) {
    place(h, i, last);
    siftUp(h, i);
    siftDown(h, last.heapIx);
  }
}

/** The best agent of the heap not excluded, visiting it best-first (O(k log k) for k skipped). */
function heapFirst(h: Agent[], excluded: (a: Agent) => boolean): Agent | null {
  if (h.length === 0) return null;
  const frontier: number[] = [0];
  while (frontier.length > 0) {
    let bi = 0;
    for (let j = 1; j < frontier.length; j++) if (less(h[frontier[j]!]!, h[frontier[bi]!]!)) bi = j;
    const i = frontier[bi]!;
    frontier[bi] = frontier[frontier.length - 1]!;
    frontier.pop();
    const a = h[i]!;
    if (a.running.size >= a.maxJobs) return null; // everything below is full too
    if (!excluded(a)) return a;
    const l = 2 * i + 1;
    if (l < h.length) frontier.push(l);
    if (l + 1 < h.length) frontier.push(l + 1);
  }
  return null;
}
