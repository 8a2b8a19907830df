/**
 * GET /api/v1/cluster and `kiln cluster` on a real embedded coordinator (issue 14): itself as
 * the leader at epoch 0, by its listen URL or its --advertise-url; a read-scoped key may ask,
 * no token may not; the CLI prints leader, epoch and the coordinators' table, or one JSON
 * line. The new settings at start: a PostgreSQL `state` is refused for now ("not wired yet")
 * without its password on stderr, a malformed one names the setting, and lease_ttl and
 * advertise_url are bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_ROUTES, ClusterView, type ClusterViewT } from '../../shared/index.js';
import { freePort, kiln, requireBuilt, spawnKiln, startCoordinator, tempDir, type CoordinatorHandle } from '../helpers/cluster.js';

describe('GET /api/v1/cluster and kiln cluster (embedded coordinator)', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let c: CoordinatorHandle;
  beforeAll(async () => {
    requireBuilt();
    dir = await tempDir('cluster-api');
    c = await startCoordinator({ dataDir: `${dir.path}/data` });
  });
  afterAll(async () => {
    await c?.proc.stop();
    await dir?.cleanup();
  });

  it('answers with itself as the leader at epoch 0', async () => {
    const before = Date.now();
    const r = await c.api<ClusterViewT>(API_ROUTES.cluster.path());
    expect(r.status).toBe(200);
    const view = ClusterView.parse(r.body);
    expect(view).toMatchObject({ leader: c.url, epoch: 0, coordinators: [{ url: c.url, role: 'leader' }] });
    expect(view.coordinators).toHaveLength(1);
    expect(Date.parse(view.coordinators[0]!.last_seen)).toBeGreaterThanOrEqual(before - 1000);
  });

  it('needs a token; a read-scoped key may ask', async () => {
    const anon = await fetch(`${c.url}${API_ROUTES.cluster.path()}`);
    expect(anon.status).toBe(401);
    const key = await c.api<{ secret: string }>(API_ROUTES.keys.path(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scopes: ['read'], name: 'reader' }) });
    expect(key.status).toBe(201);
    const r = await fetch(`${c.url}${API_ROUTES.cluster.path()}`, { headers: { authorization: `Bearer ${key.body.secret}` } });
    expect(r.status).toBe(200);
    expect(((await r.json()) as ClusterViewT).leader).toBe(c.url);
  });

  it('kiln cluster prints the leader, the epoch and the coordinators; --json one line', async () => {
    const text = await kiln(['cluster'], c.cliEnv);
    expect(text.code, text.stderr).toBe(0);
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`leader: ${c.url}`);
    expect(lines[1]).toBe('epoch:  0');
    expect(lines[3]).toMatch(/^COORDINATOR\s+ROLE\s+LAST-SEEN$/);
    expect(lines[4]).toMatch(new RegExp(`^${c.url.replace(/[.]/g, '\\.')}\\s+leader\\s+\\S+ ago$`));
    const json = await kiln(['cluster', '--json'], c.cliEnv);
    expect(json.code, json.stderr).toBe(0);
    const out = json.stdout.trimEnd().split('\n');
    expect(out).toHaveLength(1);
    expect(ClusterView.parse(JSON.parse(out[0]!))).toMatchObject({ leader: c.url, epoch: 0 });
  });
});

describe('the cluster settings at start', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    requireBuilt();
    dir = await tempDir('cluster-settings');
  });
  afterAll(async () => {
    await dir?.cleanup();
  });

  it('--advertise-url names the coordinator in the view', async () => {
    const c = await startCoordinator({ dataDir: `${dir.path}/adv`, args: ['--advertise-url', 'https://kiln-a.example:8443'] });
    try {
      const r = await c.api<ClusterViewT>(API_ROUTES.cluster.path());
      expect(r.body).toMatchObject({ leader: 'https://kiln-a.example:8443', epoch: 0, coordinators: [{ url: 'https://kiln-a.example:8443', role: 'leader' }] });
    } finally {
      await c.proc.stop();
    }
  });

  async function refused(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
    const p = spawnKiln(['coordinator', '--data-dir', `${dir.path}/refused`, '--listen', '127.0.0.1:0', ...args], env);
    const code = await p.exited;
    return { code, stderr: p.stderr };
  }

  it('a PostgreSQL state that does not answer stops the start (a restart may find it), naming it without the password', async () => {
    const port = await freePort(); // nothing listens there
    const r = await refused([], { KILN_STATE: `postgres://kiln:hunter2secret@127.0.0.1:${port}/kiln` });
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBe(78); // not a configuration error: the database may come back
    expect(r.stderr).toContain(`postgres://kiln:***@127.0.0.1:${port}/kiln`);
    expect(r.stderr).not.toContain('hunter2secret');
  });

  it('a malformed state URL names the setting and what is wrong, never the password', async () => {
    const r = await refused(['--state', 'mysql://kiln:hunter2secret@db/kiln']);
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(/config state: .*scheme is 'mysql:'/);
    expect(r.stderr).not.toContain('hunter2secret');
  });

  it('lease_ttl and advertise_url are checked', async () => {
    const ttl = await refused(['--lease-ttl', '1s']);
    expect(ttl.code).toBe(78);
    expect(ttl.stderr).toMatch(/config lease_ttl: must be between 2s and 5m/);
    const adv = await refused(['--advertise-url', 'https://kiln.example/path']);
    expect(adv.code).toBe(78);
    expect(adv.stderr).toMatch(/config advertise_url: .*no path/);
  });
});
