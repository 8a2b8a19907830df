/**
 * GET /api/v1/cluster of an embedded (single-machine) coordinator: itself as the leader at
 * epoch 0, seen now. `url` is its advertised URL (advertise_url, default its listen address).
 */
import type { ClusterViewT } from '../../shared/index.js';

export function embeddedClusterView(url: string, now: number = Date.now()): ClusterViewT {
  return { leader: url, epoch: 0, coordinators: [{ url, role: 'leader', last_seen: new Date(now).toISOString() }] };
}
