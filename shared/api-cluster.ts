/**
 * HTTP API shape of `GET /api/v1/cluster` (issue 14): which coordinator leads the shared
 * state, under which fencing epoch, and every coordinator seen on it. Every coordinator
 * answers it, leader or standby; an embedded (single-machine) coordinator answers with
 * itself as the leader at epoch 0.
 */
import { z } from 'zod';

export const CoordinatorRole = z.enum(['leader', 'standby']);
export type CoordinatorRoleT = z.infer<typeof CoordinatorRole>;

export const ClusterMember = z.object({
  /** The coordinator's advertised URL (its --advertise-url, default its listen address). */
  url: z.string(),
  role: CoordinatorRole,
  last_seen: z.string().describe('ISO 8601 timestamp of its last lease renewal or poll'),
});
export type ClusterMemberT = z.infer<typeof ClusterMember>;

export const ClusterView = z.object({
  /** The leader's advertised URL; null while no coordinator holds the lease (an election). */
  leader: z.string().nullable(),
  /** The lease's fencing epoch: it grows by one at every takeover; 0 for an embedded coordinator. */
  epoch: z.number().int().nonnegative(),
  coordinators: z.array(ClusterMember),
});
export type ClusterViewT = z.infer<typeof ClusterView>;

/** The reason of a NOT_LEADER close (`leader <url>` or `leader unknown`), and its parse. */
export function notLeaderReason(leader: string | null): string {
  const text = `leader ${leader ?? 'unknown'}`;
  // A close reason is at most 123 bytes: a longer URL is left out (the agent asks /api/v1/cluster).
  return Buffer.byteLength(text) <= 123 ? text : 'leader unknown';
}

export function leaderFromReason(reason: string): string | null {
  const m = /^leader (\S+)$/.exec(reason);
  return m && m[1] !== 'unknown' ? m[1]! : null;
}
