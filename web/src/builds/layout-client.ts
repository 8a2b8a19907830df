/**
 * Lays DAGs out in the layout worker (layout.worker.ts), caching each layout by the hash of
 * its structure: the same build opened again, or the same structure after a state change,
 * is never laid out twice. A few layouts are kept in memory and in localStorage (so a
 * reload or another tab does not lay out again). `prewarmLayout()` starts the worker and
 * runs ELK once on a tiny graph while the page still loads its data (a cold ELK is slow).
 */
import { layoutFromMessage, layoutToMessage, structureHash, type DagLayout, type DagLayoutMessage, type DagStructureNode } from './dag-layout.js';
import type { LayoutReply, LayoutRequest } from './layout.worker.js';

const CACHE_SIZE = 8;
const cache = new Map<string, Promise<DagLayout>>();
const pending = new Map<number, { resolve: (l: DagLayout) => void; reject: (e: Error) => void }>();
let worker: Worker | null = null;
let nextId = 1;
/** What each layout cost in the worker (ms), by structure hash: the page shows it as `data-layout-ms` (the benchmarks read it). */
const workerMs = new Map<string, number>();

export function layoutMsOf(key: string): number | null {
  return workerMs.get(key) ?? null;
}

function workerOf(): Worker {
  if (worker) return worker;
  const w = new Worker(new URL('./layout.worker.ts', import.meta.url), { type: 'module', name: 'kiln-dag-layout' });
  w.onmessage = (e: MessageEvent<LayoutReply>) => {
    const p = pending.get(e.data.id);
    if (!p) return;
    pending.delete(e.data.id);
    if ('error' in e.data) p.reject(new Error(`layout failed: ${e.data.error}`));
    else {
      workerMs.set(e.data.key, e.data.ms);
      while (workerMs.size > CACHE_SIZE) workerMs.delete(workerMs.keys().next().value!);
      p.resolve(layoutFromMessage(e.data.layout));
    }
  };
  w.onerror = (e) => {
    for (const p of pending.values()) p.reject(new Error(`layout worker failed: ${e.message}`));
    pending.clear();
    worker = null;
  };
  worker = w;
  return w;
}

const STORED_PREFIX = 'kiln-layout:';
/** Layouts kept in localStorage at most, and only of DAGs worth it (small ones are quick). */
const STORED_MAX = 8;
const STORED_MIN_NODES = 100;

function stored(key: string): DagLayout | null {
  try {
    const text = window.localStorage.getItem(STORED_PREFIX + key);
    return text ? layoutFromMessage(JSON.parse(text) as DagLayoutMessage) : null;
  } catch {
    return null;
  }
}

function store(key: string, layout: DagLayout): void {
  try {
    const keys: string[] = [];
    for (let i = 0; i < window.localStorage.length; i++) {
      const k = window.localStorage.key(i);
      if (k?.startsWith(STORED_PREFIX)) keys.push(k);
    }
    for (const k of keys.slice(0, Math.max(0, keys.length - STORED_MAX + 1))) window.localStorage.removeItem(k);
    window.localStorage.setItem(STORED_PREFIX + key, JSON.stringify(layoutToMessage(layout)));
  } catch {
    /* full or unavailable: the memory cache still holds it */
  }
}

/** Starts the worker and warms ELK up on a tiny graph (call once, early). */
export function prewarmLayout(): void {
  const tiny: DagStructureNode[] = [
    { name: 'a', needs: [], origin: null },
    { name: 'b', needs: ['a'], origin: 'x' },
    { name: 'c', needs: ['a'], origin: 'x' },
  ];
  layoutOf(tiny).layout.catch(() => undefined);
}

/** The layout of a structure: from the cache, or from the worker. */
export function layoutOf(nodes: readonly DagStructureNode[]): { key: string; layout: Promise<DagLayout> } {
  const key = structureHash(nodes);
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    return { key, layout: hit };
  }
  const kept = nodes.length >= STORED_MIN_NODES ? stored(key) : null;
  if (kept) {
    const p = Promise.resolve(kept);
    cache.set(key, p);
    return { key, layout: p };
  }
  const id = nextId++;
  const layout = new Promise<DagLayout>((resolve, reject) => {
    pending.set(id, { resolve, reject });
    const req: LayoutRequest = { id, key, nodes: nodes.map((n) => ({ name: n.name, needs: [...n.needs], origin: n.origin })) };
    workerOf().postMessage(req);
  });
  layout.then(
    (l) => {
      if (nodes.length >= STORED_MIN_NODES) store(key, l);
    },
    () => cache.delete(key),
  );
  cache.set(key, layout);
  while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return { key, layout };
}
