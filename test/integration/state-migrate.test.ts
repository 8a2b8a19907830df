/**
 * `kiln state migrate --from DATA_DIR --to postgres://…` end to end (issue 14), real
 * processes and a real PostgreSQL: an embedded coordinator runs (tiny, real) builds with an
 * agent that enrolled (a per-agent credential), finishes and archives them (reuse records
 * made), holds an API key and a secret; it is stopped; the command (URL from KILN_STATE)
 * moves everything and says what it moved; a coordinator started on the database
 * (`--state`) serves all of it: the builds and their nodes, the key authenticates, the
 * agent's credential connects and builds, the secret is there, an unchanged node is reused,
 * the legacy API token still works. Then the README's backup and restore: a `pg_dump` while
 * it runs, `pg_restore` into a new database, and a coordinator there serves the same.
 * Refusals: a data dir whose coordinator runs (locked), a database a coordinator leads, a
 * database that is not empty, a malformed URL, no --from; nothing lands on a refused run.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { API_ROUTES, apiPath } from '../../shared/index.js';
import { DOCKER_HOST, getBuild, kiln, nodeLog, requireBuilt, spawnKiln, startCoordinator, submitSpec, tempDir, waitFor, waitForAgent, waitForBuild, type BuildBody, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';
import { freshDatabase, type TestDatabase } from '../helpers/postgres.js';

// Real (tiny) BuildKit builds: a successful node leaves a reuse record, which must move too.
const RUN = `m${Date.now().toString(36)}`;
const SPEC = { nodes: { base: { dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${RUN}-base\n` }, app: { dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${RUN}-app\n`, needs: ['base'] } } };
const PG_BIN = '/usr/lib/postgresql/15/bin';
const run = promisify(execFile);
const SECOND = { nodes: { other: { dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${RUN}-second\n` } } };

describe('kiln state migrate', () => {
  const procs: Proc[] = [];
  let dir: { path: string; cleanup: () => Promise<void> };
  let db: TestDatabase;
  let pg: PgClient;
  let embedded: CoordinatorHandle;
  const seen: { builds: BuildBody[]; keySecret: string; credentialFile: string; apiToken: string; logs: Map<string, string> } = { builds: [], keySecret: '', credentialFile: '', apiToken: '', logs: new Map() };

  const agent = (c: CoordinatorHandle, tokenFile: string, name: string): Proc => {
    const p = spawnKiln(['agent', '--coordinator', c.url, '--token-file', tokenFile, '--name', name, '--work-dir', join(dir.path, `work-${name}`), '--docker-host', DOCKER_HOST]);
    procs.push(p);
    return p;
  };
  const count = async (table: string) => (await pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`))[0]!.n;

  beforeAll(async () => {
    requireBuilt();
    dir = await tempDir('state-migrate');
    db = await freshDatabase();
    pg = await openPg(db.url, { applicationName: 'kiln-test-migrate', max: 2 });
    embedded = await startCoordinator({ dataDir: join(dir.path, 'data') });
    procs.push(embedded.proc);
    seen.apiToken = embedded.apiToken;
    const post = (path: string, body: unknown) => embedded.api<Record<string, string>>(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    // an enrolled agent: its own credential
    const tok = await post(API_ROUTES.tokens.path(), { kind: 'agent', name: 'migrated-agent', expires_in_s: 3600, uses: 1 });
    expect(tok.status, JSON.stringify(tok.body)).toBe(201);
    const enrol = await fetch(`${embedded.url}${apiPath.agentEnrol()}`, { method: 'POST', headers: { authorization: `Bearer ${tok.body.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'migrated-agent' }) });
    expect(enrol.status).toBe(200);
    seen.credentialFile = join(dir.path, 'agent-credential');
    await writeFile(seen.credentialFile, `${((await enrol.json()) as { credential: string }).credential}\n`, { mode: 0o600 });
    const a = agent(embedded, seen.credentialFile, 'migrated-agent');
    await waitForAgent(embedded, 'migrated-agent', 'connected', a);
    for (const spec of [SPEC, SECOND]) {
      const id = await submitSpec(embedded, spec);
      seen.builds.push(await waitForBuild(embedded, id));
    }
    expect(seen.builds.map((b) => b.state)).toEqual(['success', 'success']);
    for (const b of seen.builds) {
      for (const n of b.nodes) {
        const log = await nodeLog(embedded, b.id, n.name);
        expect(log.length, `${b.id}/${n.name}`).toBeGreaterThan(0);
        seen.logs.set(`${b.id}/${n.name}`, log);
      }
    }
    const key = await post(API_ROUTES.keys.path(), { scopes: ['read'], name: 'reader' });
    expect(key.status).toBe(201);
    seen.keySecret = key.body.secret!;
    const secret = await embedded.api(apiPath.secret('npm_token'), { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: 's3cret-value' });
    expect(secret.status).toBeLessThan(300);
    await a.stop();
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await pg?.close();
    await db?.drop();
    await dir?.cleanup();
  });

  it('refuses the data dir of a running coordinator, and lands nothing', async () => {
    const r = await kiln(['state', 'migrate', '--from', embedded.dataDir, '--to', db.url]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/another coordinator is using it|locked|is held/i);
    expect(r.stderr).not.toContain(new URL(db.url).password);
    expect(await count('kiln_document')).toBe(0);
    expect(await count('kiln_archived_build')).toBe(0);
  });

  it('refuses a malformed URL and a missing data dir, naming them', async () => {
    const bad = await kiln(['state', 'migrate', '--from', embedded.dataDir, '--to', 'mysql://x@y/z']);
    expect(bad.code).toBe(78);
    expect(bad.stderr).toMatch(/postgres/);
    const none = await kiln(['state', 'migrate', '--from', join(dir.path, 'nope'), '--to', db.url]);
    expect(none.code).toBe(78);
    expect(none.stderr).toContain(join(dir.path, 'nope'));
    const usage = await kiln(['state', 'migrate', '--to', db.url]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--from DATA_DIR/);
  });

  it('refuses a database a coordinator leads, and lands nothing', async () => {
    const led = await freshDatabase();
    const q = await openPg(led.url, { applicationName: 'kiln-test-migrate-led', max: 1 });
    try {
      await migrate(q);
      await q.query("INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, 1, 'someone', 'http://10.0.0.9:8080', now() + interval '1 hour')");
      await embedded.proc.stop();
      const r = await kiln(['state', 'migrate', '--from', embedded.dataDir], { KILN_STATE: led.url });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/a coordinator \(http:\/\/10\.0\.0\.9:8080\) holds the lease/);
      expect((await q.query<{ n: number }>('SELECT count(*)::int AS n FROM kiln_document'))[0]!.n).toBe(0);
    } finally {
      await q.close();
      await led.drop();
    }
  });

  it('moves everything, a coordinator on the database serves it, and a pg_dump restored elsewhere serves it too', async () => {
    await embedded.proc.stop();
    // the URL from KILN_STATE (no password on the command line)
    const r = await kiln(['state', 'migrate', '--from', embedded.dataDir, '--json'], { KILN_STATE: db.url });
    expect(r.code, r.stderr).toBe(0);
    const moved = JSON.parse(r.stdout.trim()) as Record<string, number | string | null>;
    expect(moved).toMatchObject({ builds: 0, archived: 2, deadLetters: 0, apiKeys: 1, agentCredentials: 1, enrolTokens: 1, secrets: 1, tokens: 2 });
    expect(moved.reuseRecords).toBe(3);
    expect(moved.logAttempts).toBe(seen.logs.size);
    expect(moved.logBytes).toBeGreaterThan(0);
    expect(moved.secretsKeyFile).toBe(join(embedded.dataDir, 'keys', 'secrets.key'));
    expect(r.stdout).not.toContain(new URL(db.url).password);
    expect(await count('kiln_archived_build')).toBe(2);

    // A second run: the database is no longer empty.
    const again = await kiln(['state', 'migrate', '--from', embedded.dataDir, '--to', db.url]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already holds a kiln state/);

    // A coordinator of its own data dir on the database, given the secrets key file.
    const newDir = join(dir.path, 'pg-data');
    await mkdir(newDir, { recursive: true });
    const c = await startCoordinator({ dataDir: newDir, args: ['--state', db.url, '--lease-ttl', '3s'], env: { KILN_SECRETS_KEY_FILE: join(embedded.dataDir, 'keys', 'secrets.key') } });
    procs.push(c.proc);
    // the generated legacy API token moved: the local copy is the embedded one
    expect(c.apiToken).toBe(seen.apiToken);
    await waitFor('the coordinator to lead', async () => (await fetch(`${c.url}/readyz`)).status === 200);
    for (const b of seen.builds) {
      const got = await getBuild(c, b.id);
      expect(got.state).toBe('success');
      expect(got.nodes.map((n) => [n.name, n.state])).toEqual(b.nodes.map((n) => [n.name, n.state]));
      // its logs moved too: the same bytes through the coordinator on the database
      for (const n of got.nodes) expect(await nodeLog(c, b.id, n.name), `${b.id}/${n.name}`).toBe(seen.logs.get(`${b.id}/${n.name}`));
    }
    // the key authenticates (read scope), and only it
    const asKey = await fetch(`${c.url}${API_ROUTES.builds.path()}`, { headers: { authorization: `Bearer ${seen.keySecret}` } });
    expect(asKey.status).toBe(200);
    expect((await fetch(`${c.url}${API_ROUTES.builds.path()}`, { headers: { authorization: 'Bearer kiln_key_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } })).status).toBe(401);
    // the secret is listed with its version
    const secrets = await c.api<{ items: Array<{ name: string; version: number }> }>(API_ROUTES.secrets.path());
    expect(secrets.status).toBe(200);
    expect(secrets.body.items.map((s) => s.name)).toEqual(['npm_token']);
    // the enrolled agent's credential connects and builds; an unchanged node is reused
    const a = agent(c, seen.credentialFile, 'migrated-agent');
    await waitForAgent(c, 'migrated-agent', 'connected', a);
    const id = await submitSpec(c, SPEC);
    const b = await waitForBuild(c, id);
    expect(b.state).toBe('success');
    expect(b.nodes.every((n) => (n as { reused_from?: unknown }).reused_from != null), JSON.stringify(b.nodes)).toBe(true);
    const fresh = await submitSpec(c, { nodes: { fresh: { dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${RUN}-fresh\n` } } });
    const f = await waitForBuild(c, fresh);
    expect(f.state).toBe('success');
    expect(f.nodes[0]!.agent).toBe('migrated-agent');
    seen.builds.push(f);

    // Backup while the coordinator runs, restore into a new database, a coordinator on it.
    const dump = join(dir.path, 'kiln.dump');
    await run(join(PG_BIN, 'pg_dump'), ['--format=custom', '--exclude-table-data=kiln_coordinators', '--file', dump, db.url]);
    await a.stop();
    await c.proc.stop();
    const restored = await freshDatabase();
    try {
      await run(join(PG_BIN, 'pg_restore'), ['--no-owner', '--dbname', restored.url, dump]);
      const r2 = await startCoordinator({ dataDir: join(dir.path, 'restored-data'), args: ['--state', restored.url, '--lease-ttl', '3s'], env: { KILN_SECRETS_KEY_FILE: join(embedded.dataDir, 'keys', 'secrets.key') } });
      procs.push(r2.proc);
      expect(r2.apiToken).toBe(seen.apiToken);
      await waitFor('the restored coordinator to lead', async () => (await fetch(`${r2.url}/readyz`)).status === 200);
      for (const b of seen.builds) expect((await getBuild(r2, b.id)).state).toBe('success');
      expect((await fetch(`${r2.url}${API_ROUTES.builds.path()}`, { headers: { authorization: `Bearer ${seen.keySecret}` } })).status).toBe(200);
      const s2 = await r2.api<{ items: Array<{ name: string }> }>(API_ROUTES.secrets.path());
      expect(s2.body.items.map((x) => x.name)).toEqual(['npm_token']);
      await r2.proc.stop();
    } finally {
      await restored.drop();
    }
  });
});
