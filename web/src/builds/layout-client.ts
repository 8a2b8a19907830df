/**
 * Lays DAGs out in the layout worker (layout.worker.ts), caching each layout by the hash of
 * its structure: the same build opened again, or the same structure after a state change,
 * is never laid out twice. A few layouts are kept (the most recent).
 */
import { layoutFromMessage, structureHash, type DagLayout, type DagStructureNode } from './dag-layout.js';
import type { LayoutReply, LayoutRequest } from './layout.worker.js';

const CACHE_SIZE = 8;
const cache = new Map<string, Promise<DagLayout>>();
const pending = new Map<number, { resolve: (l: DagLayout) => void; reject: (e: Error) => void }>();
let worker: Worker | null = null;
let nextId = 1;
/** How long the last layout took in the worker (ms), for the page's footer and the benchmarks. */
export let lastLayoutMs: number | null = null;

function workerOf(): Worker {
  if (worker) return worker;
  const w = new Worker(new URL('./layout.worker.ts', import.meta.url), { type: 'module', name: 'kiln-dag-layout' });
  w.onmessage = (e: MessageEvent<LayoutReply>) => {
    const p = pending.get(e.data.id);
    if (!p) return;
    pending.delete(e.data.id);
    if ('error' in e.data) p.reject(new Error(`layout failed: ${e.data.error}`));
    else {
      lastLayoutMs = e.data.ms;
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

/** The layout of a structure: from the cache, or from the worker. */
export function layoutOf(nodes: readonly DagStructureNode[]): { key: string; layout: Promise<DagLayout> } {
  const key = structureHash(nodes);
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    return { key, layout: hit };
  }
  const id = nextId++;
  const layout = new Promise<DagLayout>((resolve, reject) => {
    pending.set(id, { resolve, reject });
    const req: LayoutRequest = { id, nodes: nodes.map((n) => ({ name: n.name, needs: [...n.needs], origin: n.origin })) };
    workerOf().postMessage(req);
  });
  layout.catch(() => cache.delete(key));
  cache.set(key, layout);
  while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return { key, layout };
}
