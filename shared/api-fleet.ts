/**
 * HTTP API shapes of the fleet side: pools, the dead-letter list and error reports
 * (agent views are in api.ts). Shared by the coordinator (serves them, OpenAPI) and the
 * CLI (parses them).
 */
import { z } from 'zod';

const Time = z.string().describe('ISO 8601 timestamp');

/**
 * One pool: the agents that can run a platform (natively or emulated), or `gpu` for agents
 * with GPUs; and the nodes that need it (a node with `gpus` is in the `gpu` pool).
 */
export const PoolView = z.object({
  name: z.string(),
  agents: z.object({
    /** Connected agents in the pool. */
    connected: z.number().int(),
    /** Of those, running the platform natively / under emulation. */
    native: z.number().int(),
    emulated: z.number().int(),
    /** Paused or draining by an operator, unhealthy (disk full, Docker down), or with an open circuit breaker. */
    paused: z.number().int(),
    draining: z.number().int(),
    unhealthy: z.number().int(),
    breaker_open: z.number().int(),
  }),
  slots: z.object({ total: z.number().int(), busy: z.number().int() }),
  /** GPUs of the pool's agents (0 outside the gpu pool), and how many are assigned now. */
  gpus: z.object({ total: z.number().int(), busy: z.number().int() }),
  /** Ready nodes waiting for this pool. */
  queued: z.number().int(),
  /** Nodes assigned or running in this pool. */
  running: z.number().int(),
  /** How long the oldest queued node has waited (ms), or null when none waits. */
  oldest_wait_ms: z.number().int().nullable(),
  /** Ready -> assigned wait of the last dispatches (up to 1000), in ms; null before the first. */
  wait_p50_ms: z.number().int().nullable(),
  wait_p95_ms: z.number().int().nullable(),
  dispatched: z.number().int(),
  /**
   * Layer cache since the coordinator started (issue 11): build steps BuildKit reported
   * cached (hits) and executed (misses) in nodes with a cache registry, cache pushes and
   * failed ones. Absent when the pool has none yet.
   */
  cache: z.object({ hits: z.number().int(), misses: z.number().int(), pushes: z.number().int(), push_failures: z.number().int() }).optional(),
});

/** A concurrency group (issue 11): limit, nodes holding a slot, ready nodes held back because it is full. */
export const ConcurrencyGroupView = z.object({
  name: z.string(),
  /** The coordinator's limit (config `concurrency_groups`); null when only builds give one. */
  limit: z.number().int().nullable(),
  running: z.number().int(),
  waiting: z.number().int(),
});

export const PoolList = z.object({
  items: z.array(PoolView),
  /** Concurrency groups configured or in use. */
  concurrency_groups: z.array(ConcurrencyGroupView).optional(),
});

export const DeadLetterView = z.object({
  build_id: z.string(),
  build_name: z.string(),
  node: z.string(),
  platform: z.string(),
  at: Time,
  reason: z.string(),
  attempts: z.array(
    z.object({ id: z.string(), number: z.number().int(), agent: z.string(), state: z.string(), reason: z.string().nullable(), error: z.string().nullable() }),
  ),
  /** POST here to run the node again. */
  retry_url: z.string(),
});

export const DeadLetterList = z.object({ items: z.array(DeadLetterView) });

/** One failed node in an error report. */
export const ErrorReportNode = z.object({
  node: z.string(),
  platform: z.string(),
  /** The attempt that failed (null when none ran, e.g. a missing input). */
  attempt: z.number().int().nullable(),
  attempt_id: z.string().nullable(),
  agent: z.string().nullable(),
  exit_code: z.number().int().nullable(),
  test_exit_code: z.number().int().nullable(),
  failed_step: z.string().nullable(),
  error: z.string().nullable(),
  infra: z.boolean(),
  /** Up to the last 200 lines of the attempt's log. */
  log_tail: z.array(z.string()),
  logs_url: z.string(),
  provenance: z.string().nullable(),
  provenance_url: z.string().nullable(),
  dead_letter: z.boolean(),
});

/** `error-<build_id>.json`: why a build failed. `node` etc. describe the first failed node; `failures` lists them all. */
export const ErrorReport = ErrorReportNode.extend({
  format: z.literal('kiln-error-report'),
  version: z.literal(1),
  build_id: z.string(),
  build_name: z.string(),
  /** The build's trace id (OpenTelemetry), when the coordinator traces. */
  trace_id: z.string().optional(),
  state: z.string(),
  created_at: Time,
  finished_at: Time.nullable(),
  skipped: z.array(z.string()),
  failures: z.array(ErrorReportNode),
});

export type PoolViewT = z.infer<typeof PoolView>;
export type PoolListT = z.infer<typeof PoolList>;
export type DeadLetterViewT = z.infer<typeof DeadLetterView>;
export type ErrorReportT = z.infer<typeof ErrorReport>;
export type ErrorReportNodeT = z.infer<typeof ErrorReportNode>;
export type ConcurrencyGroupViewT = z.infer<typeof ConcurrencyGroupView>;
