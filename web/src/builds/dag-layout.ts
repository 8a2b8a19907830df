/**
 * The DAG's layout, as pure functions (the layout worker runs them; so does the layout
 * benchmark under Node): a build's structure (names, `needs`, `origin`) to an ELK graph
 * (layered, left to right; nodes fanned out from one spec node by `matrix` or `platforms`
 * in one compound group), ELK's answer to absolute positions, and a hash of the structure
 * to cache layouts by. Only the structure goes in: a state change never lays out again.
 */
import type { ElkExtendedEdge, ElkNode, LayoutOptions } from 'elkjs/lib/elk-api.js';

export interface DagStructureNode {
  readonly name: string;
  readonly needs: readonly string[];
  /** The spec node it was expanded from (by `matrix` or `platforms`), or null. */
  readonly origin: string | null;
}

export interface DagLayout {
  /** Top-left corner of each node (absolute). */
  readonly positions: ReadonlyMap<string, { x: number; y: number }>;
  /** A box around each group of nodes from one origin. */
  readonly groups: readonly { origin: string; x: number; y: number; width: number; height: number }[];
  readonly width: number;
  readonly height: number;
}

export const NODE_WIDTH = 230;
export const NODE_HEIGHT = 92;
/** Room above a group's nodes for its title. */
const GROUP_TOP = 28;

/**
 * The ELK options: layered left to right, with the cheaper settings where the result looks
 * the same for build DAGs (fewer crossing-minimisation sweeps, Brandes–Köpf placement,
 * polyline edges; React Flow draws the edges itself). Measured by test/unit/web-dag-layout.test.ts
 * (web/README.md has the figures).
 */
export const LAYOUT_OPTIONS: LayoutOptions = {
  'elk.algorithm': 'layered',
  'elk.direction': 'RIGHT',
  'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
  'elk.edgeRouting': 'POLYLINE',
  'elk.layered.thoroughness': '1',
  'elk.layered.nodePlacement.strategy': 'BRANDES_KOEPF',
  'elk.layered.crossingMinimization.strategy': 'LAYER_SWEEP',
  'elk.layered.spacing.nodeNodeBetweenLayers': '70',
  'elk.spacing.nodeNode': '18',
  'elk.layered.spacing.edgeNodeBetweenLayers': '20',
  'elk.separateConnectedComponents': 'true',
};

const GROUP_OPTIONS: LayoutOptions = {
  'elk.padding': `[top=${GROUP_TOP},left=12,bottom=12,right=12]`,
  'elk.spacing.nodeNode': '12',
};

/** Id of a group's compound node (node names cannot hold `:`, so it never clashes with one). */
const groupId = (origin: string) => `group:${origin}`;

/** The structure as ELK's input graph. Groups of one node stay plain nodes. */
export function toElkGraph(nodes: readonly DagStructureNode[], options: LayoutOptions = LAYOUT_OPTIONS): ElkNode {
  const members = new Map<string, DagStructureNode[]>();
  for (const n of nodes) if (n.origin !== null) members.set(n.origin, [...(members.get(n.origin) ?? []), n]);
  const names = new Set(nodes.map((n) => n.name));
  const children: ElkNode[] = [];
  const grouped = new Set<string>();
  for (const [origin, list] of members) {
    if (list.length < 2 || names.has(groupId(origin))) continue;
    for (const n of list) grouped.add(n.name);
    children.push({ id: groupId(origin), layoutOptions: GROUP_OPTIONS, children: list.map((n) => ({ id: n.name, width: NODE_WIDTH, height: NODE_HEIGHT })) });
  }
  for (const n of nodes) if (!grouped.has(n.name)) children.push({ id: n.name, width: NODE_WIDTH, height: NODE_HEIGHT });
  const edges: ElkExtendedEdge[] = [];
  for (const n of nodes) for (const need of n.needs) if (names.has(need)) edges.push({ id: `e${edges.length}`, sources: [need], targets: [n.name] });
  return { id: 'root', layoutOptions: options, children, edges };
}

/** ELK's answer as absolute positions and group boxes. */
export function fromElkGraph(root: ElkNode): DagLayout {
  const positions = new Map<string, { x: number; y: number }>();
  const groups: { origin: string; x: number; y: number; width: number; height: number }[] = [];
  for (const c of root.children ?? []) {
    const x = c.x ?? 0;
    const y = c.y ?? 0;
    if (c.id.startsWith('group:') && c.children) {
      groups.push({ origin: c.id.slice('group:'.length), x, y, width: c.width ?? 0, height: c.height ?? 0 });
      for (const m of c.children) positions.set(m.id, { x: x + (m.x ?? 0), y: y + (m.y ?? 0) });
    } else positions.set(c.id, { x, y });
  }
  return { positions, groups, width: root.width ?? 0, height: root.height ?? 0 };
}

/** A hash of the structure (names, needs, origins; not states): the layout cache's key. */
export function structureHash(nodes: readonly DagStructureNode[]): string {
  // two FNV-1a 32-bit hashes with different seeds: 64 bits, plenty for a cache of a few layouts
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  const feed = (s: string) => {
    for (let i = 0; i < s.length; i++) {
      const ch = s.charCodeAt(i);
      a = Math.imul(a ^ ch, 0x01000193) >>> 0;
      b = Math.imul(b ^ ch, 0x01000193 + 2) >>> 0;
    }
  };
  for (const n of nodes) {
    feed(n.name);
    feed('\u0001');
    feed(n.origin ?? '');
    for (const need of n.needs) {
      feed('\u0002');
      feed(need);
    }
    feed('\u0003');
  }
  return `${a.toString(16).padStart(8, '0')}${b.toString(16).padStart(8, '0')}-${nodes.length}`;
}

/** Layout positions as plain data a worker can post (Maps do cross postMessage, but keep it explicit). */
export interface DagLayoutMessage {
  positions: [string, { x: number; y: number }][];
  groups: DagLayout['groups'];
  width: number;
  height: number;
}

export function layoutToMessage(l: DagLayout): DagLayoutMessage {
  return { positions: [...l.positions], groups: l.groups, width: l.width, height: l.height };
}

export function layoutFromMessage(m: DagLayoutMessage): DagLayout {
  return { positions: new Map(m.positions), groups: m.groups, width: m.width, height: m.height };
}
