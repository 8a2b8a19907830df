/**
 * Budgets for wide builds (issue 11): how many nodes of a build (`concurrency: N`) and of
 * a concurrency group (`concurrency_group: NAME`, shared by every build naming it) hold an
 * agent slot at once, and whether a ready node may be placed now.
 *
 * Counts are derived, never journaled: they follow the engine's active attempts (an
 * attempt counts from its dispatch until it ends, cancelling included, since it still
 * holds the agent), which recovery rebuilds from the attempt records, so a restart
 * recomputes them. Each change is O(1).
 *
 * A ready node carries its budget (`RefBudget`) into the ready queues, and the budget's
 * `key` is part of the queue key (scheduler.ts): refs of one queue share one budget, so a
 * full budget holds back only its own queues and never another build's nodes of the same
 * requirement (no head-of-line blocking). When a counted attempt ends, placement runs
 * again, so the next held node goes as soon as a slot of its budget frees.
 *
 * Group limits: the coordinator's `concurrency_groups` (config) wins; a group it does not
 * configure takes the limit the node's build gives (`concurrency_groups:` in the spec),
 * so builds giving different limits for one such group are each held to their own.
 */
import type { ResolvedBudget } from '../../shared/index.js';
import type { BuildRecord, NodeRecord } from '../state/records.js';

/** A ready node's budgets, as the scheduler sees them. */
export interface RefBudget {
  /** Part of the ready-queue key: refs with equal budgets (build, group, limits) share queues. */
  key: string;
  /** The build's id when it has a `concurrency`, else null. */
  build: string | null;
  buildLimit: number;
  /** The node's concurrency group, or null. */
  group: string | null;
  groupLimit: number;
}

/** The budget fields of a build record (budget-spec.ts). */
type Budgeted = Pick<BuildRecord, 'id'> & { budget?: ResolvedBudget };

/** One concurrency group in the pools view. */
export interface GroupView {
  name: string;
  /** The coordinator's limit, or null when only builds give one. */
  limit: number | null;
  running: number;
  /** Ready nodes held back because the group is full. */
  waiting: number;
}

/** A group no limit was found for after a restart (the config changed) runs one node at a time. */
const FALLBACK_GROUP_LIMIT = 1;

export class Budgets {
  private readonly byBuild = new Map<string, number>();
  private readonly byGroup = new Map<string, number>();

  constructor(
    /** The coordinator's group limits (config `concurrency_groups`). */
    readonly configured: ReadonlyMap<string, number> = new Map(),
  ) {}

  /** The group a node counts against: its own, else its build's; null for none. */
  static groupOf(build: Budgeted, node: Pick<NodeRecord, 'concurrency_group'>): string | null {
    return node.concurrency_group ?? build.budget?.concurrency_group ?? null;
  }

  /** The limit of `group` for a node of `build`. */
  groupLimit(group: string, build: Budgeted): number {
    const declared = build.budget?.concurrency_groups;
    return this.configured.get(group) ?? (declared && Object.hasOwn(declared, group) ? declared[group]! : FALLBACK_GROUP_LIMIT);
  }

  /** A node's budgets, or null when it has none (the common case: no allocation). */
  of(build: Budgeted, node: Pick<NodeRecord, 'concurrency_group'>): RefBudget | null {
    const concurrency = build.budget?.concurrency;
    const group = Budgets.groupOf(build, node);
    if (concurrency === undefined && group === null) return null;
    const groupLimit = group === null ? 0 : this.groupLimit(group, build);
    let key = '';
    if (concurrency !== undefined) key += ` build=${build.id}:${concurrency}`;
    if (group !== null) key += ` group=${group}:${groupLimit}`;
    return { key, build: concurrency !== undefined ? build.id : null, buildLimit: concurrency ?? 0, group, groupLimit };
  }

  /** An attempt of a node of `build` took a slot. */
  started(build: Budgeted, node: Pick<NodeRecord, 'concurrency_group'>): boolean {
    return this.change(build, node, 1);
  }

  /** An attempt of a node of `build` ended (its slot is free). Returns whether it was counted. */
  ended(build: Budgeted, node: Pick<NodeRecord, 'concurrency_group'>): boolean {
    return this.change(build, node, -1);
  }

  private change(build: Budgeted, node: Pick<NodeRecord, 'concurrency_group'>, by: 1 | -1): boolean {
    let counted = false;
    if (build.budget?.concurrency !== undefined) {
      bump(this.byBuild, build.id, by);
      counted = true;
    }
    const group = Budgets.groupOf(build, node);
    if (group !== null) {
      bump(this.byGroup, group, by);
      counted = true;
    }
    return counted;
  }

  /** Forgets every count (the active attempts are being rebuilt). */
  reset(): void {
    this.byBuild.clear();
    this.byGroup.clear();
  }

  /** Attempts of `buildId` holding a slot (counted only for builds with a `concurrency`). */
  buildRunning(buildId: string): number {
    return this.byBuild.get(buildId) ?? 0;
  }

  /** Attempts of the group's nodes holding a slot, across builds. */
  groupRunning(group: string): number {
    return this.byGroup.get(group) ?? 0;
  }

  /** true when neither the build's concurrency nor the group is full. */
  admits(b: RefBudget): boolean {
    if (b.build !== null && (this.byBuild.get(b.build) ?? 0) >= b.buildLimit) return false;
    if (b.group !== null && (this.byGroup.get(b.group) ?? 0) >= b.groupLimit) return false;
    return true;
  }

  /** Why a node with budget `b` waits (`waiting: build concurrency 4 reached`), or null when its budgets have room. */
  blockedBy(b: RefBudget | null): string | null {
    if (b === null) return null;
    if (b.build !== null && this.buildRunning(b.build) >= b.buildLimit) return `waiting: build concurrency ${b.buildLimit} reached`;
    if (b.group !== null) {
      const running = this.groupRunning(b.group);
      if (running >= b.groupLimit) return `waiting: concurrency group ${b.group} full (${running}/${b.groupLimit})`;
    }
    return null;
  }

  /**
   * The groups in use or configured, with their running counts and the ready nodes they
   * hold back (`ready`: the ready nodes with their builds), by name.
   */
  groups(ready: Iterable<{ build: Budgeted; node: NodeRecord }>): GroupView[] {
    const views = new Map<string, GroupView>();
    const view = (name: string) => {
      let v = views.get(name);
      if (!v) views.set(name, (v = { name, limit: this.configured.get(name) ?? null, running: this.groupRunning(name), waiting: 0 }));
      return v;
    };
    for (const name of this.configured.keys()) view(name);
    for (const name of this.byGroup.keys()) view(name);
    for (const { build, node } of ready) {
      const group = Budgets.groupOf(build, node);
      if (group === null) continue;
      const v = view(group);
      if (node.state === 'ready' && v.running >= this.groupLimit(group, build)) v.waiting++;
    }
    return [...views.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}

function bump(m: Map<string, number>, key: string, by: 1 | -1): void {
  const n = (m.get(key) ?? 0) + by;
  if (n > 0) m.set(key, n);
  else m.delete(key);
}
