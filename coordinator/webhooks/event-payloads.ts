/**
 * The `data` of webhook events, made from the coordinator's records with the API's view
 * functions: `build` is the build list's row (`BuildSummary`, plus `submitted_by`), `node`
 * is `{build, node: NodeStatus}` — the same payloads as the events stream
 * (`GET /api/v1/events`, dashboard contract). Kept in this one module so it can be pointed
 * at the stream's shared builders (shared/api-events.ts) when both exist.
 */
import type { BuildSummaryT, NodeState } from '../../shared/index.js';
import { iso, summaryView } from '../builds/build-views.js';
import { summarize, type BuildRecord, type NodeRecord } from '../state/records.js';
import { waitingReason } from '../placement/why-waiting.js';
import type { AgentRegistry } from '../placement/agent-registry.js';

export type BuildEventData = BuildSummaryT & { submitted_by: string | null };

export interface NodeStatus {
  name: string;
  state: NodeState;
  platform: string;
  agent: string | null;
  /** How many attempts the node has had. */
  attempt: number;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  cache: { hit: number; miss: number; push: 'pushed' | 'failed' | 'none' } | null;
  /** The node's result is an earlier identical node's. */
  reused: boolean;
  waiting: string | null;
  exit_code: number | null;
  error: string | null;
}

export interface NodeEventData {
  build: string;
  node: NodeStatus;
}

export function buildEventData(build: BuildRecord): BuildEventData {
  return { ...summaryView(summarize(build)), submitted_by: build.submitted_by ?? null };
}

/** `budgetWaiting`: why a ready node waits for a budget (the engine answers), or null. */
export function nodeStatus(node: NodeRecord, agents: AgentRegistry, now: number, budgetWaiting: string | null): NodeStatus {
  const last = node.attempts[node.attempts.length - 1];
  const started = node.started_at;
  return {
    name: node.name,
    state: node.state,
    platform: node.platform,
    agent: last?.agent ?? null,
    attempt: node.attempts.length,
    started_at: iso(started),
    finished_at: iso(node.finished_at),
    duration_ms: started !== null && node.finished_at !== null ? node.finished_at - started : null,
    cache: last?.cache ?? null,
    reused: (node.reused_from ?? null) !== null || last?.state === 'reused',
    waiting: node.state === 'ready' ? waitingReason(node, agents, now, budgetWaiting) : null,
    exit_code: last?.exit_code ?? null,
    error: last?.error ?? node.reason,
  };
}

export function nodeEventData(build: BuildRecord, node: NodeRecord, agents: AgentRegistry, now: number, budgetWaiting: string | null): NodeEventData {
  return { build: build.id, node: nodeStatus(node, agents, now, budgetWaiting) };
}
