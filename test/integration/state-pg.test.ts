/**
 * The PostgreSQL state backend (issue 14) under the real `StateStore`, on a real PostgreSQL
 * (a fresh database per file; a private server for the restart test): a commit is in the
 * database when it resolves and a reopened store sees every change; archives and pins; a
 * coordinator whose lease was taken over writes nothing (E_NOT_LEADER, no row lands, and
 * it stays refused); snapshots fold the journal and lose nothing; a damaged state (no
 * snapshot, a bad row, a gap) is refused naming what is wrong, never read as empty; a
 * standby's copy catches up with the leader's rows; a database restarted under commits
 * loses nothing acknowledged, the commits waiting meanwhile.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { KilnError } from '../../shared/index.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { PgStateBackend, type FenceToken } from '../../coordinator/state/pg/pg-state-backend.js';
import { StateStore } from '../../coordinator/state/state-store.js';
import { assignedAttempt } from '../../coordinator/state/records.js';
import { buildRecord } from '../helpers/build-record.js';
import { freshDatabase, privatePostgres, type TestDatabase } from '../helpers/postgres.js';

let db: TestDatabase;
let pg: PgClient;
let dir: string;
const TOKEN: FenceToken = { epoch: 1, holder: 'holder-a' };

async function lease(q: PgClient, token: FenceToken): Promise<void> {
  await q.query(
    `INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, $1, $2, 'http://127.0.0.1:1', now() + interval '1 hour')
     ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at`,
    [token.epoch, token.holder],
  );
}

async function open(client: PgClient, opts: { fence?: () => FenceToken | null; minCompactBytes?: number } = {}) {
  const backend = new PgStateBackend({ pg: client, fence: opts.fence ?? (() => TOKEN), minCompactBytes: opts.minCompactBytes ?? 32 * 1024 * 1024, retryMs: { first: 20, max: 200 } });
  const store = await StateStore.open({ dataDir: dir, persist: true, init: false, backend });
  return { store, backend };
}

const plain = (s: StateStore) => JSON.parse(JSON.stringify({ builds: [...s.data.builds], archived: [...s.data.archived], dlq: [...s.data.deadLetter], controls: [...s.data.agentControls] })) as unknown;

async function rows(table: string): Promise<number> {
  const r = await pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
  return r[0]!.n;
}

beforeAll(async () => {
  db = await freshDatabase();
  pg = await openPg(db.url, { applicationName: 'kiln-test-state' });
  await migrate(pg);
  await lease(pg, TOKEN);
  dir = await mkdtemp(join(tmpdir(), 'kiln-state-pg-'));
});

afterAll(async () => {
  await pg?.close();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('PostgreSQL state backend', () => {
  it('opens a new database as an empty state, and a reopened store sees every committed change', async () => {
    const { store } = await open(pg);
    expect(store.created).toBe(true);
    expect(store.kind).toBe('postgres');
    expect(store.path).not.toContain(new URL(db.url).password);
    store.data.builds.set('b-1', buildRecord('b-1', 3));
    store.markNew('b-1');
    await store.commit();
    expect(await rows('kiln_state_journal')).toBe(1);
    const b = store.data.builds.get('b-1')!;
    b.state = 'running';
    b.pinned = false; // a build line always carries it
    b.nodes[1]!.state = 'ready';
    store.markBuild('b-1');
    store.markNodeFields('b-1', 'n1');
    store.data.deadLetter.set('b-0/x', { build_id: 'b-0', node: 'x', attempts: 3, last_error: 'boom', failed_at: 5 } as never);
    store.markDeadLetter('b-0/x');
    await store.commit();
    await store.drain();

    const again = await open(pg);
    expect(again.store.created).toBe(false);
    expect(plain(again.store)).toEqual(plain(store));
    expect(again.backend.lastSeq).toBe(2);
    await again.store.drain();
  });

  it('archives a build to a row, reads it back after a reopen, and pins it', async () => {
    const { store } = await open(pg);
    const b = store.data.builds.get('b-1')!;
    b.state = 'success';
    b.finished_at = 9;
    store.markBuild('b-1');
    await store.archive(b);
    await store.commit();
    expect(store.data.builds.has('b-1')).toBe(false);
    await store.drain();
    const again = await open(pg);
    expect(again.store.data.archived.get('b-1')).toMatchObject({ id: 'b-1', state: 'success' });
    expect((await again.store.getBuild('b-1'))?.nodes).toHaveLength(3);
    await again.store.setPinned('b-1', true);
    await again.store.drain();
    const third = await open(pg);
    expect((await third.store.getBuild('b-1'))?.pinned).toBe(true);
    expect(third.store.data.archived.get('b-1')?.pinned).toBe(true);
    await third.store.drain();
  });

  it('writes nothing once the lease was taken over: the commit fails E_NOT_LEADER, no row lands, and later commits fail too', async () => {
    const { store } = await open(pg);
    const before = await rows('kiln_state_journal');
    await lease(pg, { epoch: 2, holder: 'holder-b' }); // a standby took over
    store.data.builds.set('b-2', buildRecord('b-2', 1));
    store.markNew('b-2');
    await expect(store.commit()).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    store.data.builds.get('b-2')!.state = 'running';
    store.markBuild('b-2');
    await expect(store.commit()).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    expect(await rows('kiln_state_journal')).toBe(before);
    // a store whose lease is gone refuses at once, without a round trip
    const none = await open(pg, { fence: () => null });
    none.store.data.builds.set('b-3', buildRecord('b-3', 1));
    none.store.markNew('b-3');
    await expect(none.store.commit()).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    expect(await rows('kiln_state_journal')).toBe(before);
    await lease(pg, TOKEN);
  });

  it('a commit whose answer was lost is acknowledged when its row is there, and is never reported E_NOT_LEADER when its outcome is unknown', async () => {
    // A client whose answer to the append is lost after the statement ran, and then (optionally) unreachable for a while.
    const lossy = (unreachableAfter: boolean) => {
      let lost = false;
      const q = async <R extends object>(text: string, params?: readonly unknown[]): Promise<R[]> => {
        if (lost && unreachableAfter) throw new KilnError('E_UNAVAILABLE', 'PostgreSQL does not answer (test)');
        const rows = await pg.query<R>(text, params);
        if (text.startsWith('SELECT kiln_state_append') && !lost) {
          lost = true;
          throw new KilnError('E_UNAVAILABLE', 'the connection was lost before the answer (test)');
        }
        return rows;
      };
      return { ...pg, location: pg.location, query: q, tx: pg.tx.bind(pg), close: async () => {} } as PgClient;
    };
    let token: FenceToken | null = TOKEN;
    // the answer lost, the database reachable: the row is there, so the commit is acknowledged (even with the lease gone since)
    const reachable = new PgStateBackend({ pg: lossy(false), fence: () => token, retryMs: { first: 5, max: 20 } });
    const s1 = await StateStore.open({ dataDir: dir, persist: true, init: false, backend: reachable });
    s1.data.builds.set('u-1', buildRecord('u-1', 1));
    s1.markNew('u-1');
    await s1.commit();
    expect(reachable.lastSeq).toBe((await pg.query<{ s: number }>('SELECT max(seq)::int AS s FROM kiln_state_journal'))[0]!.s);
    // the answer lost, the database gone, then the lease lost: the outcome is unknown, so E_UNAVAILABLE (a client must not resend it elsewhere)
    let tries = 0;
    const unknown = new PgStateBackend({
      pg: lossy(true),
      fence: () => {
        tries++;
        return tries > 1 ? null : token;
      },
      retryMs: { first: 5, max: 20 },
    });
    const s2 = await StateStore.open({ dataDir: dir, persist: true, init: false, backend: new PgStateBackend({ pg, fence: () => token }) });
    await s2.drain();
    const s3 = await StateStore.open({ dataDir: dir, persist: true, init: false, backend: unknown });
    s3.data.builds.set('u-2', buildRecord('u-2', 1));
    s3.markNew('u-2');
    await expect(s3.commit()).rejects.toMatchObject({ code: 'E_UNAVAILABLE', message: expect.stringMatching(/may or may not have landed/) });
    token = TOKEN;
  });

  it('journals an attempt whole again in the first row after an in-batch snapshot, then as patches; a reopened store has every change', async () => {
    const { store, backend } = await open(pg, { minCompactBytes: 1 });
    const b = buildRecord('p-1', 1, { fill: 100 });
    store.data.builds.set('p-1', b);
    store.markNew('p-1');
    await store.commit();
    const a = assignedAttempt({ id: 'a-p', number: 1, agent: 'x', session: 's', assigned_at: 1, log_header: '', inputs: {}, spec_digest: null });
    b.nodes[0]!.attempts.push(a);
    store.markAttempt('p-1', 'n0', 0);
    await store.commit();
    const lastRow = async () => {
      const body = (await pg.query<{ body: string }>('SELECT body FROM kiln_state_journal ORDER BY seq DESC LIMIT 1'))[0]!.body;
      return JSON.parse(body.split('\n').find((l) => l.includes('"name":"n0"') && l.includes('"id":"p-1"'))!) as { t: string; a: unknown[] };
    };
    const kinds: string[] = [];
    for (let i = 1; i <= 12; i++) {
      const snapshots = backend.snapshots;
      a.log_bytes = i;
      store.markAttempt('p-1', 'n0', 0);
      // journal bytes, so that the journal outgrows the snapshot now and then
      store.data.builds.set(`p-x${i}`, buildRecord(`p-x${i}`, 4, { fill: 4000 }));
      store.markNew(`p-x${i}`);
      await store.commit();
      // a batch that took a snapshot deletes its own row; else the row's line of p-1/n0
      if (backend.snapshots !== snapshots) kinds.push('snapshot');
      else {
        const row = await lastRow();
        kinds.push(`${row.t}:${row.a.length}`);
      }
    }
    // after each snapshot the attempt is whole (a delta with its tuple), else a patch
    expect(kinds).toContain('snapshot');
    kinds.forEach((k, i) => {
      if (k !== 'snapshot') expect(k, `batch ${i + 1}: ${kinds.join(' ')}`).toBe(kinds[i - 1] === 'snapshot' ? 'delta:1' : 'patch:0');
    });
    const again = await open(pg);
    expect(plain(again.store)).toEqual(plain(store));
    await again.store.drain();
    await store.drain();
  });

  it('folds the journal into snapshots while commits go on, and a reopened store has every change', async () => {
    const { store, backend } = await open(pg, { minCompactBytes: 1 });
    for (let i = 0; i < 20; i++) {
      store.data.builds.set(`c-${i}`, buildRecord(`c-${i}`, 2, { fill: 100 }));
      store.markNew(`c-${i}`);
      await store.commit();
    }
    await store.drain();
    expect(backend.snapshots).toBeGreaterThan(0);
    const snap = await pg.query<{ seq: number }>('SELECT seq FROM kiln_state_snapshot');
    expect(snap).toHaveLength(1);
    const minJournal = await pg.query<{ s: number | null }>('SELECT min(seq)::int AS s FROM kiln_state_journal');
    expect(minJournal[0]!.s === null || minJournal[0]!.s > snap[0]!.seq).toBe(true);
    const again = await open(pg);
    expect(plain(again.store)).toEqual(plain(store));
    await again.store.drain();
  });

  it('a standby opened earlier catches up with the rows the leader wrote since', async () => {
    const leader = await open(pg);
    const standby = await open(pg, { fence: () => null });
    leader.store.data.builds.set('s-1', buildRecord('s-1', 2));
    leader.store.markNew('s-1');
    await leader.store.commit();
    leader.store.data.builds.get('s-1')!.state = 'running';
    leader.store.data.builds.get('s-1')!.pinned = false;
    leader.store.markBuild('s-1');
    await leader.store.commit();
    expect(standby.store.data.builds.has('s-1')).toBe(false);
    expect(await standby.backend.catchUp(standby.store.data)).toBe(2);
    expect(plain(standby.store)).toEqual(plain(leader.store));
    await leader.store.drain();
  });

  it('refuses a damaged state naming what is wrong: a bad journal row, a gap in the seqs, no snapshot', async () => {
    const other = await freshDatabase();
    const q = await openPg(other.url, { applicationName: 'kiln-test-damage' });
    try {
      await migrate(q);
      await lease(q, TOKEN);
      const { store } = await open(q);
      for (const id of ['d-1', 'd-2', 'd-3']) {
        store.data.builds.set(id, buildRecord(id, 1));
        store.markNew(id);
        await store.commit();
      }
      await store.drain();
      await q.query(`UPDATE kiln_state_journal SET body = '{"t":"delta"' || chr(10) WHERE seq = 3`);
      await expect(open(q)).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(/journal row 3 .*corrupt at line 1/) });
      await q.query('DELETE FROM kiln_state_journal WHERE seq = 2');
      await expect(open(q)).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(/goes from seq 1 to 3/) });
      await q.query('DELETE FROM kiln_state_snapshot');
      await expect(open(q)).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(/no snapshot/) });
      expect(await q.query('SELECT seq FROM kiln_state_journal ORDER BY seq')).toEqual([{ seq: 1 }, { seq: 3 }]); // left as it was
    } finally {
      await q.close();
      await other.drop();
    }
  });
});

describe('PostgreSQL state backend: the database restarted under commits', () => {
  it('keeps every acknowledged commit; commits wait while the database is away and land when it is back', async () => {
    const server = await privatePostgres();
    const restartDb = await freshDatabase(server.url);
    const q = await openPg(restartDb.url, { applicationName: 'kiln-test-restart', connectTimeoutMs: 1_000 });
    try {
      await migrate(q);
      await lease(q, TOKEN);
      const health: boolean[] = [];
      const backend = new PgStateBackend({ pg: q, fence: () => TOKEN, retryMs: { first: 20, max: 200 }, onHealth: (h) => health.push(h) });
      const store = await StateStore.open({ dataDir: dir, persist: true, init: false, backend });
      const acked: string[] = [];
      let stop = false;
      const writer = (async () => {
        for (let i = 0; !stop; i++) {
          const id = `r-${i}`;
          store.data.builds.set(id, buildRecord(id, 1));
          store.markNew(id);
          await store.commit();
          acked.push(id);
        }
      })();
      while (acked.length < 20) await new Promise((r) => setTimeout(r, 5));
      await server.restart();
      const after = acked.length;
      while (acked.length < after + 20) await new Promise((r) => setTimeout(r, 5));
      stop = true;
      await writer;
      await store.drain();
      expect(health).toEqual([false, true]);
      const again = await open(q);
      for (const id of acked) expect(again.store.data.builds.has(id)).toBe(true);
    } finally {
      await q.close();
      await server.destroy();
    }
  });
});
