/**
 * The PostgreSQL log store (issue 14) against a real PostgreSQL: what only a shared store has.
 * A standby's store (its own client, as another process) reads every acknowledged byte while
 * the leader's store is still writing; a live follower on the leader reads from memory (no
 * query per line); a leader whose lease moved on (or that holds none) has
 * its appends refused with E_NOT_LEADER and nothing of them lands, then and later; appends of
 * many attempts at once share transactions (group commit) and each is acked with its own end;
 * a commit whose answer was lost counts as landed (not written twice, not refused); chunks
 * larger than a row split and read back at any window; and the database restarted under
 * appends loses nothing acknowledged (appends wait meanwhile, `healthy` says so), and stopping
 * the store while it is away does not hang (what waits fails unacked). A writer in
 * another process (the built store, `npm run build` first) killed with SIGKILL mid-append: every
 * byte it acked is read back by this process, exactly.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KilnError } from '../../shared/index.js';
import { MAX_CHUNK_ROW_BYTES, PgLogStore } from '../../coordinator/logs/pg-log-store.js';
import type { AttemptLogRef, LogStorage } from '../../coordinator/logs/log-storage.js';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { caught, freshDatabase, privatePostgres, type TestDatabase } from '../helpers/postgres.js';

const TOKEN = { epoch: 1, holder: 'leader-a' };
const ref = (buildId: string, node = 'n0', number = 1): AttemptLogRef => ({ buildId, node, number, header: '' });
const b = (text: string) => Buffer.from(text);

async function grantLease(pg: PgClient, token: { epoch: number; holder: string }): Promise<void> {
  await pg.query(
    `INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, $1, $2, 'http://127.0.0.1:1', now() + interval '1 day')
     ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at`,
    [token.epoch, token.holder],
  );
}

async function readAll(logs: LogStorage, buildId: string, node = 'n0', attempts = 1): Promise<Buffer> {
  const sizes = await logs.nodeSizes(buildId, node, attempts);
  return logs.read(buildId, node, sizes, 0, sizes.reduce((x, y) => x + y, 0));
}

async function chunkRows(pg: PgClient, buildId: string): Promise<number> {
  const rows = await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM kiln_log_chunk WHERE build_id = $1', [buildId]);
  return rows[0]!.n;
}

describe('PostgreSQL log store', () => {
  let db: TestDatabase;
  let pg: PgClient;
  beforeAll(async () => {
    db = await freshDatabase();
    pg = await openPg(db.url, { applicationName: 'kiln-test-pg-logs', max: 4 });
    await migrate(pg);
    await grantLease(pg, TOKEN);
  });
  afterAll(async () => {
    await pg?.close();
    await db?.drop();
  });

  it("a standby's store (its own client) reads every acknowledged byte while the leader's is still writing", async () => {
    const leader = new PgLogStore({ pg, fence: () => TOKEN });
    const standbyPg = await openPg(db.url, { applicationName: 'kiln-test-standby', max: 2 });
    try {
      let acked = 0;
      let text = '';
      for (let i = 0; i < 30; i++) {
        const line = `${i} ${'é'.repeat(i)}\n`;
        acked = await leader.append(ref('b-standby'), acked, b(line));
        text += line;
        const standby = new PgLogStore({ pg: standbyPg, fence: () => null });
        // every acked byte is there for a store that never saw the appends
        expect((await readAll(standby, 'b-standby')).toString()).toBe(text);
      }
      // the leader itself answers from its in-memory tail and the rows alike
      expect((await readAll(leader, 'b-standby')).toString()).toBe(text);
    } finally {
      await leader.closeAll();
      await standbyPg.close();
    }
  });

  it('serves a live follower on the leader from memory: no database read per line', async () => {
    let queries = 0;
    const counting: PgClient = {
      location: pg.location,
      query: (text, params) => (queries++, pg.query(text, params)),
      tx: (fn) => (queries++, pg.tx(fn)),
      close: () => Promise.resolve(),
    };
    const logs = new PgLogStore({ pg: counting, fence: () => TOKEN });
    try {
      let off = await logs.append(ref('b-live'), 0, b('first\n'));
      const seen: string[] = [];
      let readQueries = 0;
      for (let i = 0; i < 20; i++) {
        const line = `line ${i}\n`;
        off = await logs.append(ref('b-live'), off, b(line));
        // what a follower does on the append event: the sizes, then the new bytes
        const before = queries;
        const sizes = await logs.nodeSizes('b-live', 'n0', 1);
        seen.push((await logs.read('b-live', 'n0', sizes, sizes[0]! - line.length, sizes[0]!)).toString());
        readQueries += queries - before;
      }
      expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => `line ${i}\n`));
      expect(readQueries).toBe(0);
    } finally {
      await logs.closeAll();
    }
  });

  it('refuses the appends of a leader whose lease moved on: E_NOT_LEADER, nothing of them lands, then or later', async () => {
    const token = { epoch: 5, holder: 'leader-old' };
    await grantLease(pg, token);
    const old = new PgLogStore({ pg, fence: () => token });
    try {
      expect(await old.append(ref('b-fenced'), 0, b('before\n'))).toBe(7);
      // another coordinator takes over
      await grantLease(pg, { epoch: 6, holder: 'leader-new' });
      const err = await caught(old.append(ref('b-fenced'), 7, b('after\n')));
      expect(err.code).toBe('E_NOT_LEADER');
      expect(await chunkRows(pg, 'b-fenced')).toBe(1);
      // refused for good: a later append, even of another attempt, is not written either
      expect((await caught(old.append(ref('b-fenced', 'n1'), 0, b('x\n')))).code).toBe('E_NOT_LEADER');
      expect((await caught(old.appendNote(ref('b-fenced'), 'note\n'))).code).toBe('E_NOT_LEADER');
      const rows = await pg.query<{ n: number }>("SELECT count(*)::int AS n FROM kiln_log_attempt WHERE build_id = 'b-fenced' AND node = 'n1'");
      expect(rows[0]!.n).toBe(0);
      expect(await chunkRows(pg, 'b-fenced')).toBe(1);
      // the new leader's store continues from the acked bytes
      const fresh = new PgLogStore({ pg, fence: () => ({ epoch: 6, holder: 'leader-new' }) });
      expect(await fresh.agentBytes(ref('b-fenced'))).toBe(7);
      expect(await fresh.append(ref('b-fenced'), 7, b('after\n'))).toBe(13);
      expect((await readAll(fresh, 'b-fenced')).toString()).toBe('before\nafter\n');
      await fresh.closeAll();
    } finally {
      await old.closeAll();
      await grantLease(pg, TOKEN);
    }
  });

  it('writes nothing without a lease token', async () => {
    const none = new PgLogStore({ pg, fence: () => null });
    expect((await caught(none.append(ref('b-nolease'), 0, b('x\n')))).code).toBe('E_NOT_LEADER');
    expect(await chunkRows(pg, 'b-nolease')).toBe(0);
  });

  it('group-commits appends of many attempts, each acked with its own end once durable', async () => {
    const logs = new PgLogStore({ pg, fence: () => TOKEN });
    try {
      const attempts = 10;
      const frames = 40;
      const acks: Array<Promise<number>> = [];
      // every frame of every attempt sent without waiting for the acks (as agents do)
      for (let f = 0; f < frames; f++) {
        for (let a = 0; a < attempts; a++) acks.push(logs.append(ref('b-group', `n${a}`), f * 8, b(`f${String(f).padStart(6, '0')}\n`)));
      }
      const ends = await Promise.all(acks);
      expect(ends).toEqual(Array.from({ length: frames * attempts }, (_, i) => (Math.floor(i / attempts) + 1) * 8));
      expect(logs.batches).toBeLessThan(frames * attempts / 10);
      const other = new PgLogStore({ pg, fence: () => null });
      for (let a = 0; a < attempts; a++) {
        expect((await readAll(other, 'b-group', `n${a}`)).toString()).toBe(Array.from({ length: frames }, (_, f) => `f${String(f).padStart(6, '0')}\n`).join(''));
      }
    } finally {
      await logs.closeAll();
    }
  });

  it('counts a commit whose answer was lost as landed: acked once, written once', async () => {
    let loseNext = true;
    // the real client, except that the first transaction's answer is lost after it committed
    const lossy: PgClient = {
      location: pg.location,
      query: (text, params) => pg.query(text, params),
      tx: async (fn) => {
        const out = await pg.tx(fn);
        if (loseNext) {
          loseNext = false;
          throw new KilnError('E_UNAVAILABLE', 'PostgreSQL is unreachable (Connection terminated)');
        }
        return out;
      },
      close: () => Promise.resolve(),
    };
    const health: boolean[] = [];
    const logs = new PgLogStore({ pg: lossy, fence: () => TOKEN, retryMs: { first: 5, max: 20 }, onHealth: (h) => health.push(h) });
    expect(await logs.append(ref('b-lost'), 0, b('only once\n'))).toBe(10);
    expect(loseNext).toBe(false);
    expect(await chunkRows(pg, 'b-lost')).toBe(1);
    expect(await logs.append(ref('b-lost'), 10, b('next\n'))).toBe(15);
    expect((await readAll(new PgLogStore({ pg, fence: () => null }), 'b-lost')).toString()).toBe('only once\nnext\n');
    expect(health).toEqual([]);
    await logs.closeAll();
  });

  it('has every byte a writer process acked after that process is killed with SIGKILL mid-append', async () => {
    const dist = resolve(import.meta.dirname, '..', '..', 'dist', 'coordinator');
    const code = `
      const { openPg } = await import(${JSON.stringify(`${dist}/state/pg/pg-client.js`)});
      const { PgLogStore } = await import(${JSON.stringify(`${dist}/logs/pg-log-store.js`)});
      const pg = await openPg(process.env.DB_URL, { applicationName: 'kiln-test-writer', max: 2 });
      const logs = new PgLogStore({ pg, fence: () => (${JSON.stringify(TOKEN)}) });
      const ref = { buildId: 'b-killed', node: 'n0', number: 1, header: '' };
      let off = 0;
      const inflight = [];
      for (let i = 0; ; i++) {
        const data = Buffer.from('line ' + i + '\\n');
        const p = logs.append(ref, off, data).then((end) => process.stdout.write(end + '\\n'));
        off += data.length;
        inflight.push(p);
        if (inflight.length >= 8) await inflight.shift();
      }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, DB_URL: db.url }, stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    let acked = 0;
    let count = 0;
    for await (const l of createInterface({ input: child.stdout })) {
      acked = Math.max(acked, Number(l));
      if (++count === 500) child.kill('SIGKILL');
    }
    await exited;
    expect(count).toBeGreaterThanOrEqual(500);
    const text = (await readAll(new PgLogStore({ pg, fence: () => null }), 'b-killed')).toString();
    expect(text.length).toBeGreaterThanOrEqual(acked);
    const lines = text.split('\n').slice(0, -1);
    expect(lines).toEqual(lines.map((_, i) => `line ${i}`));
  });

  it('splits a chunk larger than a row and reads any window of it back', async () => {
    const logs = new PgLogStore({ pg, fence: () => TOKEN });
    const big = Buffer.alloc(MAX_CHUNK_ROW_BYTES * 2 + 1234);
    for (let i = 0; i < big.length; i++) big[i] = 97 + (i % 26);
    await logs.appendNote(ref('b-big'), big.toString('latin1'));
    expect(await chunkRows(pg, 'b-big')).toBe(3);
    const other = new PgLogStore({ pg, fence: () => null });
    const sizes = await other.nodeSizes('b-big', 'n0', 1);
    expect(sizes).toEqual([big.length]);
    for (const [s, e] of [
      [0, 10],
      [MAX_CHUNK_ROW_BYTES - 5, MAX_CHUNK_ROW_BYTES + 5],
      [MAX_CHUNK_ROW_BYTES + 17, 2 * MAX_CHUNK_ROW_BYTES + 100],
      [big.length - 3, big.length],
      [0, big.length],
    ] as const) {
      expect((await other.read('b-big', 'n0', sizes, s, e)).equals(big.subarray(s, e))).toBe(true);
    }
    await logs.closeAll();
  });
});

describe('PostgreSQL log store: the database restarted under appends', () => {
  it('loses nothing acknowledged; appends wait while the database is away and land when it is back', async () => {
    const server = await privatePostgres();
    const restartDb = await freshDatabase(server.url);
    const q = await openPg(restartDb.url, { applicationName: 'kiln-test-logs-restart', connectTimeoutMs: 1_000 });
    try {
      await migrate(q);
      await grantLease(q, TOKEN);
      const health: boolean[] = [];
      const logs = new PgLogStore({ pg: q, fence: () => TOKEN, retryMs: { first: 20, max: 200 }, onHealth: (h) => health.push(h) });
      const acked = new Map<string, number>();
      let stop = false;
      // three attempts appending lines as fast as their acks come
      const writers = ['n0', 'n1', 'n2'].map(async (node) => {
        let off = 0;
        for (let i = 0; !stop; i++) {
          off = await logs.append(ref('b-restart', node), off, b(`${node} line ${i}\n`));
          acked.set(node, off);
        }
      });
      const total = () => [...acked.values()].reduce((x, y) => x + y, 0);
      while (total() < 2_000) await new Promise((r) => setTimeout(r, 5));
      await server.restart();
      const after = total();
      while (total() < after + 2_000) await new Promise((r) => setTimeout(r, 5));
      stop = true;
      await Promise.all(writers);
      await logs.closeAll();
      expect(health).toEqual([false, true]);
      const reader = new PgLogStore({ pg: q, fence: () => null });
      for (const [node, off] of acked) {
        const text = (await readAll(reader, 'b-restart', node)).toString();
        expect(text.length).toBe(off);
        const lines = text.split('\n').slice(0, -1);
        expect(lines).toEqual(lines.map((_, i) => `${node} line ${i}`));
      }
    } finally {
      await q.close();
      await server.destroy();
    }
  });

  it('closeAll does not wait for a database that is away: the appends waiting fail unacked, nothing acked is lost', async () => {
    const server = await privatePostgres();
    const stopDb = await freshDatabase(server.url);
    const q = await openPg(stopDb.url, { applicationName: 'kiln-test-logs-stop', connectTimeoutMs: 500 });
    try {
      await migrate(q);
      await grantLease(q, TOKEN);
      const logs = new PgLogStore({ pg: q, fence: () => TOKEN, retryMs: { first: 20, max: 100 } });
      expect(await logs.append(ref('b-away'), 0, b('acked\n'))).toBe(6);
      await server.stop();
      const waiting = logs.append(ref('b-away'), 6, b('never acked\n'));
      waiting.catch(() => {});
      while (logs.healthy) await new Promise((r) => setTimeout(r, 10));
      await logs.closeAll();
      expect((await caught(waiting)).code).toBe('E_UNAVAILABLE');
      await server.start();
      const reader = new PgLogStore({ pg: q, fence: () => null });
      expect((await readAll(reader, 'b-away')).toString()).toBe('acked\n');
    } finally {
      await q.close();
      await server.destroy();
    }
  });
});
