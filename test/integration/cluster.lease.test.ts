/**
 * The leader lease on a real PostgreSQL (issue 14; a fresh database, migrated): two leases on
 * one database give one leader and one standby; a leader's stop() lets the standby lead at its
 * next poll with epoch + 1; a leader that cannot renew (its timers are a ManualTimers nobody
 * advances: a paused process) loses the lease to the standby after the TTL, its fenced write
 * then fails with E_NOT_LEADER and lands nothing while the new leader's lands, and when it
 * resumes its renewal finds the row moved on and it steps down. kiln_fence takes the lease row
 * FOR SHARE: a takeover waits for a write transaction that passed the fence to commit, but
 * a leader paused inside one holds it off only until the server ends the idle session.
 * GET /api/v1/cluster's view comes from the same tables.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKilnError } from '../../shared/index.js';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { LeaderLease, type LeaseOptions, type LeaseRole } from '../../coordinator/cluster/leader-lease.js';
import { fence, PgLeaseStore } from '../../coordinator/cluster/lease-store.js';
import { type TestDatabase, freshDatabase, nextRole } from '../helpers/postgres.js';
import { ManualTimers } from '../helpers/manual-timers.js';

const TTL = 1500;
const RENEW = 300;
const POLL = 100;
const logger = pino({ level: 'silent' });

let db: TestDatabase;
let pg: PgClient;
const opened: PgClient[] = [];
const leases: LeaderLease[] = [];

async function client(name: string): Promise<PgClient> {
  const c = await openPg(db.url, { applicationName: name, max: 2 });
  opened.push(c);
  return c;
}

async function lease(url: string, extra: Partial<LeaseOptions> = {}): Promise<LeaderLease> {
  const l = new LeaderLease({ pg: await client('kiln-test-lease'), url, ttlMs: TTL, renewMs: RENEW, pollMs: POLL, logger, ...extra });
  leases.push(l);
  return l;
}

beforeAll(async () => {
  db = await freshDatabase();
  pg = await openPg(db.url, { applicationName: 'kiln-test' });
  await migrate(pg);
  await pg.query('CREATE TABLE t_writes (id serial PRIMARY KEY, by text NOT NULL)');
});

afterAll(async () => {
  for (const l of leases) await l.stop().catch(() => {});
  for (const c of opened) await c.close().catch(() => {});
  await pg?.close();
  await db?.drop();
});

async function resetLease(): Promise<void> {
  for (const l of leases.splice(0)) await l.stop();
  await pg.query('DELETE FROM kiln_lease');
  await pg.query('DELETE FROM kiln_coordinators');
  await pg.query('DELETE FROM t_writes');
}

/** A write transaction of a leader: the fence first, then the row. */
function fencedWrite(l: { epoch: number; holder: string }, by: string): Promise<void> {
  return pg.tx(async (q) => {
    await fence(q, l);
    await q.query('INSERT INTO t_writes (by) VALUES ($1)', [by]);
  });
}

