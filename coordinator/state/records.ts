/**
 * What the coordinator persists: builds, their nodes and attempts. Times are epoch ms.
 *
 * Active builds live in `state.json` (lowdb). A finished build is written once to
 * `builds/<id>.json` and replaced in `state.json` by a small summary, so the hot state
 * (rewritten on every commit) stays the size of the work in flight, not of the history.
 */
import type { AttemptState, BaseImagePayload, BuildState, NodeState, OutputArtifactPayload, ResolvedNode } from '../../shared/index.js';

/** Where a reused node's result came from. */
export interface ReusedFrom {
  build_id: string;
  node: string;
  attempt_id: string;
  attempt_number: number;
}

export interface AttemptRecord {
  id: string;
  /** 1 for the first dispatch of a node, 2 for the re-queue after a lost agent, ... */
  number: number;
  agent: string;
  /** The agent process (hello `session`) the attempt was given to. */
  session: string;
  state: AttemptState;
  assigned_at: number;
  accepted_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  error: string | null;
  failed_step: string | null;
  infra: boolean;
  image_id: string | null;
  /** Log bytes received from the agent and written to the attempt's log file. */
  log_bytes: number;
  /** Text the coordinator put at the start of the attempt's log file (before the agent's bytes). */
  log_header: string;
  reason: string | null;
  fetch_ms: number | null;
  build_ms: number | null;
  /** Input name -> digest, as sent in the assignment. */
  inputs: Record<string, string>;
  /** Digest of the normalised node spec with its context and input digests (see builds/idempotency.ts). */
  spec_digest: string | null;
  /** Idempotency key, once the agent reported the base images. */
  key: string | null;
  base_images: BaseImagePayload[] | null;
  dockerfile_digest: string | null;
  outputs: OutputArtifactPayload[];
  /** Digest of the attempt's provenance record in the CAS. */
  provenance: string | null;
  /** Set when the attempt ended `reused`, and on the node when it succeeded by reuse. */
  reused_from: ReusedFrom | null;
  /** GPUs (nvidia-smi indexes on its agent) the attempt holds exclusively. */
  gpus?: number[];
  /** Exit code of the node's test command, when it ran. */
  test_exit_code?: number | null;
  /** The agent ran the node's platform under emulation. */
  emulated?: boolean;
}

export interface NodeRecord extends ResolvedNode {
  state: NodeState;
  attempts: AttemptRecord[];
  ready_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  /** Why the node failed/was skipped/cancelled, when not the build's own error. */
  reason: string | null;
  /** The node succeeded without a build of its own: whose result it has. */
  reused_from?: ReusedFrom | null;
  /** Shared execution: the attempt (of an identical node) this running node waits for. */
  waiting_on?: string | null;
  /** Times the node was retried from the API. */
  retries?: number;
  /** Attempts before this index do not count against the infrastructure budget (set by a retry). */
  budget_from?: number;
}

/** An attempt that ended because of the infrastructure (lost agent, Docker down, disk full, agent shut down), not the build. */
export function isInfraAttempt(a: AttemptRecord): boolean {
  return a.state === 'lost' || ((a.state === 'failed' || a.state === 'cancelled') && a.infra);
}

/** A node that failed because infrastructure failures used up its attempt budget. */
export interface DeadLetterRecord {
  build_id: string;
  build_name: string;
  node: string;
  platform: string;
  at: number;
  reason: string;
  /** Attempts made (all of them infrastructure failures) and where. */
  attempts: Array<{ id: string; number: number; agent: string; state: string; reason: string | null; error: string | null }>;
}

/** What an operator set for an agent from the API; survives coordinator restarts. */
export interface AgentControlRecord {
  control: 'paused' | 'draining';
  at: number;
  reason: string | null;
}

export interface BuildRecord {
  id: string;
  name: string;
  state: BuildState;
  cancel_requested: boolean;
  /** false: submitted with --no-reuse (every node builds). */
  reuse?: boolean;
  /** Pinned builds keep their artifacts past the retention period. */
  pinned?: boolean;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  nodes: NodeRecord[];
}

/** The index entry of an archived (finished) build. */
export interface BuildSummaryRecord {
  id: string;
  name: string;
  state: BuildState;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  node_counts: Record<string, number>;
  pinned?: boolean;
}

export interface StateData {
  format: 'kiln-coordinator-state';
  version: 1;
  /** Builds that are running or not yet archived, by id. */
  builds: Record<string, BuildRecord>;
  /** Finished builds whose full record is in builds/<id>.json. */
  archived: Record<string, BuildSummaryRecord>;
  /** Dead-letter list by `<build_id>/<node>` (absent in state files written before it existed). */
  dead_letter?: Record<string, DeadLetterRecord>;
  /** Agents paused or draining by an operator, by name (absent = none). */
  agent_controls?: Record<string, AgentControlRecord>;
}

export function emptyState(): StateData {
  return { format: 'kiln-coordinator-state', version: 1, builds: {}, archived: {}, dead_letter: {}, agent_controls: {} };
}

/** Shape check for a state file read from disk (cheap: the file is ours). */
export function stateProblem(value: unknown): string | null {
  if (value === null || typeof value !== 'object') return 'not a JSON object';
  const v = value as Partial<StateData>;
  if (v.format !== 'kiln-coordinator-state') return `format is ${JSON.stringify(v.format)}, expected "kiln-coordinator-state"`;
  if (v.version !== 1) return `version ${JSON.stringify(v.version)} is not supported (this coordinator reads version 1)`;
  if (!v.builds || typeof v.builds !== 'object') return 'builds is missing';
  if (!v.archived || typeof v.archived !== 'object') return 'archived is missing';
  if (v.dead_letter !== undefined && (v.dead_letter === null || typeof v.dead_letter !== 'object')) return 'dead_letter is not an object';
  if (v.agent_controls !== undefined && (v.agent_controls === null || typeof v.agent_controls !== 'object')) return 'agent_controls is not an object';
  return null;
}

export function nodeCounts(build: BuildRecord): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const n of build.nodes) counts[n.state] = (counts[n.state] ?? 0) + 1;
  return counts;
}

export function summarize(build: BuildRecord): BuildSummaryRecord {
  return {
    id: build.id,
    name: build.name,
    state: build.state,
    created_at: build.created_at,
    started_at: build.started_at,
    finished_at: build.finished_at,
    node_counts: nodeCounts(build),
    ...(build.pinned ? { pinned: true } : {}),
  };
}
