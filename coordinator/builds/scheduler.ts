/**
 * Placement of ready nodes on agents.
 *
 * Ready nodes wait in FIFO queues, one per requirement (platform + labels), so that a
 * freed slot only looks at the few queues it could serve, not at every ready node. Each
 * placement takes the oldest head among the queues that some agent can serve now and
 * gives it to the least-loaded matching agent with a free slot (ties: fewer running,
 * then name). Entries are removed lazily: a queued node that was cancelled meanwhile is
 * dropped when it reaches the head.
 */
import type { AgentEntry, AgentRegistry } from '../agents/agent-registry.js';

export interface ReadyRef {
  buildId: string;
  node: string;
  /** Global order of becoming ready. */
  seq: number;
  platform: string;
  labels: Record<string, string>;
  /** Agents that rejected this node; it is not offered to them again. */
  avoid?: ReadonlySet<string>;
}

interface Queue {
  key: string;
  platform: string;
  labels: Record<string, string>;
  items: ReadyRef[];
  head: number;
}

export function requirementKey(platform: string, labels: Record<string, string>): string {
  const keys = Object.keys(labels).sort();
  return `${platform}|${keys.map((k) => `${k}=${labels[k]}`).join(',')}`;
}

export class Scheduler {
  private readonly queues = new Map<string, Queue>();
  private seq = 0;

  constructor(private readonly agents: AgentRegistry) {}

  enqueue(ref: Omit<ReadyRef, 'seq'>): void {
    const key = requirementKey(ref.platform, ref.labels);
    let q = this.queues.get(key);
    if (!q) {
      q = { key, platform: ref.platform, labels: ref.labels, items: [], head: 0 };
      this.queues.set(key, q);
    }
    q.items.push({ ...ref, seq: ++this.seq });
  }

  get size(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.items.length - q.head;
    return n;
  }

  private peek(q: Queue, isLive: (ref: ReadyRef) => boolean): ReadyRef | undefined {
    while (q.head < q.items.length) {
      const ref = q.items[q.head]!;
      if (isLive(ref)) return ref;
      q.head++;
    }
    return undefined;
  }

  private shift(q: Queue): void {
    q.head++;
    if (q.head === q.items.length) {
      this.queues.delete(q.key);
    } else if (q.head > 1024 && q.head * 2 > q.items.length) {
      q.items = q.items.slice(q.head);
      q.head = 0;
    }
  }

  private pickAgent(q: Queue, avoid: ReadonlySet<string> | undefined, candidates: AgentEntry[]): AgentEntry | null {
    let best: AgentEntry | null = null;
    let bestLoad = Infinity;
    for (const a of candidates) {
      if (this.agents.freeSlots(a) <= 0 || avoid?.has(a.name)) continue;
      if (!this.agents.matches(a, q.platform, q.labels)) continue;
      const load = a.running.size / a.maxJobs;
      if (
        best === null ||
        load < bestLoad ||
        (load === bestLoad && (a.running.size < best.running.size || (a.running.size === best.running.size && a.name < best.name)))
      ) {
        best = a;
        bestLoad = load;
      }
    }
    return best;
  }

  /**
   * Places as many ready nodes as free slots allow. `isLive` tells whether a queued ref is
   * still ready; `assign` performs the dispatch (and must take one of the agent's slots).
   */
  placeAll(isLive: (ref: ReadyRef) => boolean, assign: (ref: ReadyRef, agent: AgentEntry) => void): number {
    let placed = 0;
    const candidates = this.agents.connected();
    if (candidates.length === 0) return 0;
    for (;;) {
      // Queues whose head could go somewhere now, oldest head first.
      let bestQ: Queue | null = null;
      let bestRef: ReadyRef | undefined;
      let bestAgent: AgentEntry | null = null;
      for (const q of [...this.queues.values()]) {
        const ref = this.peek(q, isLive);
        if (!ref) {
          this.queues.delete(q.key);
          continue;
        }
        if (bestRef && ref.seq > bestRef.seq) continue;
        const agent = this.pickAgent(q, ref.avoid, candidates);
        if (agent) {
          bestQ = q;
          bestRef = ref;
          bestAgent = agent;
        }
      }
      if (!bestQ || !bestRef || !bestAgent) return placed;
      this.shift(bestQ);
      assign(bestRef, bestAgent);
      placed++;
    }
  }

  /** Ready refs in queue order (for status views). */
  *pending(): Generator<ReadyRef> {
    for (const q of this.queues.values()) for (let i = q.head; i < q.items.length; i++) yield q.items[i]!;
  }
}
