/**
 * The agents the coordinator knows about, in memory: who is connected, what each one can
 * run, which attempts (and GPUs) hold its slots, whether it may get work now (operator
 * control, reported health, circuit breaker), and the placement index that picks the
 * agent for a ready node.
 *
 * Agent states and their transitions are in shared/states.ts (AGENT_STATES). Entries are
 * read-only outside this module (agent-entry.ts): every change goes through a method here
 * (`connect`, `markWelcomed`, `markDisconnected`, `markLost`, `markSeen`, `setControl`,
 * `setHeartbeat`, `hold`, `release`, `recordInfraFailure`, ...), which checks the state
 * table and re-indexes the agent.
 *
 * An agent gets new work only while connected, welcomed, `control === 'active'` (not
 * paused or draining by an operator), healthy (`health.accepting`) and its circuit
 * breaker admits it (circuit-breaker.ts).
 *
 * Watchers (`watch`, the events stream) hear the name of an agent that changed (connect,
 * welcome, disconnect, lost, control, heartbeat, slots, breaker); with none, a change costs
 * one length check.
 *
 * Placement index: agents with the same capabilities form a class (capability-classes.ts).
 * Each class keeps the agents that may get work now in an indexed min-heap by
 * (load = running / max_jobs, running, name) (agent-heap.ts), so the least-loaded agent
 * of a class is its root. A requirement's matching classes are cached, so picking an
 * agent costs O(classes + log agents), not O(agents).
 */
import { canAgentTransition, normalizePlatform, type GpuRequirement, type HealthPayload, type HeartbeatPayload, type HelloPayload } from '../../shared/index.js';
import { Agent, type AgentChannel, type AgentControl, type AgentEntry } from './agent-entry.js';
import { heapFirst, heapInsert, heapRemove, heapUpdate, less } from './agent-heap.js';
import { buildClass, classTier, ClassIndex, type CapClass, type MatchSet } from './capability-classes.js';
import { CircuitBreaker, DEFAULT_BREAKER_OPTIONS, checkBreakerOptions, type BreakerOptions } from './circuit-breaker.js';
import { allocateGpus } from './gpu-allocation.js';
import type { Requirement } from './requirement.js';
import { whyNoMatch } from './why-waiting.js';

export type { AgentChannel, AgentControl, AgentEntry, AgentMetrics, AgentState, BreakerReader } from './agent-entry.js';

export interface RegistryOptions {
  breaker?: BreakerOptions;
}

/** The agent chosen for a ready node, with the GPUs it would get. */
export interface Placement {
  agent: AgentEntry;
  gpus: number[];
}

const HEALTHY: HealthPayload = Object.freeze({ accepting: true, problem: null }) as HealthPayload;

export class AgentRegistry {
  private readonly agents = new Map<string, Agent>();
  private readonly classes = new ClassIndex<Agent>();
  /** Agents whose breaker is open (tick looks only at these). */
  private readonly openBreakers = new Set<string>();
  /** Agents that may get work now and have a free slot. */
  private free = 0;
  private readonly breakerOptions: BreakerOptions;
  /** Told the name of an agent whose view changed (see `watch`). */
  private watchers: Array<(name: string) => void> = [];

  constructor(opts: RegistryOptions = {}) {
    this.breakerOptions = checkBreakerOptions({ ...(opts.breaker ?? DEFAULT_BREAKER_OPTIONS) });
  }

  /** Calls `fn` with the name of each agent whose view changes from now on, until the returned function is called. */
  watch(fn: (name: string) => void): () => void {
    this.watchers = [...this.watchers, fn];
    return () => {
      this.watchers = this.watchers.filter((w) => w !== fn);
    };
  }

