/**
 * The agents the coordinator knows about, in memory: who is connected, what each one can
 * run, which attempts hold its slots, and when a silent or disconnected agent counts as
 * lost.
 *
 * Agent states:
 * - `connected`: a WebSocket is open and the hello was accepted. It gets work only once
 *   the welcome has been sent (`welcomed`), so no assignment can overtake the welcome.
 * - `disconnected`: the socket closed (or the coordinator restarted while the agent had
 *   attempts); its attempts keep their slots until `lostAt`, so an agent that comes back
 *   in time carries on without re-running anything.
 * - `lost`: silent past the lost timeout; its attempts were re-queued elsewhere.
 */
import { normalizePlatform, type HelloPayload, type Payload, type ToAgentType } from '../../shared/index.js';

export interface AgentChannel {
  send<T extends ToAgentType>(type: T, payload: Payload<T>): void;
  close(code: number, reason: string): void;
}

export type AgentState = 'connected' | 'disconnected' | 'lost';

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
}

export class AgentRegistry {
  private readonly agents = new Map<string, AgentEntry>();

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
      entry = {
        name,
        session,
        hello: null,
        state: 'disconnected',
        welcomed: false,
        channel: null,
        running: new Set(),
        platforms: new Set(),
        maxJobs: 0,
        connectedAt: null,
        lastSeenAt: now,
        lostAt: now + graceMs,
      };
      this.agents.set(name, entry);
    }
    return entry;
  }

  /** Registers a connection after an accepted hello; returns the previous entry state. */
  connect(hello: HelloPayload, channel: AgentChannel, now: number): { entry: AgentEntry; previousSession: string | null } {
    const prev = this.agents.get(hello.name);
    const entry: AgentEntry = {
      name: hello.name,
      session: hello.session,
      hello,
      state: 'connected',
      welcomed: false,
      channel,
      running: prev?.running ?? new Set(),
      platforms: new Set(hello.platforms.map((p) => normalizePlatform(p.platform))),
      maxJobs: hello.max_jobs,
      connectedAt: now,
      lastSeenAt: now,
      lostAt: null,
    };
    this.agents.set(hello.name, entry);
    return { entry, previousSession: prev ? prev.session : null };
  }

  freeSlots(a: AgentEntry): number {
    return a.state === 'connected' && a.welcomed ? a.maxJobs - a.running.size : 0;
  }

  /** true when the agent can run a node with this platform and these labels (ignoring load). */
  matches(a: AgentEntry, platform: string, labels: Record<string, string>): boolean {
    if (a.state !== 'connected' || !a.hello) return false;
    if (!a.platforms.has(normalizePlatform(platform))) return false;
    for (const [k, v] of Object.entries(labels)) if (a.hello.labels[k] !== v) return false;
    return true;
  }

  forget(name: string): void {
    this.agents.delete(name);
  }
}
