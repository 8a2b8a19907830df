/**
 * PostgreSQL restarted under load (issue 14), real processes: a coordinator on a PostgreSQL
 * state of its own server, a no-op agent, builds submitted one after another. The server is
 * restarted (`pg_ctl restart -m fast`: every connection cut) while builds run: the
 * coordinator says it is not ready while the database is away, stays the leader (the outage
 * is shorter than its lease), loses no acknowledged submission, result or log line, and every
 * build ends in success.
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterViewT } from '../../shared/index.js';
import { nodeLog, spawnKiln, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type Proc } from '../helpers/cluster.js';
import { freshDatabase, privatePostgres, type PrivatePostgres, type TestDatabase } from '../helpers/postgres.js';

describe('PostgreSQL restarted under load', () => {
  const procs: Proc[] = [];
  const dirs: Array<() => Promise<void>> = [];
  let server: PrivatePostgres;
  let db: TestDatabase;
  beforeAll(async () => {
    server = await privatePostgres();
    db = await freshDatabase(server.url);
  });
  afterEach(async () => {
    for (const p of procs.splice(0).reverse()) await p.stop();
  });
  afterAll(async () => {
    await db?.drop().catch(() => {});
    await server?.destroy();
    for (const d of dirs) await d();
  });

  it('waits for the database, says it is not ready meanwhile, and loses nothing acknowledged', async () => {
    const d = await tempDir('pg-restart');
    dirs.push(d.cleanup);
    const c = await startCoordinator({ dataDir: join(d.path, 'data'), args: ['--state', db.url, '--heartbeat-interval', '300ms', '--lost-after', '5s'] });
    procs.push(c.proc);
    const epoch = (await c.api<ClusterViewT>('/api/v1/cluster')).body.epoch;
    const agent = spawnKiln(['agent', '--coordinator', c.url, '--token-file', c.agentTokenFile, '--name', 'steady', '--work-dir', join(d.path, 'agent'), '--executor', 'noop', '--max-jobs', '4'], { KILN_NOOP_LOG: '20/20' });
    procs.push(agent);

    // builds submitted back to back the whole time; each id is an acknowledged submission
    const acked: string[] = [];
    let stop = false;
    const submitter = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          acked.push(await submitSpec(c, { name: `load-${i}`, nodes: { a: { dockerfile_inline: 'FROM scratch' }, b: { dockerfile_inline: 'FROM scratch', needs: ['a'] } } }));
        } catch {
          await new Promise((r) => setTimeout(r, 100)); // refused while the database is away: not acknowledged
        }
      }
    })();
    // readiness, sampled the whole time
    const ready: number[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        ready.push((await fetch(`${c.url}/readyz`).catch(() => null))?.status ?? 0);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await waitFor('a few builds acknowledged', () => (acked.length >= 3 ? true : undefined));
    await server.restart();
    const after = acked.length;
    await waitFor('more builds acknowledged after the restart', () => (acked.length >= after + 3 ? true : undefined), 60_000);
    stop = true;
    await submitter;
    probing = false;
    await prober;

    expect(ready).toContain(503);
    expect(ready.at(-1)).toBe(200);
    const view = (await c.api<ClusterViewT>('/api/v1/cluster')).body;
    expect(view).toMatchObject({ leader: c.url, epoch });
    for (const id of acked) {
      const b = await waitForBuild(c, id);
      expect(b.state, id).toBe('success');
      for (const n of b.nodes) {
        expect(n.attempts.length, `${id}/${n.name}`).toBeGreaterThanOrEqual(1);
        const numbers = [...(await nodeLog(c, id, n.name)).matchAll(/ line (\d+)\/20 /g)].map((m) => Number(m[1]));
        const last = b.nodes.find((x) => x.name === n.name)!.attempts.length;
        // the attempt that succeeded wrote 20 lines; all of them are in its log
        if (last === 1) expect(numbers, `${id}/${n.name}`).toEqual(Array.from({ length: 20 }, (_, k) => k + 1));
      }
    }
  });
});
