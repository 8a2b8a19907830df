/**
 * Shapes of the coordinator's HTTP API (`/api/v1`), as zod schemas shared by the
 * coordinator (which serves them and generates `/openapi.json` from them) and the CLI
 * (which parses responses with them). Times are ISO 8601 strings; durations are ms.
 */
import { z } from 'zod';
import { ATTEMPT_STATES, BUILD_STATES, NODE_STATES } from './states.js';

const Time = z.string().describe('ISO 8601 timestamp');

export const AttemptView = z.object({
  id: z.string(),
  number: z.number().int(),
  agent: z.string(),
  state: z.enum(ATTEMPT_STATES),
  assigned_at: Time,
  accepted_at: Time.nullable(),
  started_at: Time.nullable(),
  finished_at: Time.nullable(),
  /** Time the agent spent fetching the build context. */
  fetch_ms: z.number().int().nullable(),
  /** Time the BuildKit build took on the agent. */
  build_ms: z.number().int().nullable(),
  exit_code: z.number().int().nullable(),
  error: z.string().nullable(),
  failed_step: z.string().nullable(),
  infra: z.boolean(),
  image_id: z.string().nullable(),
  log_bytes: z.number().int(),
  /** Why the attempt ended when it was not the build's doing (lost, rejected, cancelled). */
  reason: z.string().nullable(),
});

export const NodeView = z.object({
  name: z.string(),
  state: z.enum(NODE_STATES),
  platform: z.string(),
  needs: z.array(z.string()),
  labels: z.record(z.string(), z.string()),
  context: z.string().nullable(),
  /** Why a ready node is not running yet, e.g. `no connected agent has platform linux/s390x`. */
  waiting: z.string().nullable(),
  exit_code: z.number().int().nullable(),
  error: z.string().nullable(),
  failed_step: z.string().nullable(),
  image_id: z.string().nullable(),
  agent: z.string().nullable(),
  ready_at: Time.nullable(),
  started_at: Time.nullable(),
  finished_at: Time.nullable(),
  duration_ms: z.number().int().nullable(),
  attempts: z.array(AttemptView),
});

export const BuildSummary = z.object({
  id: z.string(),
  name: z.string(),
  state: z.enum(BUILD_STATES),
  created_at: Time,
  started_at: Time.nullable(),
  finished_at: Time.nullable(),
  node_counts: z.record(z.string(), z.number().int()),
});

export const BuildView = BuildSummary.extend({
  cancel_requested: z.boolean(),
  nodes: z.array(NodeView),
  /** Where the coordinator keeps this build's logs. */
  logs_dir: z.string(),
});

export const AgentView = z.object({
  name: z.string(),
  state: z.enum(['connected', 'disconnected', 'lost']),
  agent_version: z.string(),
  executor: z.string(),
  platforms: z.array(z.object({ platform: z.string(), emulated: z.boolean() })),
  labels: z.record(z.string(), z.string()),
  max_jobs: z.number().int(),
  running: z.array(z.string()),
  docker: z
    .object({ version: z.string(), api_version: z.string(), os: z.string(), arch: z.string(), buildkit_version: z.string().nullable() })
    .nullable(),
  gpus: z.array(z.object({ index: z.number().int(), model: z.string(), memory_mib: z.number().int(), uuid: z.string().nullable() })),
  connected_at: Time.nullable(),
  last_seen_at: Time,
});

export const CreatedBuild = z.object({ id: z.string(), state: z.enum(BUILD_STATES), url: z.string() });

export const Problem = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
  detail: z.string(),
  instance: z.string().optional(),
  code: z.string(),
  errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
});

export function pageOf<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item), next_cursor: z.string().nullable() });
}

export const BuildPage = pageOf(BuildSummary);
export const AgentPage = pageOf(AgentView);

export type AttemptViewT = z.infer<typeof AttemptView>;
export type NodeViewT = z.infer<typeof NodeView>;
export type BuildSummaryT = z.infer<typeof BuildSummary>;
export type BuildViewT = z.infer<typeof BuildView>;
export type AgentViewT = z.infer<typeof AgentView>;
export type ProblemT = z.infer<typeof Problem>;

/** SSE events of the log streams (`event:` names). */
export const LogEvent = {
  /** `data: {"node": "...", "text": "..."}`; `id:` is the byte offset after this text (node stream) or `node:offset` (build stream). */
  log: 'log',
  /** `data: {"node": "...", "state": "...", "attempt": n}` when a node changes state. */
  status: 'status',
  /** `data: {"state": "..."}`: the stream is complete (node or build terminal and every byte sent). */
  end: 'end',
} as const;
