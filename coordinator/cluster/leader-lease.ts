/**
 * The leader lease of coordinators sharing one PostgreSQL database (issue 14). One coordinator
 * leads: it holds the `kiln_lease` row with a fencing epoch, which every write transaction
 * checks first (`fence()` in lease-store.ts; a write under a lost lease fails, it does not
 * land). The others are standbys.
 *
 * - A leader renews every `renewMs` (ttl/5). A renewal that does not land (the row has moved
 *   on, or no answer) for `ttlMs` since the last one that did, measured on the local
 *   monotonic clock from when that renewal was *sent*, makes it step down at once, database
 *   reachable or not: the database extended the lease at or after the send, so by then this
 *   process may no longer hold it. A row that has moved on steps it down at once too.
 * - A standby tries to take the lease every `pollMs`: it succeeds only once the row expired in
 *   the database's clock (epoch + 1), or when there is none yet (epoch 1).
 * - `stop()` ends a leader's lease at once (expires_at in the past), so a standby takes over at
 *   its next poll instead of after the TTL.
 * Every process records itself in `kiln_coordinators` at each renewal or poll; `view()` is
 * what GET /api/v1/cluster answers. The SQL is in lease-store.ts; time and timers are
 * parameters (a fake clock and ManualTimers in tests).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { coerceError, systemTimers, TypedEmitter, type ClusterViewT, type Timer, type Timers } from '../../shared/index.js';
import type { PgClient } from '../state/pg/pg-client.js';
import { PgLeaseStore, type LeaseStore, type LeaseToken } from './lease-store.js';

export type { LeaseToken } from './lease-store.js';
export { fence, FENCE_SQL } from './lease-store.js';
export type LeaseRole = 'leader' | 'standby';

export interface LeaseOptions {
  /** Best a client of its own (max 2), so renewals never queue behind state writes. */
  pg: PgClient;
  /** This coordinator's advertised URL. */
  url: string;
  /** Lease length (default setting 10 s). */
  ttlMs: number;
  /** Leader's renewal interval (ttl/5). */
  renewMs: number;
  /** Standby's takeover attempts (1 s). */
  pollMs: number;
  logger: Logger;
  /** Monotonic milliseconds (default performance.now). */
  now?: () => number;
  /** Default: Node's timers. */
  timers?: Timers;
  /** Default: the SQL store on `pg` (tests pass a fake). */
  store?: LeaseStore;
}

export interface LeaseEvents {
  /** The role changed: 'leader' at `epoch`, or 'standby' (epoch: the last one known). */
  role: [role: LeaseRole, epoch: number];
}

/** Coordinators seen within this many TTLs are listed by view(). */
const SEEN_TTLS = 3;

export class LeaderLease extends TypedEmitter<LeaseEvents> {
  readonly holder: string = `c-${randomBytes(9).toString('base64url')}`;
  private readonly store: LeaseStore;
  private readonly now: () => number;
  private readonly timers: Timers;
  private _role: LeaseRole = 'standby';
  private epoch = 0;
  private lastLeader: string | null = null;
  /** Local monotonic time the last renewal (or the takeover) that landed was sent. */
  private landedSentAt = 0;
  /** Bumped at every role change: an answer to a request sent before it is ignored. */
  private generation = 0;
  private tickTimer: Timer | null = null;
  private deadlineTimer: Timer | null = null;
  private inFlight: Promise<void> | null = null;
  private stopped = false;
  private started = false;

  constructor(private readonly opts: LeaseOptions) {
    super();
    if (!(opts.ttlMs > 0) || !(opts.renewMs > 0) || !(opts.pollMs > 0) || opts.renewMs >= opts.ttlMs) {
      throw new RangeError(`lease timings: ttl ${opts.ttlMs} ms, renew ${opts.renewMs} ms, poll ${opts.pollMs} ms (renew must be shorter than ttl)`);
    }
    this.store = opts.store ?? new PgLeaseStore(opts.pg);
    this.now = opts.now ?? (() => performance.now());
    this.timers = opts.timers ?? systemTimers;
  }

  get role(): LeaseRole {
    return this._role;
  }

  /** The fencing token while leader, else null. */
  get token(): LeaseToken | null {
    return this._role === 'leader' ? { epoch: this.epoch, holder: this.holder } : null;
  }

  /** The last known leader's URL (this coordinator's own while it leads); null when unknown. */
  get leaderUrl(): string | null {
    return this._role === 'leader' ? this.opts.url : this.lastLeader;
  }

  /** Makes a first attempt to lead (so a lone coordinator leads when this resolves), then keeps going. */
  async start(): Promise<void> {
    if (this.started) throw new Error('LeaderLease.start() called twice');
    this.started = true;
    await this.store.forget(this.holder, this.opts.url, true).catch((err: unknown) => this.warn('could not tidy kiln_coordinators', err));
    await this.step();
    this.schedule();
  }

