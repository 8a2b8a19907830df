/**
 * The build's DAG: laid out once per structure in the layout worker (layout-client.ts),
 * drawn by @xyflow/react with memoised nodes and only the visible ones rendered. A state
 * change replaces only that node's data (the other node objects stay the same, so React
 * Flow leaves them alone). Click, Enter or Space on a node selects it.
 */
import { ReactFlow, Controls, type Edge, type Node, type NodeMouseHandler } from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { useEffect, useMemo, useRef, useState, type KeyboardEvent } from 'react';
import type { NodeStatus } from '../api/types';
import { NODE_HEIGHT, NODE_WIDTH, type DagLayout, type DagStructureNode } from './dag-layout.js';
import { DagGroup, DagNode, type DagGroupType, type DagNodeType } from './dag-node';
import { layoutMsOf, layoutOf } from './layout-client.js';

const nodeTypes = { kiln: DagNode, kilnGroup: DagGroup };
/** Above this many nodes the view opens at the start of the DAG instead of fitting it all. */
const FIT_MAX_NODES = 150;
const START_ZOOM = 0.75;

export function DagView(props: {
  structure: readonly DagStructureNode[];
  statuses: ReadonlyMap<string, NodeStatus>;
  selected: string | null;
  onSelect: (name: string) => void;
}) {
  const { structure, statuses, selected, onSelect } = props;
  const [layout, setLayout] = useState<{ key: string; layout: DagLayout } | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    const { key, layout: p } = layoutOf(structure);
    p.then(
      (l) => live && setLayout({ key, layout: l }),
      (e: unknown) => live && setError(e instanceof Error ? e.message : String(e)),
    );
    return () => {
      live = false;
    };
  }, [structure]);

  // node objects kept between renders: a node whose status did not change keeps its object
  const made = useRef(new Map<string, { status: NodeStatus; selected: boolean; node: DagNodeType }>());
  const nodes = useMemo<Node[]>(() => {
    if (!layout) return [];
    const out: Node[] = [];
    const boxed = new Set(layout.layout.groups.map((g) => g.origin));
    const perOrigin = new Map<string, number>();
    for (const n of structure) if (n.origin !== null) perOrigin.set(n.origin, (perOrigin.get(n.origin) ?? 0) + 1);
    const fanned = new Set([...perOrigin].filter(([, c]) => c > 1).map(([o]) => o));
    for (const g of layout.layout.groups) {
      const count = perOrigin.get(g.origin) ?? 0;
      out.push({ id: `group:${g.origin}`, type: 'kilnGroup', position: { x: g.x, y: g.y }, data: { origin: g.origin, count }, width: g.width, height: g.height, selectable: false, focusable: false, draggable: false, zIndex: -1 } satisfies DagGroupType);
    }
    const seen = new Set<string>();
    for (const n of structure) {
      const status = statuses.get(n.name);
      const pos = layout.layout.positions.get(n.name);
      if (!status || !pos) continue;
      seen.add(n.name);
      const isSelected = selected === n.name;
      const prev = made.current.get(n.name);
      if (prev && prev.status === status && prev.selected === isSelected && prev.node.position === pos) {
        out.push(prev.node);
        continue;
      }
      const node: DagNodeType = { id: n.name, type: 'kiln', position: pos, data: { status, origin: n.origin !== null && !boxed.has(n.origin) && fanned.has(n.origin) ? n.origin : null }, width: NODE_WIDTH, height: NODE_HEIGHT, selected: isSelected, draggable: false, ariaLabel: `${n.name}, ${status.state}` };
      made.current.set(n.name, { status, selected: isSelected, node });
      out.push(node);
    }
    for (const k of made.current.keys()) if (!seen.has(k)) made.current.delete(k);
    return out;
  }, [layout, statuses, selected, structure]);

  const edges = useMemo<Edge[]>(() => {
    const names = new Set(structure.map((n) => n.name));
    const out: Edge[] = [];
    for (const n of structure) for (const need of n.needs) if (names.has(need)) out.push({ id: `${need}->${n.name}`, source: need, target: n.name, focusable: false, selectable: false });
    return out;
  }, [structure]);

  const onNodeClick: NodeMouseHandler = (_, node) => {
    if (node.type === 'kiln') onSelect(node.id);
  };
  const onKeyDown = (e: KeyboardEvent<HTMLDivElement>) => {
    if (e.key !== 'Enter' && e.key !== ' ') return;
    const el = (e.target as HTMLElement).closest('.react-flow__node');
    const id = el?.getAttribute('data-id');
    if (id && !id.startsWith('group:')) {
      e.preventDefault();
      onSelect(id);
    }
  };

  if (error) return <div className="dag-empty error">The DAG could not be laid out: {error}</div>;
  if (!layout) return <div className="dag-empty">Laying out {structure.length} nodes…</div>;
  const fit = structure.length <= FIT_MAX_NODES;
  // a big DAG opens at its start: the top of its first layer
  let start = { x: 0, y: 0 };
  if (!fit) {
    let best: { x: number; y: number } | null = null;
    for (const p of layout.layout.positions.values()) if (!best || p.x < best.x - 1 || (Math.abs(p.x - best.x) <= 1 && p.y < best.y)) best = p;
    start = best ?? start;
  }
  const ms = layoutMsOf(layout.key);
  return (
    <div className="dag" onKeyDown={onKeyDown} data-layout={layout.key} data-layout-ms={ms ?? undefined}>
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodeClick={onNodeClick}
        onlyRenderVisibleElements
        nodesDraggable={false}
        nodesConnectable={false}
        edgesFocusable={false}
        elementsSelectable
        fitView={fit}
        // a small DAG is shown at its natural size, not blown up to fill the view
        fitViewOptions={{ maxZoom: 1 }}
        {...(fit ? {} : { defaultViewport: { x: 24 - start.x * START_ZOOM, y: 24 - start.y * START_ZOOM, zoom: START_ZOOM } })}
        minZoom={0.05}
        maxZoom={2}
        colorMode="system"
      >
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