  private changed(name: string): void {
    for (const w of this.watchers) w(name);
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

  // ------------------------------------------------------------ life cycle

  /** Records a placeholder (`disconnected`, lost at `now + graceMs`) for an agent that held attempts before a coordinator restart. */
  placeholder(name: string, session: string, now: number, graceMs: number): AgentEntry {
    let entry = this.agents.get(name);
    if (!entry) {
      entry = new Agent(name, {
        session,
        hello: null,
        state: 'disconnected',
        channel: null,
        slots: new Set(),
        platforms: new Set(),
        maxJobs: 0,
        connectedAt: null,
        lastSeenAt: now,
        lostAt: now + graceMs,
        control: 'active',
        health: HEALTHY,
        gpus: new Map(),
        breaker: new CircuitBreaker(this.breakerOptions),
      });
      entry.current = true;
      this.agents.set(name, entry);
    }
    return entry;
  }

  /**
   * Registers a connection after an accepted hello (any state -> `connected`); returns
   * the previous entry's session. The new entry keeps the previous one's operator
   * control, circuit breaker, running attempts and their GPUs; the previous entry stays
   * as it is but no longer takes part in placement.
   */
  connect(hello: HelloPayload, channel: AgentChannel, now: number): { entry: AgentEntry; previousSession: string | null } {
    const prev = this.agents.get(hello.name);
    if (prev) {
      if (!canAgentTransition(prev.state, 'connected')) throw new Error(`illegal agent ${hello.name} transition ${prev.state} -> connected`);
      this.detach(prev);
      prev.current = false;
    }
    const entry = new Agent(hello.name, {
      session: hello.session,
      hello,
      state: 'connected',
      channel,
      slots: prev?.slots ?? new Set(),
      platforms: new Set(hello.platforms.map((p) => normalizePlatform(p.platform))),
      maxJobs: hello.max_jobs,
      connectedAt: now,
      lastSeenAt: now,
      lostAt: null,
      control: prev?.control ?? 'active',
      health: hello.health ?? HEALTHY,
      gpus: prev?.gpus ?? new Map(),
      breaker: prev?.breaker ?? new CircuitBreaker(this.breakerOptions),
    });
    entry.current = true;
    this.agents.set(hello.name, entry);
    this.attach(entry);
    if (this.watchers.length !== 0) this.changed(hello.name);
    return { entry, previousSession: prev ? prev.session : null };
  }

  /** The welcome was sent on the entry's connection: it may get work from now on. */
  markWelcomed(a: AgentEntry): void {
    const x = own(a);
    x.setWelcomed();
    this.reindex(x);
    if (this.watchers.length !== 0) this.changed(x.name);
  }

  /** The entry's socket closed (connected -> disconnected): its attempts keep their slots until `lostAt` (null: nothing waits for it, it left). */
  markDisconnected(a: AgentEntry, lostAt: number | null): void {
    const x = own(a);
    x.moveTo('disconnected', null, lostAt);
    this.reindex(x);
    if (this.watchers.length !== 0) this.changed(x.name);
  }

  /** The agent was silent or away past the lost timeout (-> lost). Its slots stay held until the caller releases them. */
  markLost(a: AgentEntry): void {
    const x = own(a);
    x.moveTo('lost', null, null);
    this.reindex(x);
    if (this.watchers.length !== 0) this.changed(x.name);
  }

  /** A frame came from the agent at `now`. */
  markSeen(a: AgentEntry, now: number): void {
    own(a).setLastSeen(now);
  }

  /** The operator's control of the agent (`active` agents only get new work). */
  setControl(a: AgentEntry, control: AgentControl): void {
    const x = own(a);
    if (x.control === control) return;
    x.setControl(control);
    this.reindex(x);
    if (this.watchers.length !== 0) this.changed(x.name);
  }

  /** Stores a heartbeat's load, GPU use and health. */
  setHeartbeat(a: AgentEntry, hb: HeartbeatPayload, now: number): void {
    const x = own(a);
    if (hb.load !== undefined || hb.gpus !== undefined) x.setMetrics({ at: now, load: hb.load ?? null, gpus: hb.gpus ?? [] });
    if (hb.health && x.setHealth({ accepting: hb.health.accepting, problem: hb.health.problem })) this.reindex(x);
    if (this.watchers.length !== 0) this.changed(x.name);
  }

  forget(name: string): void {
    const a = this.agents.get(name);
    if (!a) return;
    this.detach(a);
    a.current = false;
    this.agents.delete(name);
    this.openBreakers.delete(name);
    if (this.watchers.length !== 0) this.changed(name);
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
    return allocateGpus(a.hello?.gpus, a.gpusInUse, req);
  }

  // ------------------------------------------------------------ slots

  /** An attempt takes one of the agent's slots (and these GPUs). */
  hold(a: AgentEntry, attemptId: string, gpus: number[], now: number): void {
    const x = own(a);
    if (gpus.length > 0) x.gpus.set(attemptId, [...gpus]);
    x.breaker.onHold(attemptId, now);
    x.slots.add(attemptId);
    // a replaced entry shares its slots with the current one: that one's place changes
    const cur = this.agents.get(x.name);
    if (cur !== undefined && cur.slots === x.slots) this.reindex(cur);
    if (this.watchers.length !== 0) this.changed(x.name);
  }

  /** The attempt gives its slot and GPUs back (and stops being the breaker's trial). */
  release(name: string, attemptId: string): void {
    const a = this.agents.get(name);
    if (!a) return;
    a.slots.delete(attemptId);
    a.gpus.delete(attemptId);
    a.breaker.onRelease(attemptId);
    this.reindex(a);
    if (this.watchers.length !== 0) this.changed(name);
  }

  // ------------------------------------------------------------ health, breaker

  recordInfraFailure(name: string, now: number): void {
    const a = this.agents.get(name);
    if (!a) return;
    if (a.breaker.recordFailure(now)) this.openBreakers.add(name);
    this.reindex(a);
    if (this.watchers.length !== 0) this.changed(name);
  }

  /** An attempt on the agent ended without an infrastructure failure (`attemptId`: see CircuitBreaker.recordSuccess). */
  recordHealthy(name: string, now: number, attemptId?: string): void {
    const a = this.agents.get(name);
    if (!a) return;
    if (!a.breaker.recordSuccess(now, attemptId)) return;
    this.reindex(a);
    if (this.watchers.length !== 0) this.changed(name);
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
        if (this.watchers.length !== 0) this.changed(name);
      }
      if (a.breaker.state !== 'open') this.openBreakers.delete(name);
    }
    return any;
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
    const m = this.classes.matching(req, key);
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
    return whyNoMatch(this.classes.values(), req);
  }

  // ------------------------------------------------------------ internals

  private classOf(a: AgentEntry): CapClass<Agent> | null {
    const cls = a instanceof Agent ? a.cls : null;
    if (cls) return cls;
    if (!a.hello) return null;
    return this.classes.find(a.hello) ?? buildClass<Agent>(a.hello);
  }

  private attach(a: Agent): void {
    if (!a.hello) return;
    a.cls = this.classes.join(a.hello, a);
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
    a.cls = null;
    this.classes.leave(cls, a);
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
    a.runs = a.slots.size;
    a.load = a.maxJobs > 0 ? a.runs / a.maxJobs : Infinity;
    const eligible = a.eligible;
    if (eligible) {
      if (a.heapIx < 0) heapInsert(cls.heap, a);
      else heapUpdate(cls.heap, a.heapIx);
    } else if (a.heapIx >= 0) {
      heapRemove(cls.heap, a.heapIx);
    }
    const free = eligible && a.slots.size < a.maxJobs;
    if (free !== a.countedFree) {
      this.free += free ? 1 : -1;
      a.countedFree = free;
    }
  }

  private pickTiers(m: MatchSet<Agent>, req: Requirement, excluded: ((a: Agent) => boolean) | null, now: number): Placement | null {
    const p = this.pickIn(m.native, req, excluded, now);
    if (p || !req.allowEmulation) return p;
    return this.pickIn(m.emulated, req, excluded, now);
  }

  private pickIn(classes: Array<CapClass<Agent>>, req: Requirement, excluded: ((a: Agent) => boolean) | null, now: number): Placement | null {
    let best: Agent | null = null;
    let bestGpus: number[] = [];
    const g = req.gpus;
    for (const c of classes) {
      if (c.heap.length === 0) continue;
      if (g) {
        // GPUs are per agent: look at every agent of the class that may get work
        for (const a of c.heap) {
          if (a.slots.size >= a.maxJobs || (best !== null && !less(a, best)) || excluded?.(a) || this.freeSlots(a, now) === 0) continue;
          const gpus = allocateGpus(a.hello?.gpus, a.gpus, g);
          if (gpus) {
            best = a;
            bestGpus = gpus;
          }
        }
      } else {
        const a = excluded ? heapFirst(c.heap, excluded) : c.heap[0]!;
        if (a && a.slots.size < a.maxJobs && (best === null || less(a, best))) best = a;
      }
    }
    return best ? { agent: best, gpus: bestGpus } : null;
  }
}

/** The registry's record behind an entry it handed out. */
function own(a: AgentEntry): Agent {
  if (!(a instanceof Agent)) throw new Error(`agent ${a.name}: not an entry of the agent registry`);
  return a;
}
