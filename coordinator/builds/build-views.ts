/**
 * Build, node and attempt records rendered as the HTTP API's views (ISO times, derived
 * fields such as why a ready node is still waiting). `now` defaults to the wall clock for
 * callers without one (it only decides whether a circuit breaker still counts as open).
 */
import { apiPath, type AttemptViewT, type BuildSummaryT, type BuildViewT, type ImageViewT, type NodeStatusT, type NodeViewT, type PoolListT, type PoolViewT } from '../../shared/index.js';
import type { AgentRegistry } from '../placement/agent-registry.js';
import { waitingReason } from '../placement/why-waiting.js';
import type { AttemptRecord, BuildRecord, BuildSummaryRecord, NodeRecord, ReusedFrom } from '../state/records.js';
import { nodeCounts } from '../state/records.js';
import { Budgets } from '../placement/budgets.js';
import { deadlineAt, deadlineExceeded, deadlineReason } from './engine-deadline.js';
import type { PoolCacheCounts } from './cache-counters.js';

/** What the views ask about budgets (the Engine answers): why a ready node waits for one, and a build's running count. */
export interface BudgetQuery {
  budgetWaiting(build: BuildRecord, node: NodeRecord): string | null;
  buildRunning(buildId: string): number;
}

export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function reusedView(r: ReusedFrom | null | undefined): NodeViewT['reused_from'] {
  return r ? { ...r, logs_url: apiPath.nodeLogs(r.build_id, r.node) } : null;
}

/** The attempt whose result the node has (the last one, when it succeeded or was reused). */
export function resultAttempt(node: NodeRecord): AttemptRecord | null {
  const last = node.attempts[node.attempts.length - 1];
  return node.state === 'success' && last && (last.state === 'success' || last.state === 'reused') ? last : null;
}

export function attemptView(a: AttemptRecord): AttemptViewT {
  return {
    id: a.id,
    number: a.number,
    agent: a.agent,
    state: a.state,
    assigned_at: new Date(a.assigned_at).toISOString(),
    accepted_at: iso(a.accepted_at),
    started_at: iso(a.started_at),
    finished_at: iso(a.finished_at),
    fetch_ms: a.fetch_ms,
    build_ms: a.build_ms,
    exit_code: a.exit_code,
    error: a.error,
    failed_step: a.failed_step,
    infra: a.infra,
    image_id: a.image_id,
    log_bytes: a.log_bytes,
    reason: a.reason,
    inputs: a.inputs ?? {},
    spec_digest: a.spec_digest ?? null,
    key: a.key ?? null,
    base_images: a.base_images ?? null,
    dockerfile_digest: a.dockerfile_digest ?? null,
    outputs: a.outputs ?? [],
    images: a.images ?? [],
    provenance: a.provenance ?? null,
    reused_from: reusedView(a.reused_from),
    cache: a.cache ?? null,
  };
}

export function nodeView(node: NodeRecord, agents: AgentRegistry, now: number = Date.now(), budgetWaiting: string | null = null, group: string | null = null): NodeViewT {
  const last = node.attempts[node.attempts.length - 1];
  const result = resultAttempt(node);
  const started = node.started_at;
  return {
    name: node.name,
    state: node.state,
    platform: node.platform,
    needs: node.needs,
    labels: node.labels,
    context: node.context,
    waiting: waitingReason(node, agents, now, budgetWaiting),
    exit_code: last?.exit_code ?? null,
    error: last?.error ?? node.reason,
    failed_step: last?.failed_step ?? null,
    image_id: last?.image_id ?? null,
    agent: last?.agent ?? null,
    ready_at: iso(node.ready_at),
    started_at: iso(started),
    finished_at: iso(node.finished_at),
    duration_ms: started !== null && node.finished_at !== null ? node.finished_at - started : null,
    inputs: (node.inputs ?? []).map((i) => ({ name: i.name, from: i.from ? `${i.from.node}.${i.from.output}` : null, digest: last?.inputs?.[i.name] ?? i.digest, mount: i.mount })),
    outputs: (node.outputs ?? []).map((o) => {
      const art = result?.outputs?.find((x) => x.name === o.name);
      return { name: o.name, path: o.path, digest: art?.digest ?? null, size: art?.size ?? null, media_type: art?.media_type ?? null };
    }),
    reused_from: reusedView(node.reused_from),
    provenance: result?.provenance ?? null,
    image_refs: node.images ?? [],
    images: result?.images ?? [],
    matrix: { ...node.matrix },
    origin: node.origin ?? null,
    index_of: node.index ? node.index.map((m) => m.node) : null,
    cache: last?.cache ?? null,
    concurrency_group: group ?? node.concurrency_group ?? null,
    attempts: node.attempts.map(attemptView),
  };
}

