/**
 * Two coordinators on one PostgreSQL state share the documents (issue 14), real processes and
 * a real database: the second coordinator, with a data dir of its own and no token copied,
 * accepts the same generated tokens; an API key made on the leader authenticates on the
 * standby within a moment, and once revoked no longer does; after kill -9 of the leader the
 * new leader has the key, the enrolled agent's credential (the agent, given both URLs, builds
 * there) and the secret (both coordinators given the same key file).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_ROUTES, apiPath, type ClusterViewT } from '../../shared/index.js';
import { requireBuilt, spawnKiln, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';
import { freshDatabase, type TestDatabase } from '../helpers/postgres.js';
import { startS3, type TestS3 } from '../helpers/s3.js';

const FAST = ['--heartbeat-interval', '300ms', '--lost-after', '3s', '--lease-ttl', '3s'];

describe('documents shared by the coordinators of one PostgreSQL state', () => {
  const procs: Proc[] = [];
  let dir: { path: string; cleanup: () => Promise<void> };
  let db: TestDatabase;
  let s3: TestS3;
  let env: Record<string, string>;

  const coordinator = async (name: string): Promise<CoordinatorHandle> => {
    const c = await startCoordinator({ dataDir: join(dir.path, name), args: [...FAST, '--state', db.url], env });
    procs.push(c.proc);
    return c;
  };
  const status = async (c: CoordinatorHandle, bearer: string) => (await fetch(`${c.url}${API_ROUTES.cluster.path()}`, { headers: { authorization: `Bearer ${bearer}` } })).status;

  beforeAll(async () => {
    requireBuilt();
    dir = await tempDir('cluster-docs');
    db = await freshDatabase();
    s3 = await startS3();
    const keyFile = join(dir.path, 'secrets.key');
    await writeFile(keyFile, `${Buffer.alloc(32, 9).toString('base64')}\n`, { mode: 0o600 });
    env = {
      KILN_CAS_BACKEND: 's3',
      KILN_S3_ENDPOINT: s3.endpoint,
      KILN_S3_BUCKET: 'kiln-docs',
      KILN_S3_ACCESS_KEY: s3.accessKey,
      KILN_S3_SECRET_KEY: s3.secretKey,
      KILN_SECRETS_KEY_FILE: keyFile,
    };
  });
  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await db?.drop();
    await s3?.stop();
    await dir?.cleanup();
  });

  it('same tokens, keys followed by the standby, and a new leader has keys, credentials and secrets', async () => {
    const a = await coordinator('a');
    const b = await coordinator('b');
    const view = (await a.api<ClusterViewT>(API_ROUTES.cluster.path())).body;
    expect(view.leader).toBe(a.url);
    // no token copied: the standby accepts the leader's generated tokens (its local copy is the same)
    expect(b.apiToken).toBe(a.apiToken);
    expect(await status(b, a.apiToken)).toBe(200);

    const post = (path: string, body: unknown) => a.api<Record<string, string>>(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const key = await post(API_ROUTES.keys.path(), { scopes: ['read'], name: 'shared-reader' });
    expect(key.status).toBe(201);
    const secret = key.body.secret!;
    await waitFor('the standby to accept the new key', async () => (await status(b, secret)) === 200, 10_000);
    const other = await post(API_ROUTES.keys.path(), { scopes: ['read'], name: 'revoked-soon' });
    await waitFor('the standby to accept the second key', async () => (await status(b, other.body.secret!)) === 200, 10_000);
    expect((await a.api(apiPath.key('revoked-soon'), { method: 'DELETE' })).status).toBeLessThan(300);
    await waitFor('the standby to refuse the revoked key', async () => (await status(b, other.body.secret!)) === 401, 10_000);

    // an enrolled agent, a secret
    const tok = await post(API_ROUTES.tokens.path(), { kind: 'agent', name: 'docs-agent', expires_in_s: 3600, uses: 1 });
    const enrol = await fetch(`${a.url}${apiPath.agentEnrol()}`, { method: 'POST', headers: { authorization: `Bearer ${tok.body.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'docs-agent' }) });
    expect(enrol.status).toBe(200);
    const credFile = join(dir.path, 'docs-agent.credential');
    await writeFile(credFile, `${((await enrol.json()) as { credential: string }).credential}\n`, { mode: 0o600 });
    expect((await a.api(apiPath.secret('deploy_key'), { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: 'v1' })).status).toBeLessThan(300);

    await a.proc.kill9();
    await waitFor('the standby to lead', async () => ((await b.api<ClusterViewT>(API_ROUTES.cluster.path()).catch(() => null))?.body.leader === b.url ? true : undefined), 30_000, 100);
    await waitFor('the new leader to be ready', async () => (await fetch(`${b.url}/readyz`)).status === 200, 30_000);
    expect(await status(b, secret)).toBe(200);
    expect(await status(b, other.body.secret!)).toBe(401);
    const secrets = await b.api<{ items: Array<{ name: string }> }>(API_ROUTES.secrets.path());
    expect(secrets.body.items.map((s) => s.name)).toEqual(['deploy_key']);
    const agent = spawnKiln(['agent', '--coordinator', `${a.url},${b.url}`, '--token-file', credFile, '--name', 'docs-agent', '--work-dir', join(dir.path, 'work'), '--executor', 'noop'], {});
    procs.push(agent);
    const id = await submitSpec(b, { nodes: { n: { dockerfile_inline: 'FROM scratch' } } });
    const done = await waitForBuild(b, id, undefined, 60_000);
    expect(done.state).toBe('success');
    expect(done.nodes[0]!.agent).toBe('docs-agent');
  });
});
