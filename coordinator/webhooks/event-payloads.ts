/**
 * The `data` of webhook events: the same payloads as the events stream
 * (`GET /api/v1/events`, shared/api-events.ts), made by the same view functions
 * (builds/build-views.ts): `build` is the build list's row (`BuildSummary`, with
 * `submitted_by`), `node` is `{build, node: NodeStatus}`.
 */
import type { BuildSummaryT, NodeEventDataT } from '../../shared/index.js';
import { nodeStatusView, summaryView } from '../builds/build-views.js';
import { summarize, type BuildRecord, type NodeRecord } from '../state/records.js';
import type { AgentRegistry } from '../placement/agent-registry.js';

export function buildEventData(build: BuildRecord): BuildSummaryT {
  return summaryView(summarize(build));
}

/** `budgetWaiting`: why a ready node waits for a budget (the engine answers), or null. */
export function nodeEventData(build: BuildRecord, node: NodeRecord, agents: AgentRegistry, now: number, budgetWaiting: string | null): NodeEventDataT {
  return { build: build.id, node: nodeStatusView(node, agents, now, budgetWaiting) };
}
