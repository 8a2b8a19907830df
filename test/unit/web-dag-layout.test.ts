/**
 * The dashboard's DAG layout (web/src/builds/dag-layout.ts) with the real elkjs, under Node
 * as in the page's layout worker: every node gets a place, edges run left to right, nodes of
 * one origin share a group box (ELK compound nodes, or for a big DAG a box drawn around
 * them where no other node is), the structure hash ignores states and changes with the
 * structure. Prints the time a 1,000-node DAG takes (the README's figure; no limit asserted).
 */
import { createRequire } from 'node:module';
import type { ElkNode } from 'elkjs/lib/elk-api.js';
import { describe, expect, it } from 'vitest';
import { GROUPED_MAX_NODES, LAYOUT_OPTIONS, NODE_HEIGHT, NODE_WIDTH, fromElkGraph, structureHash, toElkGraph, type DagStructureNode } from '../../web/src/builds/dag-layout.js';

// elkjs is CommonJS: its module object is the constructor (the page's worker imports it through vite)
const ELK = createRequire(import.meta.url)('elkjs/lib/elk.bundled.js') as new () => { layout(graph: ElkNode): Promise<ElkNode> };

/**
 * A build-like DAG: layers of `perLayer` nodes, each needing 1-3 of the layer before; half of
 * them in matrix groups of 5 (one spec node fanned out: the members share their needs).
 */
export function syntheticDag(n: number, perLayer = 50): DagStructureNode[] {
  let seed = 42;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const out: DagStructureNode[] = [];
  for (let i = 0; i < n; i++) {
    const layer = Math.floor(i / perLayer);
    const grouped = i % 10 < 5;
    const needs = new Set<string>();
    if (grouped && i % 5 !== 0) for (const need of out[i - 1]!.needs) needs.add(need);
    else if (layer > 0) for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) needs.add(`n${(layer - 1) * perLayer + Math.floor(rnd() * perLayer)}`);
    out.push({ name: `n${i}`, needs: [...needs], origin: grouped ? `o${Math.floor(i / 5)}` : null });
  }
  return out;
}

describe('DAG layout (elkjs, layered, left to right)', () => {
  it('places every node, runs edges left to right and boxes each origin group', async () => {
    const nodes: DagStructureNode[] = [
      { name: 'fetch', needs: [], origin: null },
      { name: 'build-amd64', needs: ['fetch'], origin: 'build' },
      { name: 'build-arm64', needs: ['fetch'], origin: 'build' },
      { name: 'build', needs: ['build-amd64', 'build-arm64'], origin: null },
      { name: 'test', needs: ['build'], origin: null },
    ];
    const layout = fromElkGraph(await new ELK().layout(toElkGraph(nodes)), nodes);
    expect([...layout.positions.keys()].sort()).toEqual(nodes.map((n) => n.name).sort());
    for (const n of nodes) for (const need of n.needs) expect(layout.positions.get(need)!.x + NODE_WIDTH).toBeLessThan(layout.positions.get(n.name)!.x);
    expect(layout.groups).toHaveLength(1);
    const g = layout.groups[0]!;
    expect(g.origin).toBe('build');
    for (const m of ['build-amd64', 'build-arm64']) {
      const p = layout.positions.get(m)!;
      expect(p.x).toBeGreaterThanOrEqual(g.x);
      expect(p.y).toBeGreaterThanOrEqual(g.y);
      expect(p.x + NODE_WIDTH).toBeLessThanOrEqual(g.x + g.width);
    }
  });

  it('hashes the structure only: same structure same hash; a changed need or origin another', () => {
    const a = syntheticDag(200);
    expect(structureHash(a)).toBe(structureHash(syntheticDag(200)));
    const b = a.map((n, i) => (i === 120 ? { ...n, needs: [...n.needs, 'n0'] } : n));
    const c = a.map((n, i) => (i === 3 ? { ...n, origin: null } : n));
    expect(new Set([structureHash(a), structureHash(b), structureHash(c)]).size).toBe(3);
  });

  it('lays out a 1,000-node DAG (prints the time)', async () => {
    const nodes = syntheticDag(1000);
    const elk = new ELK();
    const times: string[] = [];
    const cpuMs = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    // the first run is cold (as in a fresh worker), the others warm; CPU time is less noisy on a shared machine
    let layout = fromElkGraph(await elk.layout(toElkGraph([{ name: 'warm', needs: [], origin: null }])));
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      const c0 = cpuMs();
      layout = fromElkGraph(await elk.layout(toElkGraph(nodes)), nodes);
      times.push(`${(performance.now() - t0).toFixed(0)} ms (${(cpuMs() - c0).toFixed(0)} ms CPU)`);
    }
    // for comparison: the same DAG with its groups as ELK compound nodes (what smaller DAGs get)
    const t0 = performance.now();
    const grouped = fromElkGraph(await elk.layout(toElkGraph(nodes, LAYOUT_OPTIONS, true)), nodes);
    const groupedMs = performance.now() - t0;
    const edges = nodes.reduce((s, n) => s + n.needs.length, 0);
    console.log(
      `[dag-layout] 1000 nodes, ${edges} edges, 100 fan-out groups, thoroughness ${LAYOUT_OPTIONS['elk.layered.thoroughness']}: flat (above ${GROUPED_MAX_NODES} nodes; ${layout.groups.length} group boxes drawn) cold ${times[0]}; warm ${times.slice(1).join(', ')}; with compound groups ${groupedMs.toFixed(0)} ms`,
    );
    expect(layout.positions.size).toBe(1000);
    expect(grouped.groups).toHaveLength(100);
    for (const n of nodes) for (const need of n.needs) expect(layout.positions.get(need)!.x).toBeLessThan(layout.positions.get(n.name)!.x);
    // a box of a flat layout holds its own members and no other node
    expect(layout.groups.length).toBeGreaterThan(0);
    for (const g of layout.groups) {
      for (const n of nodes) {
        const p = layout.positions.get(n.name)!;
        const inside = p.x < g.x + g.width && p.x + NODE_WIDTH > g.x && p.y < g.y + g.height && p.y + NODE_HEIGHT > g.y;
        expect(inside, `${n.name} and the box of ${g.origin}`).toBe(n.origin === g.origin);
      }
    }
  });
});
