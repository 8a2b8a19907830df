/**
 * What the coordinator persists: builds, their nodes and attempts. Times are epoch ms.
 *
 * Active builds live in `state.json` (lowdb). A finished build is written once to
 * `builds/<id>.json` and replaced in `state.json` by a small summary, so the hot state
 * (rewritten on every commit) stays the size of the work in flight, not of the history.
 */
import type { AttemptState, BaseImagePayload, BuildState, FinishedCachePayload, NodeState, OutputArtifactPayload, PushedImagePayload, ResolvedBudget, ResolvedNode, ResolvedNotify } from '../../shared/index.js';

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
  /** Images the agent pushed (a successful attempt of a node with `image:`). */
  images?: PushedImagePayload[];
  /** Layer cache: steps cached/executed and the cache push, as the agent reported them. */
  cache?: FinishedCachePayload;
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

/** What a new attempt is given at dispatch; every other field starts empty. */
export type AttemptStart = Pick<AttemptRecord, 'id' | 'number' | 'agent' | 'session' | 'assigned_at' | 'log_header' | 'inputs' | 'spec_digest'> &
  Partial<Pick<AttemptRecord, 'gpus' | 'emulated'>>;

/** A new attempt, assigned to an agent and not yet accepted. */
export function assignedAttempt(a: AttemptStart): AttemptRecord {
  const rec: AttemptRecord = {
    id: a.id,
    number: a.number,
    agent: a.agent,
    session: a.session,
    state: 'assigned',
    assigned_at: a.assigned_at,
    accepted_at: null,
    started_at: null,
    finished_at: null,
    exit_code: null,
    error: null,
    failed_step: null,
    infra: false,
    image_id: null,
    log_bytes: 0,
    log_header: a.log_header,
    reason: null,
    fetch_ms: null,
    build_ms: null,
    inputs: a.inputs,
    spec_digest: a.spec_digest,
    key: null,
    base_images: null,
    dockerfile_digest: null,
    outputs: [],
    provenance: null,
    reused_from: null,
  };
  if (a.gpus !== undefined) rec.gpus = a.gpus;
  if (a.emulated !== undefined) rec.emulated = a.emulated;
  return rec;
}

/** A new node of a submitted build: the resolved spec node, pending, no attempts. */
export function pendingNode(spec: ResolvedNode): NodeRecord {
  return Object.assign({}, spec, {
    state: 'pending' as const,
    attempts: [],
    ready_at: null,
    started_at: null,
    finished_at: null,
    reason: null,
    reused_from: null,
    waiting_on: null,
  });
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
  /** Budgets (issue 11): concurrency, group, deadline; set at submit, never changed (coordinator/placement/budgets.ts). */
  budget?: ResolvedBudget;
  /** Who submitted it (the audit actor: `key:<id>/<name>`); absent for builds from before issue 12. */
  submitted_by?: string;
  /** Webhooks of the build (issue 13; coordinator/webhooks/): URLs, filters, secret names; set at submit, never changed. */
  notify?: ResolvedNotify;
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
  /** Who submitted it (absent for builds from before keys existed). */
  submitted_by?: string;
}

/**
 * The coordinator's state in memory. Every index keyed by something that came from a
 * request, a spec or an agent (build ids, `<build>/<node>` keys, agent names) is a `Map`:
 * a plain object would answer `__proto__` or `constructor` with Object.prototype's
 * members, and assigning to `__proto__` would change its prototype instead of storing.
 */
export interface StateData {
  /** Builds that are running or not yet archived, by id. */
  builds: Map<string, BuildRecord>;
  /** Finished builds whose full record is in builds/<id>.json. */
  archived: Map<string, BuildSummaryRecord>;
  /** Dead-letter list by `<build_id>/<node>`. */
  deadLetter: Map<string, DeadLetterRecord>;
  /** Agents paused or draining by an operator, by name. */
  agentControls: Map<string, AgentControlRecord>;
}

/** `state.json` as written: the same indexes as JSON objects (JSON.parse keeps every key, `__proto__` included, as an own property). */
export interface StateFile {
  format: 'kiln-coordinator-state';
  version: 1;
  builds: Record<string, BuildRecord>;
  archived: Record<string, BuildSummaryRecord>;
  /** Absent in state files written before it existed. */
  dead_letter?: Record<string, DeadLetterRecord>;
  /** Absent in state files written before it existed. */
  agent_controls?: Record<string, AgentControlRecord>;
}

export function emptyState(): StateData {
  return { builds: new Map(), archived: new Map(), deadLetter: new Map(), agentControls: new Map() };
}

/** The JSON form of the state (Object.fromEntries defines own properties, so every key is kept). */
export function stateToFile(d: StateData): StateFile {
  return {
    format: 'kiln-coordinator-state',
    version: 1,
    builds: Object.fromEntries(d.builds),
    archived: Object.fromEntries(d.archived),
    dead_letter: Object.fromEntries(d.deadLetter),
    agent_controls: Object.fromEntries(d.agentControls),
  };
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Reads a parsed `state.json` (cheap shape checks: the file is ours), or says what is wrong with it. */
export function stateFromFile(value: unknown): StateData | string {
  if (!isObject(value)) return 'not a JSON object';
  const v = value as Partial<StateFile>;
  if (v.format !== 'kiln-coordinator-state') return `format is ${JSON.stringify(v.format)}, expected "kiln-coordinator-state"`;
  if (v.version !== 1) return `version ${JSON.stringify(v.version)} is not supported (this coordinator reads version 1)`;
  if (!isObject(v.builds)) return 'builds is missing';
  if (!isObject(v.archived)) return 'archived is missing';
  if (v.dead_letter !== undefined && !isObject(v.dead_letter)) return 'dead_letter is not an object';
  if (v.agent_controls !== undefined && !isObject(v.agent_controls)) return 'agent_controls is not an object';
  const builds = new Map(Object.entries(v.builds));
  for (const [id, b] of builds) {
    if (!isObject(b) || b.id !== id || !Array.isArray(b.nodes)) return `builds.${id} is not a build record with id ${JSON.stringify(id)}`;
  }
  const archived = new Map(Object.entries(v.archived));
  for (const [id, s] of archived) {
    if (!isObject(s) || s.id !== id) return `archived.${id} is not a build summary with id ${JSON.stringify(id)}`;
  }
  return {
    builds,
    archived,
    deadLetter: new Map(Object.entries(v.dead_letter ?? {})),
    agentControls: new Map(Object.entries(v.agent_controls ?? {})),
  };
}

export function nodeCounts(build: BuildRecord): Record<string, number> {
  // Keys are node states (a closed set), not input.
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
    ...(build.submitted_by !== undefined ? { submitted_by: build.submitted_by } : {}),
  };
}
