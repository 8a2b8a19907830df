/**
 * The API shapes the dashboard reads, as types only (erased from the bundle): from
 * shared/api*.ts, plus the events stream's (shared/api-events.ts of the events stream,
 * mirrored here until both are merged) and the build-list fields it adds.
 */
import type { AgentViewT, AttemptViewT, BuildSummaryT, BuildViewT, ImageViewT, NodeViewT } from '../../../shared/api.js';
import type { SessionViewT } from '../../../shared/api-session.js';
import type { BuildState, NodeState } from '../../../shared/states.js';

export type { AgentViewT, AttemptViewT, BuildState, BuildViewT, ImageViewT, NodeState, NodeViewT, SessionViewT };

/** A scope of a key (admin implies every scope; submit and cancel imply read). */
export type Scope = 'read' | 'submit' | 'cancel' | 'admin';

/** A build-list row: BuildSummary with the fields the events stream adds (optional until then). */
export type BuildRow = BuildSummaryT & { submitted_by?: string | null; duration_ms?: number | null };

/** `GET /api/v1/builds`: a page, with counts by state when the coordinator gives them. */
export interface BuildPageT {
  items: BuildRow[];
  next_cursor: string | null;
  counts?: Partial<Record<BuildState, number>>;
}

/** A node's live state (`node` events; shared/api-events.ts NodeStatus). */
export interface NodeStatus {
  name: string;
  state: NodeState;
  platform: string;
  agent: string | null;
  attempt: number;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  cache: { hit: number; miss: number; push: 'pushed' | 'failed' | 'none' } | null;
  reused: boolean;
  waiting: string | null;
  exit_code: number | null;
  error: string | null;
}

export interface NodeEventData {
  build: string;
  node: NodeStatus;
}