describe('LeaderLease on a real PostgreSQL', () => {
  it('two coordinators on one database: one leader, one standby; the view lists both', async () => {
    await resetLease();
    // a TTL ten renewals long: a busy machine delaying one renewal does not make this test about load
    const a = await lease('http://127.0.0.1:7001', { ttlMs: 3000 });
    const b = await lease('http://127.0.0.1:7002', { ttlMs: 3000 });
    await a.start();
    await b.start();
    expect(a.role).toBe('leader');
    expect(a.token).toEqual({ epoch: 1, holder: a.holder });
    expect(b.role).toBe('standby');
    expect(b.token).toBeNull();
    expect(b.leaderUrl).toBe('http://127.0.0.1:7001');
    const view = await b.view();
    expect(view.leader).toBe('http://127.0.0.1:7001');
    expect(view.epoch).toBe(1);
    expect(view.coordinators.map((c) => [c.url, c.role])).toEqual([
      ['http://127.0.0.1:7001', 'leader'],
      ['http://127.0.0.1:7002', 'standby'],
    ]);
    for (const c of view.coordinators) expect(Number.isNaN(Date.parse(c.last_seen))).toBe(false);
    // the standby keeps polling and stays a standby while the leader renews
    await new Promise((r) => setTimeout(r, 3000 + RENEW));
    expect([a.role, b.role]).toEqual(['leader', 'standby']);
    expect((await a.view()).epoch).toBe(1);
  });

  it('stop() of the leader: the standby leads at its next poll with epoch + 1', async () => {
    await resetLease();
    // a long TTL: the standby can lead before the lease's expiry only because a gave it up
    const a = await lease('http://127.0.0.1:7001', { ttlMs: 600_000, renewMs: 1000 });
    const b = await lease('http://127.0.0.1:7002', { ttlMs: 600_000, renewMs: 1000 });
    await a.start();
    await b.start();
    const expiry = (await pg.query<{ e: Date }>('SELECT expires_at AS e FROM kiln_lease'))[0]!.e;
    const led = nextRole(b, 'leader');
    await a.stop();
    expect(await led).toBe(2);
    expect((await pg.query<{ before: boolean }>('SELECT now() < $1 AS before', [expiry]))[0]!.before).toBe(true);
    expect(b.token).toEqual({ epoch: 2, holder: b.holder });
    const view = await b.view();
    expect(view.leader).toBe('http://127.0.0.1:7002');
    expect(view.coordinators.map((c) => c.url)).toEqual(['http://127.0.0.1:7002']); // a forgot itself
  });

  it('a paused leader loses the lease after the TTL; its fenced write fails and lands nothing; it steps down when it resumes', async () => {
    await resetLease();
    const paused = new ManualTimers(); // nobody advances it: the leader's timers never fire
    const a = await lease('http://127.0.0.1:7001', { timers: paused, now: () => paused.now });
    const b = await lease('http://127.0.0.1:7002');
    const aRoles: LeaseRole[] = [];
    a.on('role', (r) => aRoles.push(r));
    await a.start();
    await b.start();
    const aToken = a.token!;
    expect(aToken.epoch).toBe(1);
    await fencedWrite(aToken, 'a-before');

    const bEpoch = await nextRole(b, 'leader'); // after the TTL, a never renewed
    expect(bEpoch).toBe(2);
    expect(a.role).toBe('leader'); // a has not noticed: it is paused

    let refused: unknown;
    try {
      await fencedWrite(aToken, 'a-after');
    } catch (err) {
      refused = err;
    }
    expect(isKilnError(refused, 'E_NOT_LEADER')).toBe(true);
    await fencedWrite(b.token!, 'b');
    expect((await pg.query<{ by: string }>('SELECT by FROM t_writes ORDER BY id')).map((r) => r.by)).toEqual(['a-before', 'b']);

    // a resumes: its next renewal finds the row moved on, and it steps down at once
    const down = nextRole(a, 'standby');
    paused.advance(RENEW);
    expect(await down).toBe(1);
    expect(a.role).toBe('standby');
    expect(a.token).toBeNull();
    expect(aRoles).toEqual(['leader', 'standby']);
    expect(b.role).toBe('leader');
  });

  it('a leader paused inside a fenced write transaction holds a takeover off only until the server ends its idle session; nothing of that transaction lands', async () => {
    await resetLease();
    const holder = 'c-test-paused';
    expect((await new PgLeaseStore(pg).acquire(holder, 'http://127.0.0.1:7001', TTL)).epoch).toBe(1);
    // the leader's state pool as a coordinator opens it, and a standby's lease pool likewise (cluster-coordinator.ts)
    const leaderPg = await openPg(db.url, { applicationName: 'kiln-test-paused', max: 1, idleInTransactionTimeoutMs: TTL });
    opened.push(leaderPg);
    const standbyPg = await openPg(db.url, { applicationName: 'kiln-test-lease', max: 2, lockTimeoutMs: RENEW });
    opened.push(standbyPg);
    const b = new LeaderLease({ pg: standbyPg, url: 'http://127.0.0.1:7002', ttlMs: TTL, renewMs: RENEW, pollMs: POLL, logger });
    leases.push(b);
    const led = nextRole(b, 'leader');
    let fenced!: () => void;
    const passedFence = new Promise<void>((r) => (fenced = r));
    // fence and a row, then silence (a stopped process) until the standby leads, then the next statement
    const write = leaderPg
      .tx(async (q) => {
        await fence(q, { epoch: 1, holder });
        await q.query('INSERT INTO t_writes (by) VALUES ($1)', ['paused']);
        fenced();
        await led;
        await q.query('INSERT INTO t_writes (by) VALUES ($1)', ['paused-late']);
      })
      .then(
        () => null,
        (err: unknown) => err,
      );
    await passedFence;
    await b.start();
    // the lease expires on the database's clock and the standby takes it once the server has
    // ended the paused session (the fence's FOR SHARE lock goes with it): epoch 2
    expect(await led).toBe(2);
    const err = await write;
    expect(isKilnError(err, 'E_UNAVAILABLE'), String(err)).toBe(true);
    expect((await pg.query<{ by: string }>('SELECT by FROM t_writes')).map((r) => r.by)).toEqual([]);
    // the standby's polls met the locked row and failed fast rather than wait: it went on being seen
    expect((await b.view()).coordinators.map((c) => c.url)).toContain('http://127.0.0.1:7002');
  });

  it('kiln_fence holds the lease row FOR SHARE: a takeover waits for a fenced write to commit', async () => {
    await resetLease();
    const store = new PgLeaseStore(pg);
    const holder = 'c-test-old';
    expect((await store.acquire(holder, 'http://127.0.0.1:7001', 60_000)).epoch).toBe(1);
    const taker = await openPg(db.url, { applicationName: 'kiln-test-taker', max: 1 });
    opened.push(taker);
    let takeover: Promise<{ epoch: number | null }> | undefined;
    // the lease has expired, but nobody took it yet: the old leader's fence still passes
    await pg.query("UPDATE kiln_lease SET expires_at = now() - interval '1 second'");
    await pg.tx(async (q) => {
      await fence(q, { epoch: 1, holder });
      // a takeover is attempted while this transaction is open
      takeover = new PgLeaseStore(taker).acquire('c-test-new', 'http://127.0.0.1:7002', 60_000);
      // it waits on the row lock this transaction's fence holds
      for (;;) {
        const waiting = await pg.query<{ n: number }>(
          "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'kiln-test-taker' AND wait_event_type = 'Lock'",
        );
        if (waiting[0]!.n === 1) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await q.query('INSERT INTO t_writes (by) VALUES ($1)', ['old-leader']);
    });
    expect((await takeover!).epoch).toBe(2);
    expect((await pg.query<{ by: string }>('SELECT by FROM t_writes')).map((r) => r.by)).toEqual(['old-leader']);
    let refused: unknown;
    try {
      await fencedWrite({ epoch: 1, holder }, 'old-leader-late');
    } catch (err) {
      refused = err;
    }
    expect(isKilnError(refused, 'E_NOT_LEADER')).toBe(true);
  });

  it('a coordinator restarted at the same URL replaces its old row in the view', async () => {
    await resetLease();
    const store = new PgLeaseStore(pg);
    await store.seen('c-old-process', 'http://127.0.0.1:7001', 'leader');
    const a = await lease('http://127.0.0.1:7001');
    await a.start();
    const view = await a.view();
    expect(view.coordinators).toHaveLength(1);
    expect(view.coordinators[0]!.role).toBe('leader');
    expect((await pg.query<{ holder: string }>('SELECT holder FROM kiln_coordinators')).map((r) => r.holder)).toEqual([a.holder]);
  });
});
