/**
 * The PostgreSQL client and the schema migrations (issue 14), against a real PostgreSQL (the
 * test server of scripts/infra/postgres.sh, a fresh database per file). The client: URLs checked
 * with errors naming what is wrong and never the password; an unreachable server and a wrong
 * password mapped without the password; transactions that commit, roll back on a throw, and do
 * not report success when a caught statement error aborted them; int8 as numbers; kiln_fence's
 * KL001 as E_NOT_LEADER. The migrations: applied once and recorded, idempotent, two concurrent
 * `migrate` calls apply each migration once, a newer schema refused with nothing changed.
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KilnError } from '../../shared/index.js';
import { isKilnError } from '../../shared/index.js';
import { openPg, parsePostgresUrl, redactPostgresUrl, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { migrate, schemaVersion } from '../../coordinator/state/pg/migrate.js';
import { MIGRATIONS, type Migration } from '../../coordinator/state/pg/migrations/index.js';
import { caught, freshDatabase, testPostgresUrl, type TestDatabase } from '../helpers/postgres.js';

describe('parsePostgresUrl / redactPostgresUrl', () => {
  it('accepts postgres:// and postgresql:// URLs and returns them trimmed', () => {
    expect(parsePostgresUrl(' postgres://kiln:pw@127.0.0.1:5432/kiln ')).toBe('postgres://kiln:pw@127.0.0.1:5432/kiln');
    expect(parsePostgresUrl('postgresql://db.example:6543/kiln?sslmode=verify-full&application_name=x')).toContain('sslmode=verify-full');
    expect(parsePostgresUrl('postgres://[::1]/kiln')).toBe('postgres://[::1]/kiln');
  });

  it.each([
    ['', /empty/],
    ['http://kiln:secretpw@host/db', /scheme is 'http:'/],
    ['postgres://kiln:secretpw@/db', /no host|cannot be parsed/],
    ['postgres://kiln:secretpw@host:70000/db', /out of range|cannot be parsed/],
    ['postgres://kiln:secretpw@host/db/extra', /one database name/],
    ['postgres://kiln:secretpw@host/db#frag', /fragment/],
    ['postgres://kiln:secretpw@host/db?sslmode=maybe', /sslmode must be/],
    ['postgres://kiln:secretpw@host/db?host=/tmp', /unknown parameter 'host'/],
    ['postgres://kiln:secretpw@host/d b', /space or a control/],
    [`postgres://kiln:secretpw@host/${'d'.repeat(64)}`, /longer than 63/],
    [`postgres://kiln:secretpw@host/db?application_name=${'a'.repeat(3000)}`, /longer than 2048/],
    // a password with an unencoded '/' (base64) makes the URL unparsable: still never echoed
    ['postgres://kiln:secretpw/cd+ef==@host/db', /cannot be parsed/],
    // a password longer than the 200 characters shown: redacted before the cut
    [`postgres://kiln:secretpw${'x'.repeat(250)}@host/d b`, /space or a control/],
  ])('refuses %j with E_CONFIG naming what is wrong, not the password', (text, why) => {
    let err: unknown;
    try {
      parsePostgresUrl(text);
    } catch (e) {
      err = e;
    }
    expect(isKilnError(err, 'E_CONFIG')).toBe(true);
    const message = (err as KilnError).message;
    expect(message).toMatch(why);
    expect(message).not.toContain('secretpw');
  });

  it('masks the password, also in text that is not a URL', () => {
    expect(redactPostgresUrl('postgres://kiln:s3cret@h:5432/db')).toBe('postgres://kiln:***@h:5432/db');
    expect(redactPostgresUrl('postgres://h/db')).toBe('postgres://h/db');
    expect(redactPostgresUrl('postgres://kiln:s3cret@h:99999/db')).not.toContain('s3cret');
  });
});

describe('openPg against a real server', () => {
  let db: TestDatabase;
  let pg: PgClient;
  beforeAll(async () => {
    db = await freshDatabase();
    pg = await openPg(db.url, { applicationName: 'kiln-test' });
  });
  afterAll(async () => {
    await pg?.close();
    await db?.drop();
  });

  it('location is the URL with the password masked', () => {
    const password = new URL(db.url).password;
    expect(password.length).toBeGreaterThan(0);
    expect(pg.location).not.toContain(password);
    expect(pg.location).toContain('***');
  });

  it('an unreachable server is E_UNAVAILABLE naming the redacted URL, never the password', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    await new Promise((r) => srv.close(r));
    const err = await caught(openPg(`postgres://kiln:topsecretpw@127.0.0.1:${port}/kiln`, { applicationName: 'kiln-test', connectTimeoutMs: 2000 }));
    expect(err.code).toBe('E_UNAVAILABLE');
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).not.toContain('topsecretpw');
    expect(JSON.stringify({ m: err.message, s: err.stack })).not.toContain('topsecretpw');
  });

  it('a wrong password is refused as E_CONFIG without the password', async () => {
    const u = new URL(db.url);
    u.password = 'wrongpassword123';
    const err = await caught(openPg(u.toString(), { applicationName: 'kiln-test' }));
    expect(err.code).toBe('E_CONFIG');
    expect(err.message).toMatch(/28P01/);
    expect(err.message).not.toContain('wrongpassword123');
  });

  it('tx commits; a throw rolls back; int8 comes back as a number', async () => {
    await pg.query('CREATE TABLE t_tx (id bigint PRIMARY KEY, v text)');
    const r = await pg.tx(async (q) => {
      await q.query('INSERT INTO t_tx VALUES ($1, $2)', [1, 'a']);
      return (await q.query<{ n: number }>('SELECT count(*) AS n FROM t_tx'))[0]!.n;
    });
    expect(r).toBe(1);
    await expect(
      pg.tx(async (q) => {
        await q.query('INSERT INTO t_tx VALUES ($1, $2)', [2, 'b']);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const rows = await pg.query<{ id: number; v: string }>('SELECT id, v FROM t_tx ORDER BY id');
    expect(rows).toEqual([{ id: 1, v: 'a' }]);
    expect((await pg.query<{ big: number | string }>("SELECT '9007199254740993'::bigint AS big"))[0]!.big).toBe('9007199254740993');
  });

  it('a caught statement error aborts the transaction: tx rejects, nothing lands', async () => {
    await pg.query('CREATE TABLE t_abort (id int PRIMARY KEY)');
    const err = await caught(
      pg.tx(async (q) => {
        await q.query('INSERT INTO t_abort VALUES (1)');
        await q.query('INSERT INTO t_abort VALUES (1)').catch(() => undefined); // duplicate key, swallowed
        return 'done';
      }),
    );
    expect(err.code).toBe('E_STATE');
    expect(await pg.query('SELECT * FROM t_abort')).toEqual([]);
  });

  it('a server error is E_STATE with its SQLSTATE; KL001 is E_NOT_LEADER', async () => {
    const err = await caught(pg.query('SELECT * FROM no_such_table'));
    expect(err.code).toBe('E_STATE');
    expect(err.message).toContain('42P01');
    const fenced = await caught(pg.query("DO $$ BEGIN RAISE EXCEPTION 'moved on' USING ERRCODE = 'KL001'; END $$"));
    expect(fenced.code).toBe('E_NOT_LEADER');
  });

  it('queries issued together in one transaction (pipelined) all land, in order', async () => {
    await pg.query('CREATE TABLE t_pipe (seq serial PRIMARY KEY, v int)');
    await pg.tx(async (q) => {
      await Promise.all(Array.from({ length: 50 }, (_, i) => q.query('INSERT INTO t_pipe (v) VALUES ($1)', [i])));
    });
    const rows = await pg.query<{ v: number }>('SELECT v FROM t_pipe ORDER BY seq');
    expect(rows.map((r) => r.v)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });
});

describe('migrate', () => {
  let db: TestDatabase;
  let pg: PgClient;
  beforeAll(async () => {
    db = await freshDatabase();
    pg = await openPg(db.url, { applicationName: 'kiln-test-migrate' });
  });
  afterAll(async () => {
    await pg?.close();
    await db?.drop();
  });

  it('two concurrent migrate calls on a new database apply each migration exactly once', async () => {
    const other = await openPg(db.url, { applicationName: 'kiln-test-migrate-2' });
    try {
      const [a, b] = await Promise.all([migrate(pg), migrate(other)]);
      expect([...a.applied, ...b.applied].sort()).toEqual(MIGRATIONS.map((m) => m.version));
      expect(a.version).toBe(MIGRATIONS.length);
      expect(b.version).toBe(MIGRATIONS.length);
    } finally {
      await other.close();
    }
    const rows = await pg.query<{ version: number; name: string }>('SELECT version, name FROM kiln_schema ORDER BY version');
    expect(rows).toEqual(MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));
    // m001's objects are there
    const tables = await pg.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE tablename LIKE 'kiln_%' ORDER BY 1");
    expect(tables.map((r) => r.t)).toEqual(expect.arrayContaining(['kiln_coordinators', 'kiln_lease', 'kiln_schema']));
  });

  it('is idempotent: a second run applies nothing', async () => {
    expect(await migrate(pg)).toEqual({ applied: [], version: MIGRATIONS.length });
  });

  it('applies a newer migration of an extended list, once', async () => {
    const extra: Migration = { version: MIGRATIONS.length + 1, name: 'test-extra', sql: 'CREATE TABLE kiln_test_extra (x int)' };
    expect(await migrate(pg, [...MIGRATIONS, extra])).toEqual({ applied: [extra.version], version: extra.version });
    expect(await migrate(pg, [...MIGRATIONS, extra])).toEqual({ applied: [], version: extra.version });
    expect(await schemaVersion(pg)).toBe(extra.version);
  });

  it('refuses a database whose schema is newer than it knows, changing nothing', async () => {
    const newest = MIGRATIONS.length;
    const recorded = await schemaVersion(pg);
    expect(recorded).toBeGreaterThan(newest); // the extended list above left version newest + 1
    const before = await pg.query('SELECT version, name, applied_at FROM kiln_schema ORDER BY version');
    const err = await caught(migrate(pg));
    expect(err.code).toBe('E_STATE');
    expect(err.message).toBe(`the database schema is version ${recorded}, newer than this kiln knows (${newest}): upgrade kiln`);
    expect(await pg.query('SELECT version, name, applied_at FROM kiln_schema ORDER BY version')).toEqual(before);
  });

  it('an empty database sees version 0 and a test server answers', async () => {
    const fresh = await freshDatabase(testPostgresUrl());
    const q = await openPg(fresh.url, { applicationName: 'kiln-test' });
    try {
      expect(await schemaVersion(q)).toBe(0);
    } finally {
      await q.close();
      await fresh.drop();
    }
  });
});
