/**
 * The SQL of the leader lease (tables and kiln_fence from migration m001), behind
 * `LeaseStore` so the lease logic (leader-lease.ts) can be driven in tests with a fake store
 * and a fake clock. Every expiry is decided by the database's clock (`now()`), never a
 * coordinator's. `PgLeaseStore` runs one statement per call (autocommit: nothing holds a
 * connection or a lock between calls, so it works through a transaction-mode pooler too).
 */
import type { ClusterViewT } from '../../shared/index.js';
import type { PgQueryable } from '../state/pg/pg-client.js';

/** A fencing token: the lease epoch and the holder (a random id per coordinator process). */
export interface LeaseToken {
  epoch: number;
  holder: string;
}

/** The lease row as a standby sees it. */
export interface LeaseRow {
  epoch: number;
  holder: string;
  url: string;
  /** expires_at is still ahead of the database's now(). */
  live: boolean;
}

export interface LeaseStore {
  /**
   * Takes the lease when it has expired (epoch + 1) or does not exist yet (epoch 1), for
   * `ttlMs` from the database's now(). Returns the new epoch, or null when another holder's
   * lease is live (then `current` is that row).
   */
  acquire(holder: string, url: string, ttlMs: number): Promise<{ epoch: number | null; current: LeaseRow | null }>;
  /** Extends the lease if `token` still holds it; false when the row has moved on. */
  renew(token: LeaseToken, url: string, ttlMs: number): Promise<boolean>;
  /** Ends the lease now if `token` still holds it (a standby may take it at its next poll). */
  release(token: LeaseToken): Promise<void>;
  /** Records this coordinator as seen now, with its role. */
  seen(holder: string, url: string, role: 'leader' | 'standby'): Promise<void>;
  /** Forgets this coordinator's row (a clean stop), and rows of earlier processes at the same URL. */
  forget(holder: string, url: string, others: boolean): Promise<void>;
  /** The lease and the coordinators seen within `seenWithinMs`. */
  view(seenWithinMs: number): Promise<ClusterViewT>;
}

/** `SELECT kiln_fence($1, $2)`: the first statement of every write transaction of the leader. */
export const FENCE_SQL = 'SELECT kiln_fence($1, $2)';

/** Runs the fencing check in `q`'s transaction: rejects with E_NOT_LEADER once the lease has moved on. */
export async function fence(q: PgQueryable, token: LeaseToken): Promise<void> {
  await q.query(FENCE_SQL, [token.epoch, token.holder]);
}

export class PgLeaseStore implements LeaseStore {
  constructor(private readonly pg: PgQueryable) {}

  async acquire(holder: string, url: string, ttlMs: number): Promise<{ epoch: number | null; current: LeaseRow | null }> {
    const taken = await this.pg.query<{ epoch: number }>(
      `UPDATE kiln_lease SET epoch = epoch + 1, holder = $1, url = $2, expires_at = now() + $3 * interval '1 millisecond'
        WHERE id = 1 AND expires_at < now() RETURNING epoch`,
      [holder, url, ttlMs],
    );
    if (taken[0]) return { epoch: taken[0].epoch, current: null };
    const created = await this.pg.query<{ epoch: number }>(
      `INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, 1, $1, $2, now() + $3 * interval '1 millisecond')
        ON CONFLICT (id) DO NOTHING RETURNING epoch`,
      [holder, url, ttlMs],
    );
    if (created[0]) return { epoch: created[0].epoch, current: null };
    const rows = await this.pg.query<LeaseRow>('SELECT epoch, holder, url, expires_at >= now() AS live FROM kiln_lease WHERE id = 1');
    return { epoch: null, current: rows[0] ?? null };
  }

  async renew(token: LeaseToken, url: string, ttlMs: number): Promise<boolean> {
    const rows = await this.pg.query(
      `UPDATE kiln_lease SET expires_at = now() + $3 * interval '1 millisecond', url = $4
        WHERE id = 1 AND epoch = $1 AND holder = $2 RETURNING epoch`,
      [token.epoch, token.holder, ttlMs, url],
    );
    return rows.length === 1;
  }

  async release(token: LeaseToken): Promise<void> {
    await this.pg.query("UPDATE kiln_lease SET expires_at = now() - interval '1 millisecond' WHERE id = 1 AND epoch = $1 AND holder = $2", [token.epoch, token.holder]);
  }

  async seen(holder: string, url: string, role: 'leader' | 'standby'): Promise<void> {
    await this.pg.query(
      `INSERT INTO kiln_coordinators (holder, url, role, last_seen) VALUES ($1, $2, $3, now())
        ON CONFLICT (holder) DO UPDATE SET url = EXCLUDED.url, role = EXCLUDED.role, last_seen = EXCLUDED.last_seen`,
      [holder, url, role],
    );
  }

  async forget(holder: string, url: string, others: boolean): Promise<void> {
    if (others) {
      // rows of earlier processes at this URL, and of any coordinator gone for a day
      await this.pg.query("DELETE FROM kiln_coordinators WHERE (url = $1 AND holder <> $2) OR last_seen < now() - interval '1 day'", [url, holder]);
    } else {
      await this.pg.query('DELETE FROM kiln_coordinators WHERE holder = $1', [holder]);
    }
  }

  async view(seenWithinMs: number): Promise<ClusterViewT> {
    const lease = (await this.pg.query<LeaseRow>('SELECT epoch, holder, url, expires_at >= now() AS live FROM kiln_lease WHERE id = 1'))[0];
    const members = await this.pg.query<{ holder: string; url: string; last_seen: Date }>(
      `SELECT holder, url, last_seen FROM kiln_coordinators WHERE last_seen >= now() - $1 * interval '1 millisecond' ORDER BY url, last_seen DESC`,
      [seenWithinMs],
    );
    const leaderHolder = lease?.live ? lease.holder : null;
    // one entry per URL: the leader's row if it is one of them, else the most recently seen
    const byUrl = new Map<string, { holder: string; url: string; last_seen: Date }>();
    for (const m of members) {
      const have = byUrl.get(m.url);
      if (!have || (m.holder === leaderHolder && have.holder !== leaderHolder)) byUrl.set(m.url, m);
    }
    return {
      leader: lease?.live ? lease.url : null,
      epoch: lease?.epoch ?? 0,
      coordinators: [...byUrl.values()].map((m) => ({
        url: m.url,
        role: m.holder === leaderHolder ? 'leader' : 'standby',
        last_seen: m.last_seen.toISOString(),
      })),
    };
  }
}
