/**
 * The ready queues and the placement pass: which ready node goes to which agent next.
 *
 * Ready nodes wait in queues, one per requirement (platform, labels, `!=` labels,
 * emulation allowed, GPUs; and the agents the node must avoid), so that a freed slot only
 * looks at the queues, not at every ready node. Each queue is ordered by priority (higher
 * first), then by when the node became ready (FIFO): one FIFO bucket per priority, buckets
 * in priority order (refs get increasing sequence numbers, so appending to a bucket keeps
 * it FIFO and a pop is O(1)). Each placement takes the best head among the queues some
 * agent can serve now (the queues in a heap by their heads) and asks the registry for the
 * agent (agent-registry.ts: native before emulated, least loaded, fewer running, name;
 * that costs O(capability classes + log agents), not O(agents)). Requirements and their
 * keys are in requirement.ts.
 *
 * Budgets (budgets.ts): a ref's budget key is part of its queue's key, so one queue's refs
 * share one budget; a queue whose budget is full (`admit` says no) leaves the pass like a
 * queue no agent can take now, and holds back nobody else's nodes.
 *
 * Entries are removed lazily: a queued node that was cancelled (or dispatched by another
 * path) meanwhile is dropped when it reaches the head (`isLive`).
 */
import { KilnError } from '../../shared/index.js';
import type { AgentEntry } from './agent-entry.js';
import type { AgentRegistry } from './agent-registry.js';
import { requirementKey, type Requirement } from './requirement.js';
import type { RefBudget } from './budgets.js';

export interface ReadyRef extends Requirement {
  buildId: string;
  node: string;
  /** Global order of becoming ready. */
  seq: number;
  /** Higher is placed first. */
  priority: number;
  /** Hard: never these agents (they rejected the node). */
  avoid?: ReadonlySet<string>;
  /** Soft: these agents only when no other one is free (an infrastructure failure happened there). */
  preferNot?: ReadonlySet<string>;
  /** Build concurrency and concurrency group (budgets.ts); null: none. */
  budget?: RefBudget | null;
}

/** Refs of one priority, oldest first (`head` is the next one). */
interface Bucket {
  priority: number;
  /** Taken refs before `head` are cleared (undefined) so they can be collected. */
  items: Array<ReadyRef | undefined>;
  head: number;
}

interface Queue {
  key: string;
  /** requirementKey(req): the registry caches matching agent classes by it. */
  reqKey: string;
  req: Requirement;
  /** Non-empty buckets, highest priority first. */
  buckets: Bucket[];
  byPriority: Map<number, Bucket>;
}

/** true when `a` goes before `b`: higher priority, then older. */
function before(a: ReadyRef, b: ReadyRef): boolean {
  return a.priority !== b.priority ? a.priority > b.priority : a.seq < b.seq;
}

function head(q: Queue): ReadyRef | undefined {
  const b = q.buckets[0];
  return b ? b.items[b.head] : undefined;
}

/** Queues by their heads: a binary heap, best head at [0]. */
function queueBefore(a: Queue, b: Queue): boolean {
  return before(head(a)!, head(b)!);
}

function siftDown(h: Queue[], i: number): void {
  const n = h.length;
  const x = h[i]!;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && queueBefore(h[r]!, h[l]!) ? r : l;
    if (!queueBefore(h[c]!, x)) break;
    h[i] = h[c]!;
    i = c;
  }
  h[i] = x;
}

function popTop(h: Queue[]): void {
  const last = h.pop();
  if (h.length > 0 && last !== undefined) {
    h[0] = last;
    siftDown(h, 0);
  }
}

function checkRef(ref: Omit<ReadyRef, 'seq'>): void {
  const what = `ready node ${ref.buildId}/${ref.node}`;
  if (typeof ref.platform !== 'string' || ref.platform.length === 0) throw new KilnError('E_INVALID', `${what}: platform must be a non-empty string`);
  if (!Number.isFinite(ref.priority)) throw new KilnError('E_INVALID', `${what}: priority must be a finite number (got ${String(ref.priority)})`);
  if (ref.gpus !== null && (!Number.isInteger(ref.gpus.count) || ref.gpus.count < 1)) {
    throw new KilnError('E_INVALID', `${what}: gpus.count must be an integer >= 1 (got ${String(ref.gpus.count)})`);
  }
}

export class Scheduler {
  private readonly queues = new Map<string, Queue>();
  private seq = 0;
  private count = 0;

  constructor(
    private readonly agents: AgentRegistry,
    private readonly clock: () => number = Date.now,
    /** Whether a budget has room for one more node now (budgets.ts); absent: budgets are not checked. */
    private readonly admit?: (budget: RefBudget) => boolean,
  ) {}

