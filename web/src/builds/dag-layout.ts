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

/**
 * Above this many nodes the groups are not laid out as ELK compound nodes (which costs about
 * twice the time): the DAG is laid out flat and a group gets a box around its members only
 * where no other node falls inside it (fanned-out nodes usually share a layer and sit together).
 */
export const GROUPED_MAX_NODES = 400;

/** The structure as ELK's input graph. Groups of one node stay plain nodes; big DAGs get no compound groups. */
export function toElkGraph(nodes: readonly DagStructureNode[], options: LayoutOptions = LAYOUT_OPTIONS, compound = nodes.length <= GROUPED_MAX_NODES): ElkNode {
  const members = new Map<string, DagStructureNode[]>();
  for (const n of nodes) if (n.origin !== null) members.set(n.origin, [...(members.get(n.origin) ?? []), n]);
  const names = new Set(nodes.map((n) => n.name));
  const children: ElkNode[] = [];
  const grouped = new Set<string>();
  for (const [origin, list] of members) {
    if (!compound || list.length < 2 || names.has(groupId(origin))) continue;
    for (const n of list) grouped.add(n.name);
    children.push({ id: groupId(origin), layoutOptions: GROUP_OPTIONS, children: list.map((n) => ({ id: n.name, width: NODE_WIDTH, height: NODE_HEIGHT })) });
  }
  for (const n of nodes) if (!grouped.has(n.name)) children.push({ id: n.name, width: NODE_WIDTH, height: NODE_HEIGHT });
  const edges: ElkExtendedEdge[] = [];
  for (const n of nodes) for (const need of n.needs) if (names.has(need)) edges.push({ id: `e${edges.length}`, sources: [need], targets: [n.name] });
  return { id: 'root', layoutOptions: options, children, edges };
}

/** ELK's answer as absolute positions and group boxes (`nodes`: the structure, for the boxes of a flat layout). */
export function fromElkGraph(root: ElkNode, nodes: readonly DagStructureNode[] = []): DagLayout {
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
  if (groups.length === 0) groups.push(...flatGroupBoxes(nodes, positions));
  return { positions, groups, width: root.width ?? 0, height: root.height ?? 0 };
}

/** Boxes around the members of each origin in a flat layout, where no other node falls inside one. */
function flatGroupBoxes(nodes: readonly DagStructureNode[], positions: ReadonlyMap<string, { x: number; y: number }>): DagLayout['groups'] {
  const members = new Map<string, { x: number; y: number }[]>();
  for (const n of nodes) {
    const p = positions.get(n.name);
    if (n.origin !== null && p) members.set(n.origin, [...(members.get(n.origin) ?? []), p]);
  }
  const others = (origin: string) => nodes.filter((n) => n.origin !== origin).map((n) => positions.get(n.name)).filter((p) => p !== undefined);
  const out: { origin: string; x: number; y: number; width: number; height: number }[] = [];
  for (const [origin, ps] of members) {
    if (ps.length < 2) continue;
    const x = Math.min(...ps.map((p) => p.x)) - 12;
    const y = Math.min(...ps.map((p) => p.y)) - GROUP_TOP;
    const width = Math.max(...ps.map((p) => p.x)) + NODE_WIDTH + 12 - x;
    const height = Math.max(...ps.map((p) => p.y)) + NODE_HEIGHT + 12 - y;
    const clash = others(origin).some((p) => p.x < x + width && p.x + NODE_WIDTH > x && p.y < y + height && p.y + NODE_HEIGHT > y);
    if (!clash) out.push({ origin, x, y, width, height });
  }
  return out;
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
