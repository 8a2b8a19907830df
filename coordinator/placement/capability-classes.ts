/**
 * Capability classes: agents with the same capabilities (platforms and which of them are
 * emulated, labels, GPU inventory) form one class, so matching a requirement looks at
 * classes, not agents. A class holds its members, how many of them are connected, and the
 * heap of those that may get work now (agent-heap.ts). A requirement's matching classes
 * are cached by its key and recomputed when a class appears or disappears (`version`).
 */
import { normalizePlatform, type GpuRequirement, type HelloPayload } from '../../shared/index.js';
import type { HeapMember } from './agent-heap.js';
import { gpuFits, type GpuCap } from './gpu-allocation.js';
import { requirementKey, type Requirement } from './requirement.js';

/** Agents with identical capabilities. */
export class CapClass<A extends HeapMember = HeapMember> {
  readonly members = new Set<A>();
  /** Members that may get work now, as a min-heap by (load, running, name). */
  readonly heap: A[] = [];
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

export type Tier = 'native' | 'emulated';

/** The classes that can run a requirement, by how. */
export interface MatchSet<A extends HeapMember> {
  version: number;
  native: Array<CapClass<A>>;
  emulated: Array<CapClass<A>>;
}

/** The key of the class an agent with this hello belongs to. */
export function classKey(hello: HelloPayload): string {
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

/** A new, empty class for agents with this hello's capabilities (a platform both native and emulated counts as native). */
export function buildClass<A extends HeapMember>(hello: HelloPayload, key = classKey(hello)): CapClass<A> {
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
  return new CapClass<A>(key, native, emulated, new Map(Object.entries(hello.labels)), gpus);
}

/** true when the class's labels meet the requirement's exact and `!=` labels. */
export function labelsMatch(c: CapClass<HeapMember>, req: Requirement): boolean {
  for (const [k, v] of Object.entries(req.labels)) if (c.labels.get(k) !== v) return false;
  for (const [k, not] of Object.entries(req.labelsNot)) {
    const have = c.labels.get(k);
    if (have !== undefined && not.includes(have)) return false;
  }
  return true;
}

/** How many of the class's GPUs meet the memory and model parts of `g` (ignoring use). */
export function gpuCount(c: CapClass<HeapMember>, g: GpuRequirement): number {
  const modelLower = g.model ? g.model.toLowerCase() : null;
  let n = 0;
  for (const x of c.gpus) if (gpuFits(x, g, modelLower)) n++;
  return n;
}

/** How agents of the class run `req`'s platform, when their labels and GPUs fit it. */
export function classTier(c: CapClass<HeapMember>, req: Requirement): Tier | null {
  const p = normalizePlatform(req.platform);
  const tier: Tier | null = c.native.has(p) ? 'native' : c.emulated.has(p) ? 'emulated' : null;
  if (!tier || !labelsMatch(c, req)) return null;
  if (req.gpus && gpuCount(c, req.gpus) < req.gpus.count) return null;
  return tier;
}

/** The classes of agents (by key), with the matches of each requirement cached until a class appears or disappears. */
export class ClassIndex<A extends HeapMember> {
  private readonly classes = new Map<string, CapClass<A>>();
  /** Bumped when a class appears or disappears: cached matches are stale then. */
  private version = 0;
  private readonly matchCache = new Map<string, MatchSet<A>>();

  values(): IterableIterator<CapClass<A>> {
    return this.classes.values();
  }

  /** The existing class for this hello, or null. */
  find(hello: HelloPayload): CapClass<A> | null {
    return this.classes.get(classKey(hello)) ?? null;
  }

  /** Adds `a` to the class for its hello, creating the class when it is new. */
  join(hello: HelloPayload, a: A): CapClass<A> {
    const key = classKey(hello);
    let cls = this.classes.get(key);
    if (!cls) {
      cls = buildClass<A>(hello, key);
      this.classes.set(key, cls);
      this.version++;
    }
    cls.members.add(a);
    return cls;
  }

  /** Removes `a` from `cls` (the caller took it out of the heap); an empty class goes away. */
  leave(cls: CapClass<A>, a: A): void {
    cls.members.delete(a);
    if (cls.members.size === 0) {
      this.classes.delete(cls.key);
      this.version++;
    }
  }

  /** The classes that can run `req` (`key` is `requirementKey(req)` when the caller has it). */
  matching(req: Requirement, key?: string): MatchSet<A> {
    const k = key ?? requirementKey(req);
    const hit = this.matchCache.get(k);
    if (hit && hit.version === this.version) return hit;
    const m: MatchSet<A> = { version: this.version, native: [], emulated: [] };
    for (const c of this.classes.values()) {
      const tier = classTier(c, req);
      if (tier) m[tier].push(c);
    }
    if (this.matchCache.size >= 4096) this.matchCache.clear();
    this.matchCache.set(k, m);
    return m;
  }
}