  enqueue(ref: Omit<ReadyRef, 'seq'>): ReadyRef {
    checkRef(ref);
    const reqKey = requirementKey(ref);
    let key = ref.avoid && ref.avoid.size > 0 ? `${reqKey} avoid=${JSON.stringify([...ref.avoid].sort())}` : reqKey;
    const budget = ref.budget ?? null;
    if (budget !== null) key += budget.key;
    let q = this.queues.get(key);
    if (!q) {
      const req: Requirement = { platform: ref.platform, labels: ref.labels, labelsNot: ref.labelsNot, allowEmulation: ref.allowEmulation, gpus: ref.gpus };
      q = { key, reqKey, req, buckets: [], byPriority: new Map() };
      this.queues.set(key, q);
    }
    // Always the same shape (no spread, optional fields present), so property access on refs stays monomorphic.
    const item: ReadyRef = {
      buildId: ref.buildId,
      node: ref.node,
      seq: ++this.seq,
      priority: ref.priority,
      platform: ref.platform,
      labels: ref.labels,
      labelsNot: ref.labelsNot,
      allowEmulation: ref.allowEmulation,
      gpus: ref.gpus,
      avoid: ref.avoid,
      preferNot: ref.preferNot,
      budget,
    };
    let b = q.byPriority.get(item.priority);
    if (!b) {
      b = { priority: item.priority, items: [], head: 0 };
      q.byPriority.set(item.priority, b);
      let i = q.buckets.length;
      while (i > 0 && q.buckets[i - 1]!.priority < item.priority) i--;
      q.buckets.splice(i, 0, b);
    }
    b.items.push(item);
    this.count++;
    return item;
  }

  /** Queued refs, including ones not yet found dead. */
  get size(): number {
    return this.count;
  }

  /** Removes the head of the queue. */
  private shift(q: Queue): void {
    const b = q.buckets[0]!;
    b.items[b.head] = undefined;
    b.head++;
    this.count--;
    if (b.head === b.items.length) {
      q.buckets.shift();
      q.byPriority.delete(b.priority);
    } else if (b.head > 1024 && b.head * 2 > b.items.length) {
      b.items = b.items.slice(b.head);
      b.head = 0;
    }
  }

  /** Drops dead refs from the head; false when the queue is empty then. */
  private live(q: Queue, isLive: (ref: ReadyRef) => boolean): boolean {
    for (;;) {
      const r = head(q);
      if (r === undefined) return false;
      if (isLive(r)) return true;
      this.shift(q);
    }
  }

  /**
   * Places as many ready nodes as free slots allow. `isLive` tells whether a queued ref is
   * still ready; `assign` performs the dispatch and must take the slot (`registry.hold`,
   * with the GPUs it is given). Returns the number of refs handed to `assign`.
   */
  placeAll(isLive: (ref: ReadyRef) => boolean, assign: (ref: ReadyRef, agent: AgentEntry, gpus: number[]) => void): number {
    const now = this.clock();
    this.agents.tick(now);
    if (this.count === 0 || !this.agents.anyFree()) return 0;
    // Queues by their best live head; a queue whose head no agent can take now leaves the pass.
    let order: Queue[] = [];
    const collect = () => {
      order = [];
      for (const q of this.queues.values()) {
        if (this.live(q, isLive)) order.push(q);
        else this.queues.delete(q.key);
      }
      for (let i = (order.length >> 1) - 1; i >= 0; i--) siftDown(order, i);
    };
    collect();
    let placed = 0;
    while (order.length > 0) {
      const q = order[0]!;
      const ref = head(q)!;
      if (ref.budget && this.admit && !this.admit(ref.budget)) {
        // Its budget is full: the whole queue waits (its refs share the budget); others go on.
        popTop(order);
        continue;
      }
      const choice = this.agents.pick(q.req, now, q.reqKey, ref.avoid, ref.preferNot);
      if (!choice) {
        popTop(order);
        continue;
      }
      this.shift(q);
      const seqBefore = this.seq;
      assign(ref, choice.agent, choice.gpus);
      placed++;
      if (!this.agents.anyFree()) break;
      if (this.seq !== seqBefore) {
        // assign queued something (a retry): heads changed, start the pass over
        collect();
        continue;
      }
      if (this.live(q, isLive)) siftDown(order, 0);
      else {
        this.queues.delete(q.key);
        popTop(order);
      }
    }
    for (const q of this.queues.values()) if (q.buckets.length === 0) this.queues.delete(q.key);
    return placed;
  }

  /** Queued refs in placement order (priority, then age) across all queues, for views. */
  *pending(): Generator<ReadyRef> {
    const all: ReadyRef[] = [];
    for (const q of this.queues.values()) for (const b of q.buckets) for (let i = b.head; i < b.items.length; i++) all.push(b.items[i]!);
    all.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
    yield* all;
  }
}
