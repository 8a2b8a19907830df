/**
 * Budgets for wide builds (issue 11), the spec part: `concurrency: N` on a build (at most
 * N of its nodes hold an agent slot at once), `concurrency_group: NAME` on a build or a
 * node (every node of the group, across all builds, counts against the group's limit),
 * `concurrency_groups: {NAME: N}` on a build (limits for groups the coordinator's config
 * does not set; the coordinator's `concurrency_groups` wins), and `deadline:` (a duration
 * from submit after which what has not finished is cancelled).
 *
 * Every value is bounded here, and a group with no limit anywhere is an error naming the
 * field (checked when the caller knows the coordinator's groups: the coordinator at submit).
 * Placement and counting live in coordinator/placement/budgets.ts, the deadline in
 * coordinator/builds/engine-deadline.ts.
 */
import { z } from 'zod';
import type { FieldError } from '../errors.js';
import { parseDuration } from '../duration.js';
import { NAME_RE, NAME_RULE } from '../names.js';
import { fieldError } from './spec-fields.js';

/** Largest `concurrency` and group limit (a build has at most 10,000 nodes). */
export const MAX_CONCURRENCY = 10_000;
/** Groups a build may declare limits for. */
export const MAX_BUILD_GROUPS = 64;
/** Longest `deadline` (30 days). */
export const MAX_DEADLINE_MS = 30 * 86_400_000;

/** The build-level budget fields of the spec. */
export const BudgetFields = {
  /** At most this many nodes of the build hold an agent slot at once. */
  concurrency: z.number().int().min(1).max(MAX_CONCURRENCY).optional(),
  /** Every node of the build (unless it names its own) counts against this group's limit. */
  concurrency_group: z.string().optional(),
  /** Limits of groups the coordinator does not configure (its `concurrency_groups` wins). */
  concurrency_groups: z.record(z.string(), z.number().int().min(1).max(MAX_CONCURRENCY)).optional(),
  /** A duration from submit (`2h`, `90m`, or seconds) after which unfinished nodes are cancelled. */
  deadline: z.union([z.string(), z.number().positive()]).optional(),
};

/** The node-level budget field of the spec. */
export const NodeBudgetFields = {
  /** The node counts against this group (instead of its build's group). */
  concurrency_group: z.string().optional(),
};

/** A build's budgets after validation (absent fields: no such budget). */
export interface ResolvedBudget {
  concurrency?: number;
  concurrency_group?: string;
  /** Limits the build gives for groups (used for groups the coordinator does not configure). */
  concurrency_groups?: Record<string, number>;
  /** `deadline` in ms from submit. */
  deadline_ms?: number;
}

interface BudgetInput {
  concurrency?: number | undefined;
  concurrency_group?: string | undefined;
  concurrency_groups?: Record<string, number> | undefined;
  deadline?: string | number | undefined;
}

function groupNameProblem(name: string): string | null {
  return NAME_RE.test(name) ? null : `invalid concurrency group name '${name.slice(0, 80)}' (use ${NAME_RULE})`;
}

/**
 * Validates the build's budget fields and the groups its nodes name (`nodeGroups`: node
 * name -> group). `known`: the coordinator's group limits; when given, every group used
 * must have a limit there or in `concurrency_groups`. Returns the resolved budget, or
 * undefined when the build sets none.
 */
export function resolveBudget(spec: BudgetInput, nodeGroups: ReadonlyMap<string, string>, known: ReadonlyMap<string, number> | undefined, errors: FieldError[]): ResolvedBudget | undefined {
  const out: ResolvedBudget = {};
  if (spec.concurrency !== undefined) out.concurrency = spec.concurrency;
  const declared = new Map<string, number>();
  if (spec.concurrency_groups !== undefined) {
    const entries = Object.entries(spec.concurrency_groups);
    if (entries.length > MAX_BUILD_GROUPS) errors.push(fieldError(['concurrency_groups'], `too many groups (${entries.length}; at most ${MAX_BUILD_GROUPS})`));
    for (const [name, limit] of entries) {
      const p = groupNameProblem(name);
      if (p) errors.push(fieldError(['concurrency_groups', name], p));
      declared.set(name, limit);
    }
    if (entries.length > 0) out.concurrency_groups = Object.assign(Object.create(null) as Record<string, number>, Object.fromEntries(declared));
  }
  const needsLimit = (group: string, path: string[]) => {
    const p = groupNameProblem(group);
    if (p) {
      errors.push(fieldError(path, p));
      return;
    }
    if (known !== undefined && !known.has(group) && !declared.has(group)) {
      const configured = [...known.keys()].slice(0, 10);
      errors.push(
        fieldError(
          path,
          `concurrency group '${group}' has no limit: the coordinator configures ${configured.length ? `only ${configured.join(', ')}` : 'no groups'}; give one in the build's concurrency_groups (e.g. concurrency_groups: {${group}: 2})`,
        ),
      );
    }
  };
  if (spec.concurrency_group !== undefined) {
    needsLimit(spec.concurrency_group, ['concurrency_group']);
    out.concurrency_group = spec.concurrency_group;
  }
  for (const [node, group] of nodeGroups) needsLimit(group, ['nodes', node, 'concurrency_group']);
  if (spec.deadline !== undefined) {
    const ms = typeof spec.deadline === 'number' ? Math.round(spec.deadline * 1000) : parseDuration(spec.deadline);
    if (ms === null || ms <= 0) errors.push(fieldError(['deadline'], `invalid duration '${String(spec.deadline).slice(0, 80)}' (use e.g. 90m, 2h, 1h30m)`));
    else if (ms > MAX_DEADLINE_MS) errors.push(fieldError(['deadline'], `at most 30d (got '${String(spec.deadline).slice(0, 80)}')`));
    else out.deadline_ms = ms;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