/** Every image the build's nodes pushed (their results), in node order: `GET /api/v1/builds/{id}/images`. */
export function imagesView(b: BuildRecord): ImageViewT[] {
  const out: ImageViewT[] = [];
  for (const node of b.nodes) {
    const result = resultAttempt(node);
    for (const i of result?.images ?? []) {
      const sboms = i.platform_sboms ? { platform_sboms: i.platform_sboms } : {};
      out.push({ node: node.name, ref: i.ref, digest: i.digest, platform: i.platform, size: i.size, media_type: i.media_type, sbom: i.sbom ?? null, ...sboms, index: node.index !== undefined });
    }
  }
  return out;
}

/** started_at -> finished_at in ms, or null until both are set. */
function durationOf(started: number | null, finished: number | null): number | null {
  return started !== null && finished !== null ? finished - started : null;
}

export function summaryView(s: BuildSummaryRecord): BuildSummaryT {
  return {
    id: s.id,
    name: s.name,
    state: s.state,
    created_at: new Date(s.created_at).toISOString(),
    started_at: iso(s.started_at),
    finished_at: iso(s.finished_at),
    node_counts: s.node_counts,
    pinned: s.pinned ?? false,
    submitted_by: s.submitted_by ?? null,
    duration_ms: durationOf(s.started_at, s.finished_at),
  };
}

/**
 * A node's state as the events stream sends it (`node` events): what changes while a
 * build runs, without the structure the build view has (needs, inputs, attempts).
 */
export function nodeStatusView(node: NodeRecord, agents: AgentRegistry, now: number = Date.now(), budgetWaiting: string | null = null): NodeStatusT {
  const last = node.attempts[node.attempts.length - 1];
  return {
    name: node.name,
    state: node.state,
    platform: node.platform,
    agent: last?.agent ?? null,
    attempt: node.attempts.length,
    started_at: iso(node.started_at),
    finished_at: iso(node.finished_at),
    duration_ms: durationOf(node.started_at, node.finished_at),
    cache: last?.cache ?? null,
    reused: node.reused_from !== null && node.reused_from !== undefined,
    waiting: node.state === 'ready' ? waitingReason(node, agents, now, budgetWaiting) : null,
    exit_code: last?.exit_code ?? null,
    error: last?.error ?? node.reason,
  };
}

/** What the pools view asks the Engine. */
export interface PoolQuery {
  pools(): PoolViewT[];
  cacheCounts(): Map<string, PoolCacheCounts>;
  concurrencyGroupViews(): NonNullable<PoolListT['concurrency_groups']>;
}

/** `GET /api/v1/pools` (and the events stream's `pools`): each pool with its layer-cache figures, and the concurrency groups. */
export function poolListView(engine: PoolQuery): PoolListT {
  const counts = engine.cacheCounts();
  const items = engine.pools().map((p) => {
    const k = counts.get(p.name);
    return k ? { ...p, cache: { hits: k.hits, misses: k.misses, pushes: k.pushes, push_failures: k.pushFailures } } : p;
  });
  return { items, concurrency_groups: engine.concurrencyGroupViews() };
}

/** The build's budgets as the view shows them. */
export function budgetView(b: BuildRecord, budgets?: BudgetQuery): NonNullable<BuildViewT['budget']> {
  const at = deadlineAt(b);
  return {
    concurrency: b.budget?.concurrency ?? null,
    running: budgets?.buildRunning(b.id) ?? 0,
    concurrency_group: b.budget?.concurrency_group ?? null,
    concurrency_groups: { ...b.budget?.concurrency_groups },
    deadline_ms: b.budget?.deadline_ms ?? null,
    deadline_at: iso(at),
    deadline_exceeded: deadlineExceeded(b),
  };
}

export function buildView(b: BuildRecord, agents: AgentRegistry, now: number = Date.now(), budgets?: BudgetQuery): BuildViewT {
  const budget = budgetView(b, budgets);
  return {
    id: b.id,
    name: b.name,
    state: b.state,
    created_at: new Date(b.created_at).toISOString(),
    started_at: iso(b.started_at),
    finished_at: iso(b.finished_at),
    node_counts: nodeCounts(b),
    pinned: b.pinned ?? false,
    submitted_by: b.submitted_by ?? null,
    duration_ms: durationOf(b.started_at, b.finished_at),
    cancel_requested: b.cancel_requested,
    reuse: b.reuse ?? true,
    nodes: b.nodes.map((n) => nodeView(n, agents, now, budgets?.budgetWaiting(b, n) ?? null, Budgets.groupOf(b, n))),
    budget,
    reason: budget.deadline_exceeded ? deadlineReason(b) : null,
    logs_url: apiPath.buildLogs(b.id),
  };
}
