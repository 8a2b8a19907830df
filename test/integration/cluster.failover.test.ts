/**
 * Two coordinators on one PostgreSQL state (issue 14), real processes, a real database:
 * - kill -9 of the leader during a busy DAG: the standby leads within the lease (+ a poll),
 *   the agent (given both URLs) reconnects to it and its running attempts are adopted, not
 *   re-run; a build acknowledged just before the kill is there and runs; no node finishes
 *   twice (one attempt each, every node success); every node's log, written through either
 *   leader, reads whole through the new one (logs are in the database), and `kiln logs -f`
 *   given both URLs moves to the new leader and prints every line exactly once.
 * - SIGSTOP of the leader past its lease, then SIGCONT: the standby leads at the next epoch;
 *   the old leader finds it is no longer the leader and steps down, and nothing it tried to
 *   write afterwards landed (no journal row of its epoch after the takeover).
 * - a standby answers writes with 503 E_NOT_LEADER naming the leader, reads of builds from its
 *   own copy of the state (also while the leader does not answer) and other reads through the
 *   leader; GET /api/v1/cluster on both names the same leader and epoch.
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { coerceError, type ClusterViewT } from '../../shared/index.js';
import { getBuild, nodeLog, spawnKiln, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';
import { freshDatabase, type TestDatabase } from '../helpers/postgres.js';
import { startS3, type TestS3 } from '../helpers/s3.js';

const TTL = '3s';
const FAST = ['--heartbeat-interval', '300ms', '--lost-after', '3s', '--lease-ttl', TTL];

describe('two coordinators on one PostgreSQL state', () => {
  const procs: Proc[] = [];
  const dirs: Array<() => Promise<void>> = [];
  let db: TestDatabase;
  let pg: PgClient;
  let s3: TestS3;
  /** The CAS every coordinator of the state shares. */
  let casEnv: Record<string, string>;
  beforeAll(async () => {
    db = await freshDatabase();
    pg = await openPg(db.url, { applicationName: 'kiln-test-failover', max: 2 });
    s3 = await startS3();
    casEnv = { KILN_CAS_BACKEND: 's3', KILN_S3_ENDPOINT: s3.endpoint, KILN_S3_BUCKET: 'kiln-failover', KILN_S3_ACCESS_KEY: s3.accessKey, KILN_S3_SECRET_KEY: s3.secretKey };
  });
  afterEach(async () => {
    for (const p of procs.splice(0).reverse()) await p.stop();
  });
  afterAll(async () => {
    await pg?.close();
    await db?.drop();
    await s3?.stop();
    for (const d of dirs) await d();
  });

  /** Starts a coordinator on the shared state; the second and later share the first one's tokens. */
  const coordinator = async (prefix: string, first?: CoordinatorHandle, env: Record<string, string> = casEnv): Promise<CoordinatorHandle> => {
    const d = await tempDir(prefix);
    dirs.push(d.cleanup);
    const dataDir = join(d.path, 'data');
    if (first) {
      await mkdir(join(dataDir, 'tokens'), { recursive: true, mode: 0o700 });
      await copyFile(first.apiTokenFile, join(dataDir, 'tokens', 'api'));
      await copyFile(first.agentTokenFile, join(dataDir, 'tokens', 'agent'));
    }
    const c = await startCoordinator({ dataDir, args: [...FAST, '--state', db.url], env });
    procs.push(c.proc);
    return c;
  };

  const cluster = async (c: CoordinatorHandle): Promise<ClusterViewT> => {
    const r = await c.api<ClusterViewT>('/api/v1/cluster');
    expect(r.status).toBe(200);
    return r.body;
  };

  const agent = (name: string, cs: CoordinatorHandle[], env: Record<string, string>): Proc => {
    const p = spawnKiln(['agent', '--coordinator', cs.map((c) => c.url).join(','), '--token-file', cs[0]!.agentTokenFile, '--name', name, '--work-dir', join(cs[0]!.dataDir, '..', name), '--executor', 'noop', '--max-jobs', '4'], env);
    procs.push(p);
    return p;
  };

  it('a standby sends writes to the leader, and both name the same leader', async () => {
    const a = await coordinator('f-pg-a');
    const b = await coordinator('f-pg-b', a);
    const va = await cluster(a);
    const vb = await cluster(b);
    expect(va.leader).toBe(a.url);
    expect(vb).toMatchObject({ leader: a.url, epoch: va.epoch });
    expect(vb.coordinators.map((x) => [x.url, x.role]).sort()).toEqual([
      [a.url, 'leader'],
      [b.url, 'standby'],
    ].sort());
    const refused = await b.api<{ code: string; leader: string | null }>('/api/v1/builds', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ nodes: { x: { dockerfile_inline: 'FROM scratch' } } }) });
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ code: 'E_NOT_LEADER', leader: a.url });
    expect((await fetch(`${b.url}/readyz`)).status).toBe(503);
    expect((await fetch(`${a.url}/readyz`)).status).toBe(200);
    // reads of builds through the standby: from its own copy of the state (open when it started), a moment behind the leader
    expect(b.proc.stderr).toContain('a copy of the state is open for reads');
    const id = await submitSpec(a, { name: 'read-me', nodes: { x: { dockerfile_inline: 'FROM scratch' } } });
    const viaB = await waitFor('the standby to have the build', async () => {
      const r = await b.api<{ id: string; name: string }>(`/api/v1/builds/${id}`);
      return r.status === 200 ? r : undefined;
    }, 10_000, 50);
    expect(viaB.body).toMatchObject({ id, name: 'read-me' });
    expect((await fetch(`${b.url}/api/v1/builds/${id}`)).status).toBe(401); // authenticated as on the leader
    // ...answered while the leader does not answer at all (paused, shorter than its lease)
    process.kill(a.proc.child.pid!, 'SIGSTOP');
    try {
      // (a forwarded read could not be answered: the leader is stopped, and the standby does not lead yet)
      const list = await b.api<{ items: Array<{ id: string }> }>('/api/v1/builds');
      expect(list.status).toBe(200);
      expect(list.body.items.map((x) => x.id)).toContain(id);
    } finally {
      process.kill(a.proc.child.pid!, 'SIGCONT');
    }
    // other reads are forwarded to the leader (the fleet: only the leader has agents)
    expect((await b.api('/api/v1/agents')).status).toBe(200);
    // a read already forwarded once is not forwarded again (no loops between stale views)
    const twice = await b.api<{ code: string }>('/api/v1/agents', { headers: { 'x-kiln-forwarded-by': 'http://elsewhere:1' } });
    expect(twice).toMatchObject({ status: 503, body: { code: 'E_NOT_LEADER' } });
  });

  it('refuses a second coordinator whose CAS is on local disk (it could not serve the artifacts after a takeover)', async () => {
    const a = await coordinator('f-pg-a');
    const d = await tempDir('f-pg-local');
    dirs.push(d.cleanup);
    const p = spawnKiln(['coordinator', '--data-dir', join(d.path, 'data'), '--listen', '127.0.0.1:0', '--state', db.url, ...FAST]);
    procs.push(p);
    expect(await p.exited).toBe(78);
    expect(p.stderr).toMatch(/cas.backend local: 1 other coordinator\(s\) share this state/);
    expect((await cluster(a)).coordinators).toHaveLength(1);
  });

  it('kill -9 of the leader mid-DAG: the standby leads within the lease, adopts the running attempts, loses no acknowledged build, runs nothing twice', async () => {
    const a = await coordinator('f-pg-a');
    const b = await coordinator('f-pg-b', a);
    const epoch0 = (await cluster(a)).epoch;
    // each node writes 30 lines at 15 lines/s: about 2 s of running
    agent('steady', [a, b], { KILN_NOOP_LOG: '30/15' });
    const nodes: Record<string, object> = {};
    for (let i = 0; i < 6; i++) nodes[`n${i}`] = { dockerfile_inline: 'FROM scratch', ...(i >= 3 ? { needs: [`n${i - 3}`] } : {}) };
    const id = await submitSpec(a, { name: 'busy', nodes });
    await waitFor('three nodes running', async () => (await getBuild(a, id)).nodes.filter((n) => n.state === 'running').length === 3 ? true : undefined);
    const late = await submitSpec(a, { name: 'late', nodes: { only: { dockerfile_inline: 'FROM scratch' } } });
    // a user follows the whole build's log through both coordinators' URLs
    const follower = spawnKiln(['logs', '-f', id, '--coordinator', `${a.url},${b.url}`, '--token-file', a.apiTokenFile]);
    procs.push(follower);
    await waitFor('the follower to print a line', () => (/ line \d+\/30 /.test(follower.stdout) ? true : undefined));
    await a.proc.kill9();
    // (how soon: takeover.js measures it, 8.8 s with the default lease; here the lease is 3 s)
    await waitFor('the standby to lead at the next epoch', async () => {
      const v = await cluster(b).catch(() => null);
      return v && v.leader === b.url && v.epoch === epoch0 + 1 ? true : undefined;
    }, 60_000, 50);
    const done = await waitForBuild(b, id);
    expect(done.state).toBe('success');
    for (const n of done.nodes) {
      expect(n.state, n.name).toBe('success');
      expect(n.attempts, `${n.name}: adopted, not re-run`).toHaveLength(1);
      // every log line acknowledged to the agent, on either leader, is there once and in order (logs are in the database)
      const log = await nodeLog(b, id, n.name);
      const numbers = [...log.matchAll(/ line (\d+)\/30 /g)].map((m) => Number(m[1]));
      expect(numbers, `${n.name}'s log through the new leader`).toEqual(Array.from({ length: 30 }, (_, k) => k + 1));
    }
    // `kiln logs -f` moved to the new leader and printed every line of every node exactly once
    expect(await follower.exited).toBe(0);
    for (const n of done.nodes) {
      // a whole build's log: `n3 | noop … line 7/30 …` (line 15 is the noop executor's ERROR marker)
      const mine = follower.stdout.split('\n').filter((l) => l.startsWith(`${n.name} | `) && / line \d+\/30 /.test(l));
      const numbers = mine.map((l) => Number(/ line (\d+)\/30 /.exec(l)![1]));
      expect(numbers, `${n.name} in kiln logs -f`).toEqual(Array.from({ length: 30 }, (_, k) => k + 1));
    }
    const lateDone = await waitForBuild(b, late);
    expect(lateDone.state).toBe('success');
    // It may have been assigned in the instant before the kill and never reached the agent: then
    // its first attempt is requeued (never started); it never ran twice.
    const atts = lateDone.nodes[0]!.attempts as unknown as Array<{ state: string; started_at: number | null }>;
    expect(atts.filter((x) => x.state === 'success'), JSON.stringify(atts)).toHaveLength(1);
    expect(atts.filter((x) => x.started_at !== null), JSON.stringify(atts)).toHaveLength(1);
  });

  it('SIGSTOP of the leader past its lease, then SIGCONT: it steps down and nothing it wrote after the takeover landed', async () => {
    const a = await coordinator('f-pg-a');
    const b = await coordinator('f-pg-b', a);
    const epoch0 = (await cluster(a)).epoch;
    agent('steady', [a, b], { KILN_NOOP_LOG: '40/20' });
    const id = await submitSpec(a, { name: 'paused', nodes: { p0: { dockerfile_inline: 'FROM scratch' }, p1: { dockerfile_inline: 'FROM scratch', needs: ['p0'] } } });
    await waitFor('p0 running', async () => (await getBuild(a, id)).nodes.find((n) => n.name === 'p0')?.state === 'running' || undefined);
    process.kill(a.proc.child.pid!, 'SIGSTOP');
    let view: ClusterViewT | null = null;
    try {
      // At a later epoch: a standby whose first try to lead failed (it gives the lease up and
      // tries again) leads at the one after.
      await waitFor('the standby to lead', async () => {
        view = await cluster(b).catch(() => null);
        return view && view.leader === b.url && view.epoch > epoch0 ? true : undefined;
      }, 30_000, 50);
    } catch (err) {
      // What the standby said meanwhile, to tell a slow machine from a takeover that cannot read the state.
      throw new Error(`${coerceError(err).message}; last cluster view ${JSON.stringify(view)}; the standby's log:\n${b.proc.stderr.slice(-4000)}`);
    } finally {
      process.kill(a.proc.child.pid!, 'SIGCONT');
    }
    const takeover = (await pg.query<{ t: Date }>('SELECT now() AS t'))[0]!.t;
    await waitFor('the old leader to step down', () => (a.proc.stderr.includes('no longer the leader') ? true : undefined), 30_000);
    expect((await cluster(a)).leader).toBe(b.url);
    const done = await waitForBuild(b, id);
    expect(done.state).toBe('success');
    const late = await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM kiln_state_journal WHERE epoch = $1 AND written_at > $2', [epoch0, takeover]);
    expect(late[0]!.n).toBe(0);
    expect((await fetch(`${a.url}/readyz`)).status).toBe(503);
  });
});
