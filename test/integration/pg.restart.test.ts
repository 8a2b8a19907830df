/**
 * PostgreSQL going away and coming back (issue 14), on a server of the test's own
 * (test/helpers/postgres.ts privatePostgres: the other test files keep theirs): while it is
 * down every query and transaction fails with E_UNAVAILABLE (never the password, never a
 * crash of the process), and once it is back the same client works again without being
 * reopened. A leader whose database is gone steps down one TTL after its last renewal that
 * landed, although no renewal ever answers "moved on"; when the database is back a lease is
 * taken again under the next epoch. A LISTEN connection reports the loss, reconnects by
 * itself, says so ('up': catch up by reading), and receives what is notified after.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenPg, openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { LeaderLease } from '../../coordinator/cluster/leader-lease.js';
import { type PrivatePostgres, type TestDatabase, caught, freshDatabase, nextRole, privatePostgres } from '../helpers/postgres.js';

describe('PostgreSQL restarted under a client and a lease', () => {
  let server: PrivatePostgres;
  let db: TestDatabase;
  let pg: PgClient;
  let leasePg: PgClient;
  let password: string;
  beforeAll(async () => {
    server = await privatePostgres();
    db = await freshDatabase(server.url);
    password = new URL(db.url).password;
    pg = await openPg(db.url, { applicationName: 'kiln-test', connectTimeoutMs: 2000 });
    leasePg = await openPg(db.url, { applicationName: 'kiln-test-lease', max: 2, connectTimeoutMs: 1000, statementTimeoutMs: 2000 });
    await migrate(pg);
    await pg.query('CREATE TABLE t (id serial PRIMARY KEY, v text)');
  });
  afterAll(async () => {
    await leasePg?.close().catch(() => {});
    await pg?.close().catch(() => {});
    await server?.destroy();
  });

  it('fails with E_UNAVAILABLE while the server is down, and works again once it is back', async () => {
    await pg.query("INSERT INTO t (v) VALUES ('before')");
    await server.stop();
    for (const err of [await caught(pg.query('SELECT 1')), await caught(pg.tx((q) => q.query("INSERT INTO t (v) VALUES ('during')")))]) {
      expect(err.code).toBe('E_UNAVAILABLE');
      expect(err.message).toContain('***');
      expect(err.message).not.toContain(password);
    }
    await server.start();
    await pg.tx((q) => q.query("INSERT INTO t (v) VALUES ('after')"));
    expect((await pg.query<{ v: string }>('SELECT v FROM t ORDER BY id')).map((r) => r.v)).toEqual(['before', 'after']);
  });

  it('a listener gets NOTIFYs, reports the restart, reconnects and gets the next ones', async () => {
    const got: string[] = [];
    const states: string[] = [];
    let onUp: (() => void) | null = null;
    const listener = await listenPg(db.url, {
      applicationName: 'kiln-test-listen',
      channels: ['kiln_test_wake'],
      onNotify: (channel, payload) => got.push(`${channel}:${payload}`),
      onState: (state, err) => {
        states.push(err ? `${state}:${err.code}` : state);
        if (state === 'up') onUp?.();
      },
      backoff: { baseMs: 50, capMs: 500 },
    });
    try {
      expect(listener.connected).toBe(true);
      const notify = async (payload: string): Promise<void> => {
        const before = got.length;
        await pg.query("SELECT pg_notify('kiln_test_wake', $1)", [payload]);
        while (got.length === before) await new Promise((r) => setTimeout(r, 10));
      };
      await notify('one');
      const up = new Promise<void>((r) => (onUp = r));
      await server.stop();
      await server.start();
      await up;
      expect(listener.connected).toBe(true);
      // up at the start, down (mapped) at the restart, possibly down again while it was away, up again
      expect(states.slice(0, 2)).toEqual(['up', 'down:E_UNAVAILABLE']);
      expect(states.at(-1)).toBe('up');
      expect(states.slice(1, -1).every((x) => x === 'down:E_UNAVAILABLE')).toBe(true);
      await notify('two');
      expect(got).toEqual(['kiln_test_wake:one', 'kiln_test_wake:two']);
    } finally {
      await listener.close();
    }
    expect(listener.connected).toBe(false);
  });

  it('a leader whose database is gone steps down after the TTL; a lease is taken again under the next epoch once it is back', async () => {
    const lease = new LeaderLease({ pg: leasePg, url: 'http://127.0.0.1:7001', ttlMs: 2000, renewMs: 400, pollMs: 200, logger: pino({ level: 'silent' }) });
    try {
      await lease.start();
      expect(lease.role).toBe('leader');
      const epoch = lease.token!.epoch;
      const down = nextRole(lease, 'standby');
      await server.stop();
      expect(await down).toBe(epoch);
      expect(lease.token).toBeNull();
      const up = nextRole(lease, 'leader');
      await server.start();
      expect(await up).toBe(epoch + 1);
    } finally {
      await lease.stop();
    }
  });
});
