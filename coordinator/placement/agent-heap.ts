/**
 * The indexed min-heap each capability class keeps of its agents that may get work now,
 * ordered by (load = running / max_jobs, running, name), so the least-loaded agent of a
 * class is its root. Each member records its own position (`heapIx`), so an agent whose
 * load changed is moved (or removed) in O(log n) without a search.
 */

/** What the heap needs of an agent; `load` and `runs` are cached by the registry's reindex. */
export interface HeapMember {
  readonly name: string;
  /** running / max_jobs as of the last reindex (Infinity when max_jobs is 0). */
  load: number;
  /** Attempts holding a slot, as of the last reindex. */
  runs: number;
  /** Position in its class's heap; -1 when not in it. */
  heapIx: number;
  readonly maxJobs: number;
  /** Attempts holding one of the agent's slots. */
  readonly slots: ReadonlySet<string>;
}

/** Heap order, on the values cached by the last reindex: load, then running, then name. */
export function less(a: HeapMember, b: HeapMember): boolean {
  if (a.load !== b.load) return a.load < b.load;
  if (a.runs !== b.runs) return a.runs < b.runs;
  return a.name < b.name;
}

function place<A extends HeapMember>(h: A[], i: number, a: A): void {
  h[i] = a;
  a.heapIx = i;
}

function siftUp<A extends HeapMember>(h: A[], i: number): void {
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

function siftDown<A extends HeapMember>(h: A[], i: number): void {
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

export function heapInsert<A extends HeapMember>(h: A[], a: A): void {
  h.push(a);
  a.heapIx = h.length - 1;
  siftUp(h, h.length - 1);
}

/** Restores the order after the member at `i` changed its key. */
export function heapUpdate<A extends HeapMember>(h: A[], i: number): void {
  const a = h[i]!;
  siftUp(h, i);
  siftDown(h, a.heapIx);
}

export function heapRemove<A extends HeapMember>(h: A[], i: number): void {
  const a = h[i]!;
  const last = h.pop()!;
  a.heapIx = -1;
  if (i < h.length) {
    place(h, i, last);
    siftUp(h, i);
    siftDown(h, last.heapIx);
  }
}

/** The best agent of the heap not excluded, visiting it best-first (O(k log k) for k skipped); null when only full ones remain. */
export function heapFirst<A extends HeapMember>(h: A[], excluded: (a: A) => boolean): A | null {
  if (h.length === 0) return null;
  const frontier: number[] = [0];
  while (frontier.length > 0) {
    let bi = 0;
    for (let j = 1; j < frontier.length; j++) if (less(h[frontier[j]!]!, h[frontier[bi]!]!)) bi = j;
    const i = frontier[bi]!;
    frontier[bi] = frontier[frontier.length - 1]!;
    frontier.pop();
    const a = h[i]!;
    if (a.slots.size >= a.maxJobs) return null; // everything below is full too
    if (!excluded(a)) return a;
    const l = 2 * i + 1;
    if (l < h.length) frontier.push(l);
    if (l + 1 < h.length) frontier.push(l + 1);
  }
  return null;
}
