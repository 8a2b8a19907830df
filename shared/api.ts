/**
 * Shapes of the coordinator's HTTP API (`/api/v1`), as zod schemas shared by the
 * coordinator (which serves them and generates `/openapi.json` from them) and the CLI
 * (which parses responses with them). Times are ISO 8601 strings; durations are ms.
 * Route paths are in api-paths.ts, the log streams' SSE events in log-events.ts.
 */
import { z } from 'zod';
import { ATTEMPT_STATES, BUILD_STATES, NODE_STATES } from './states.js';

const Time = z.string().describe('ISO 8601 timestamp');

export const ReusedFromView = z.object({
  build_id: z.string(),
  node: z.string(),
  attempt_id: z.string(),
  attempt_number: z.number().int(),
  /** The original's log. */
  logs_url: z.string(),
});

export const OutputArtifactView = z.object({
  name: z.string(),
  digest: z.string(),
  size: z.number().int(),
  media_type: z.string(),
});

export const BaseImageView = z.object({ ref: z.string(), digest: z.string().nullable() });

/** An image a node pushed: the ref, the manifest (or index) digest the registry stored, its platform(s) and size. */
export const PushedImageView = z.object({
  ref: z.string(),
  digest: z.string(),
  /** `linux/arm64/v8`; a multi-platform index lists its platforms joined by commas. */
  platform: z.string(),
  /** Bytes of the manifest or index. */
  size: z.number().int(),
  media_type: z.string(),
  /** Digest of the image's SBOM (CycloneDX 1.5 JSON) in the CAS (`GET /api/v1/cas/{digest}`); null when none was made. */
  sbom: z.string().nullable().optional(),
  /** An index: its platform images' SBOMs. */
  platform_sboms: z.array(z.object({ platform: z.string(), sbom: z.string().nullable() })).optional(),
});

/** One row of `GET /api/v1/builds/{id}/images`. */
export const ImageView = PushedImageView.extend({
  node: z.string(),
  /** Digest of the image's SBOM in the CAS; null for an index (see `platform_sboms`) or when none was made. */
  sbom: z.string().nullable(),
  /** true for a multi-platform index (a manifest list), false for one platform's image. */
  index: z.boolean(),
});

export const ImageList = z.object({ items: z.array(ImageView) });
/** Layer cache figures of an attempt (issue 11). */
export const CacheFiguresView = z.object({ hit: z.number().int(), miss: z.number().int(), push: z.enum(['pushed', 'failed', 'none']) });

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
  /** Why the attempt ended when it was not the build's doing (lost, rejected, cancelled, reused). */
  reason: z.string().nullable(),
  /** Input name -> digest the attempt was given. */
  inputs: z.record(z.string(), z.string()),
  spec_digest: z.string().nullable(),
  /** Idempotency key (spec digest + base image ids). */
  key: z.string().nullable(),
  base_images: z.array(BaseImageView).nullable(),
  dockerfile_digest: z.string().nullable(),
  outputs: z.array(OutputArtifactView),
  /** Images the attempt pushed (empty unless it succeeded and the node has `image:`). */
  images: z.array(PushedImageView),
  /** Digest of the provenance record in the CAS. */
  provenance: z.string().nullable(),
  reused_from: ReusedFromView.nullable(),
  /** Layer cache: build steps cached (hit) and executed (miss), and the cache push. */
  cache: CacheFiguresView.nullable().optional(),
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
  inputs: z.array(z.object({ name: z.string(), from: z.string().nullable(), digest: z.string().nullable(), mount: z.string().nullable() })),
  outputs: z.array(z.object({ name: z.string(), path: z.string(), digest: z.string().nullable(), size: z.number().int().nullable(), media_type: z.string().nullable() })),
  /** Set when the node succeeded without building: whose result it has. */
  reused_from: ReusedFromView.nullable(),
  /** The provenance record of the build that produced the node's result. */
  provenance: z.string().nullable(),
  /** Refs the node pushes to (`image:`; per-platform tags for a platform node of an index). */
  image_refs: z.array(z.string()),
  /** What the node's result pushed. */
  images: z.array(PushedImageView),
  /** Axis values of its matrix combination (empty when it has none). */
  matrix: z.record(z.string(), z.string()),
  /** The spec node it was expanded from (by `matrix` or `platforms`), or null. */
  origin: z.string().nullable(),
  /** Set on an index node: the platform nodes whose images it puts in one index. */
  index_of: z.array(z.string()).nullable(),
  /** Layer cache figures of the node's last attempt that built (null: none reported). */
  cache: CacheFiguresView.nullable().optional(),
  /** The concurrency group the node counts against (its own, else its build's), or null. */
  concurrency_group: z.string().nullable().optional(),
  attempts: z.array(AttemptView),
});

/** A build's budgets (issue 11): concurrency, concurrency group, deadline. */
export const BuildBudgetView = z.object({
  /** At most this many of its nodes hold an agent slot at once (null: no limit). */
  concurrency: z.number().int().nullable(),
  /** Its nodes holding a slot now (counted when `concurrency` is set, else 0). */
  running: z.number().int(),
  /** The group every node counts against unless it names its own, or null. */
  concurrency_group: z.string().nullable(),
  /** Limits the build gives for groups the coordinator does not configure. */
  concurrency_groups: z.record(z.string(), z.number().int()),
  /** `deadline` in ms after submit, and when it passes (null: none). */
  deadline_ms: z.number().int().nullable(),
  deadline_at: Time.nullable(),
  /** The deadline passed before the build finished: what had not finished was cancelled. */
  deadline_exceeded: z.boolean(),
});

