/**
 * The DAG layout worker: runs elkjs off the main thread (a 1,000-node layout takes a few
 * hundred ms), one request at a time, answering `{id, layout}` or `{id, error}`.
 */
import ELK from 'elkjs/lib/elk.bundled.js';
import { fromElkGraph, layoutToMessage, toElkGraph, type DagLayoutMessage, type DagStructureNode } from './dag-layout.js';

export interface LayoutRequest {
  id: number;
  /** The structure's hash, echoed back. */
  key: string;
  nodes: DagStructureNode[];
}

export type LayoutReply = { id: number; key: string; layout: DagLayoutMessage; ms: number } | { id: number; error: string };

/** The worker's global scope, as far as this file uses it (the DOM lib has no worker types). */
const scope = self as unknown as { onmessage: ((e: MessageEvent<LayoutRequest>) => void) | null; postMessage(m: LayoutReply): void };
const elk = new ELK();

scope.onmessage = (e) => {
  const { id, key, nodes } = e.data;
  const t0 = performance.now();
  elk
    .layout(toElkGraph(nodes))
    .then((root) => scope.postMessage({ id, key, layout: layoutToMessage(fromElkGraph(root, nodes)), ms: Math.round(performance.now() - t0) }))
    .catch((err: unknown) => scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) }));
};
