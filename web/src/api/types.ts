/**
 * The API shapes the dashboard reads, as types only (erased from the bundle): from
 * shared/api*.ts and the events stream's (shared/api-events.ts).
 */
import type { z } from 'zod';
import type { NodeEventDataT, NodeStatusT } from '../../../shared/api-events.js';
import type { AgentViewT, AttemptViewT, BuildPage, BuildSummaryT, BuildViewT, ImageViewT, NodeViewT } from '../../../shared/api.js';
import type { SessionViewT } from '../../../shared/api-session.js';
import type { BuildState, NodeState } from '../../../shared/states.js';

export type { AgentViewT, AttemptViewT, BuildState, BuildViewT, ImageViewT, NodeState, NodeViewT, SessionViewT };

/** A scope of a key (admin implies every scope; submit and cancel imply read). */
export type Scope = 'read' | 'submit' | 'cancel' | 'admin';

/** A build-list row (BuildSummary: with `submitted_by` and `duration_ms`). */
export type BuildRow = BuildSummaryT;

/** `GET /api/v1/builds`: a page, with counts by state. */
export type BuildPageT = z.infer<typeof BuildPage>;

/** A node's live state, and a `node` event (shared/api-events.ts). */
export type NodeStatus = NodeStatusT;
export type NodeEventData = NodeEventDataT;