export const BuildSummary = z.object({
  id: z.string(),
  name: z.string(),
  state: z.enum(BUILD_STATES),
  created_at: Time,
  started_at: Time.nullable(),
  finished_at: Time.nullable(),
  node_counts: z.record(z.string(), z.number().int()),
  /** Pinned builds keep their artifacts past the retention period. */
  pinned: z.boolean(),
  /** Who submitted it (`key:<id>/<name>`, never a secret); null for builds from before keys existed. */
  submitted_by: z.string().nullable().optional(),
  /** started_at -> finished_at in ms; null until it finished (a running build's is now - started_at). */
  duration_ms: z.number().int().nullable().optional(),
});

export const BuildView = BuildSummary.extend({
  cancel_requested: z.boolean(),
  /** false: submitted with --no-reuse. */
  reuse: z.boolean(),
  nodes: z.array(NodeView),
  /** Concurrency, concurrency group and deadline. */
  budget: BuildBudgetView.optional(),
  /** Why the build ended as it did when that is not its nodes' own doing (a passed deadline), else null. */
  reason: z.string().nullable().optional(),
  /** The build's log (every node, `node | ` prefixes; `?follow=true` for live SSE). */
  logs_url: z.string(),
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
  /** Set by an operator: `paused` takes no new work, `draining` also finishes what it runs and stays so. */
  control: z.enum(['active', 'paused', 'draining']),
  /** Why and when it was paused or drained (null while active). */
  control_reason: z.string().nullable(),
  control_at: Time.nullable(),
  /** What the agent reports: false while its disk is full or its Docker Engine is unreachable. */
  health: z.object({ accepting: z.boolean(), problem: z.string().nullable() }),
  /** The agent's circuit breaker: `open` after repeated infrastructure failures (no work until `until`), then `half_open` for one trial attempt. */
  breaker: z.object({
    state: z.enum(['closed', 'open', 'half_open']),
    until: Time.nullable(),
    /** Infrastructure failures inside the breaker's window. */
    recent_failures: z.number().int(),
  }),
  /** Host load from the last heartbeat (null before the first one that carried it). */
  metrics: z
    .object({
      at: Time,
      load1: z.number().nullable(),
      cpus: z.number().int().nullable(),
      mem_used_mib: z.number().int().nullable(),
      mem_total_mib: z.number().int().nullable(),
      disk_free_mib: z.number().int().nullable(),
      gpus: z.array(z.object({ index: z.number().int(), memory_used_mib: z.number().int(), utilization_pct: z.number().nullable() })),
    })
    .nullable(),
  /** GPUs (nvidia-smi indexes) held by running attempts. */
  gpus_in_use: z.array(z.object({ attempt_id: z.string(), gpus: z.array(z.number().int()) })),
});

/** Body of `POST /api/v1/agents/{name}/pause|resume|drain` (optional). */
export const AgentControlBody = z.strictObject({ reason: z.string().min(1).max(1000).optional() });

export const ArtifactView = z.object({
  node: z.string(),
  name: z.string(),
  /** Path in the node's image it was exported from. */
  path: z.string(),
  digest: z.string(),
  size_bytes: z.number().int(),
  media_type: z.string(),
  /** Download link: presigned (S3) or the coordinator's CAS route (send the API token); null once expired. */
  url: z.string().nullable(),
  /** When retention may delete it; null while the build runs or when it is pinned. */
  expires_at: Time.nullable(),
  provenance: z.string().nullable(),
  reused: z.boolean(),
});

export const ArtifactPage = z.object({ items: z.array(ArtifactView), next_cursor: z.string().nullable() });

export const CreatedBuild = z.object({ id: z.string(), state: z.enum(BUILD_STATES), url: z.string() });

/** Body of `POST /api/v1/cas/find-missing`. */
export const MAX_FIND_MISSING = 100_000;

export const Problem = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
  detail: z.string(),
  instance: z.string().optional(),
  code: z.string(),
  errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  /** With E_NOT_LEADER: the leader's URL, where the request goes instead (null during an election). */
  leader: z.string().nullable().optional(),
});

export function pageOf<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item), next_cursor: z.string().nullable() });
}

/** Builds per state (every state present, 0 when none). */
export const BuildCounts = z.object(Object.fromEntries(BUILD_STATES.map((st) => [st, z.number().int()])) as Record<(typeof BUILD_STATES)[number], z.ZodNumber>);

/** `GET /api/v1/builds`: a page of the builds the filters match, and how many builds `name` matches in each state. */
export const BuildPage = pageOf(BuildSummary).extend({
  /** Builds matching the `name` filter (every state, whatever `state` asks), by state. */
  counts: BuildCounts.optional(),
});
export const AgentPage = pageOf(AgentView);

export type AttemptViewT = z.infer<typeof AttemptView>;
export type NodeViewT = z.infer<typeof NodeView>;
export type BuildSummaryT = z.infer<typeof BuildSummary>;
export type BuildCountsT = z.infer<typeof BuildCounts>;
export type BuildViewT = z.infer<typeof BuildView>;
export type AgentViewT = z.infer<typeof AgentView>;
export type ProblemT = z.infer<typeof Problem>;
export type ArtifactViewT = z.infer<typeof ArtifactView>;
export type ImageViewT = z.infer<typeof ImageView>;