  /** Stops renewing and polling; a leader ends its lease at once so a standby takes over. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.tickTimer?.clear();
    this.deadlineTimer?.clear();
    if (this.inFlight) {
      // wait for the renewal on its way (so none lands after the release), at most one TTL
      let limit: Timer | undefined;
      await Promise.race([this.inFlight.catch(() => {}), new Promise<void>((r) => (limit = this.timers.after(this.opts.ttlMs, r, { unref: true })))]);
      limit?.clear();
    }
    const token = this.token;
    if (token) {
      this.setStandby('stopped');
      await this.store.release(token).catch((err: unknown) => this.warn('could not release the lease (a standby takes over when it expires)', err));
    }
    await this.store.forget(this.holder, this.opts.url, false).catch(() => {});
  }

  /** The lease and every coordinator seen within 3 × ttl. */
  view(): Promise<ClusterViewT> {
    return this.store.view(SEEN_TTLS * this.opts.ttlMs);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.tickTimer?.clear();
    const ms = this._role === 'leader' ? this.opts.renewMs : this.opts.pollMs;
    this.tickTimer = this.timers.after(ms, () => this.tick(), { unref: true });
  }

  private tick(): void {
    this.tickTimer = null;
    if (this.stopped) return;
    if (this.inFlight) {
      // the previous renewal or poll has not answered: the deadline timer covers a leader
      this.schedule();
      return;
    }
    void this.step().finally(() => this.schedule());
  }

  /** One renewal (leader) or takeover attempt (standby), and the membership row. */
  private step(): Promise<void> {
    // A request without an answer for a whole TTL no longer holds the loop up (a leader has
    // stepped down by then; its late answer, if any, is checked against the generation).
    const limit = this.timers.after(this.opts.ttlMs, () => {
      if (this.inFlight === p) this.inFlight = null;
    }, { unref: true });
    const p: Promise<void> = (this._role === 'leader' ? this.renew() : this.tryAcquire()).finally(() => {
      limit.clear();
      if (this.inFlight === p) this.inFlight = null;
    });
    this.inFlight = p;
    return p;
  }

  private async renew(): Promise<void> {
    const gen = this.generation;
    const sentAt = this.now();
    const token = { epoch: this.epoch, holder: this.holder };
    let landed: boolean;
    try {
      landed = await this.store.renew(token, this.opts.url, this.opts.ttlMs);
    } catch (err) {
      if (gen === this.generation) this.warn('lease renewal failed', err);
      return; // the deadline timer steps down if none lands in time
    }
    if (gen !== this.generation || this.stopped) return;
    if (!landed) {
      this.opts.logger.warn({ epoch: token.epoch }, 'the leader lease has moved on (another coordinator took it): stepping down');
      this.setStandby('lease moved on');
      return;
    }
    this.landed(sentAt);
    await this.store.seen(this.holder, this.opts.url, 'leader').catch((err: unknown) => this.warn('could not record this coordinator as seen', err));
  }

  private async tryAcquire(): Promise<void> {
    const gen = this.generation;
    const sentAt = this.now();
    let result: Awaited<ReturnType<LeaseStore['acquire']>>;
    try {
      result = await this.store.acquire(this.holder, this.opts.url, this.opts.ttlMs);
    } catch (err) {
      this.warn('lease poll failed', err);
      return;
    }
    if (gen !== this.generation || this.stopped) {
      // stopped while the takeover was on its way: give the lease straight back
      if (result.epoch !== null) await this.store.release({ epoch: result.epoch, holder: this.holder }).catch(() => {});
      return;
    }
    if (result.epoch !== null) {
      this.epoch = result.epoch;
      this._role = 'leader';
      this.generation++;
      this.lastLeader = this.opts.url;
      this.landed(sentAt);
      this.opts.logger.info({ epoch: this.epoch, holder: this.holder, url: this.opts.url }, 'this coordinator is now the leader');
      this.emit('role', 'leader', this.epoch);
    } else {
      const cur = result.current;
      if (cur) this.epoch = cur.epoch;
      this.lastLeader = cur && cur.live && cur.holder !== this.holder ? cur.url : null;
    }
    await this.store.seen(this.holder, this.opts.url, this._role).catch((err: unknown) => this.warn('could not record this coordinator as seen', err));
  }

  /** A renewal or takeover sent at `sentAt` landed: the lease is ours until sentAt + ttl locally. */
  private landed(sentAt: number): void {
    if (sentAt < this.landedSentAt) return;
    this.landedSentAt = sentAt;
    this.deadlineTimer?.clear();
    const gen = this.generation;
    const left = Math.max(0, sentAt + this.opts.ttlMs - this.now());
    this.deadlineTimer = this.timers.after(left, () => this.deadline(gen), { unref: true });
  }

  private deadline(gen: number): void {
    this.deadlineTimer = null;
    if (gen !== this.generation || this._role !== 'leader' || this.stopped) return;
    const since = this.now() - this.landedSentAt;
    if (since < this.opts.ttlMs) {
      this.landed(this.landedSentAt); // the clock moved less than the timer: wait the rest
      return;
    }
    this.opts.logger.warn({ epoch: this.epoch, ms: Math.round(since) }, 'no lease renewal landed within the lease TTL: stepping down');
    this.setStandby('renewal deadline');
  }

  private setStandby(why: string): void {
    if (this._role !== 'leader') return;
    this._role = 'standby';
    this.generation++;
    this.lastLeader = null;
    this.deadlineTimer?.clear();
    this.deadlineTimer = null;
    this.opts.logger.info({ epoch: this.epoch, why }, 'this coordinator is now a standby');
    this.emit('role', 'standby', this.epoch);
    this.schedule();
  }

  private warn(msg: string, err: unknown): void {
    this.opts.logger.warn({ err: coerceError(err).message }, msg);
  }
}
