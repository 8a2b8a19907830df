/**
 * Derived, in-memory structure of one build's DAG: nodes by name, who needs whom, which
 * nodes are leaves, and running counts of node states (so the build state is derived in
 * O(1) per transition, not by scanning a 10,000-node build). Rebuilt from the record,
 * never persisted.
 */
import { emptyNodeCounts, type NodeState } from '../../shared/index.js';
import type { BuildRecord, NodeRecord } from '../state/records.js';

export interface BuildGraph {
  byName: Map<string, NodeRecord>;
  dependents: Map<string, string[]>;
  leaves: Set<string>;
  counts: Record<NodeState, number>;
  leafSuccesses: number;
}

export function buildGraph(build: BuildRecord): BuildGraph {
  const byName = new Map<string, NodeRecord>();
  const dependents = new Map<string, string[]>();
  const counts = emptyNodeCounts();
  for (const n of build.nodes) {
    byName.set(n.name, n);
    dependents.set(n.name, []);
    counts[n.state]++;
  }
  for (const n of build.nodes) for (const need of n.needs) dependents.get(need)?.push(n.name);
  const leaves = new Set(build.nodes.filter((n) => (dependents.get(n.name)?.length ?? 0) === 0).map((n) => n.name));
  let leafSuccesses = 0;
  for (const name of leaves) if (byName.get(name)!.state === 'success') leafSuccesses++;
  return { byName, dependents, leaves, counts, leafSuccesses };
}

/** Keeps the graph's counts in step with a node state change. */
export function countTransition(g: BuildGraph, node: NodeRecord, from: NodeState, to: NodeState): void {
  g.counts[from]--;
  g.counts[to]++;
  if (g.leaves.has(node.name)) {
    if (from === 'success') g.leafSuccesses--;
    if (to === 'success') g.leafSuccesses++;
  }
}
