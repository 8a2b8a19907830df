/**
 * The document store (issue 14) on both implementations, and the small stores over it on a
 * real PostgreSQL (a fresh database for this file): files are where and how the stores kept
 * them (mode 0600); rows are written only with the lease (a coordinator without it, or whose
 * lease moved on, lands nothing: E_NOT_LEADER); `create` agrees on one body; a standby's API
 * keys and agent credentials follow the leader's writes (`reload`); a corrupt document is an
 * error naming it; secrets need the given key on a shared state; the reuse records and the
 * generated tokens are the same for every coordinator of the database.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentCredentialStore } from '../../coordinator/access/agent-credentials.js';
import { ApiKeyStore } from '../../coordinator/access/api-keys.js';
import { ReuseIndex, type ReuseRecord } from '../../coordinator/builds/reuse-index.js';
import { SecretStore } from '../../coordinator/secrets/secret-store.js';
import { loadTokens } from '../../coordinator/state/data-dir.js';
import { FileDocuments, checkDocumentName } from '../../coordinator/state/documents.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { PgDocuments } from '../../coordinator/state/pg/pg-documents.js';
import type { FenceToken } from '../../coordinator/state/pg/pg-state-backend.js';
import { freshDatabase, type TestDatabase } from '../helpers/postgres.js';

let db: TestDatabase;
let pg: PgClient;
let dir: string;
let token: FenceToken = { epoch: 1, holder: 'holder-a' };

async function lease(t: FenceToken): Promise<void> {
  await pg.query(
    `INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, $1, $2, 'http://127.0.0.1:1', now() + interval '1 hour')
     ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at`,
    [t.epoch, t.holder],
  );
  token = t;
}

const leader = () => new PgDocuments({ pg, fence: () => token });
const standby = () => new PgDocuments({ pg, fence: () => null });
const rowOf = async (name: string) => (await pg.query<{ body: string; version: number }>('SELECT body, version FROM kiln_document WHERE name = $1', [name]))[0];

beforeAll(async () => {
  db = await freshDatabase();
  pg = await openPg(db.url, { applicationName: 'kiln-test-documents' });
  await migrate(pg);
  await lease(token);
  dir = await mkdtemp(join(tmpdir(), 'kiln-docs-'));
});

afterAll(async () => {
  await pg?.close();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('document names', () => {
  it('takes bounded relative names only', () => {
    expect(checkDocumentName('access/keys.json')).toBe('access/keys.json');
    for (const bad of ['', '/etc/passwd', '../x', 'a/../b', 'A/b', 'a//b', 'a/b/c/d/e', `${'a'.repeat(101)}`]) {
      expect(() => checkDocumentName(bad), bad).toThrow(/is not a document name/);
    }
  });
});

describe('FileDocuments', () => {
  it('keeps documents as files in the data dir, mode 0600, a missing one read as null', async () => {
    const d = join(dir, 'files');
    const docs = new FileDocuments(d);
    expect(await docs.read('access/keys.json')).toBeNull();
    await docs.write('access/keys.json', '{"a":1}');
    expect(await readFile(join(d, 'access', 'keys.json'), 'utf8')).toBe('{"a":1}');
    expect((await stat(join(d, 'access', 'keys.json'))).mode & 0o777).toBe(0o600);
    const v1 = (await docs.versions(['access/keys.json', 'nope'])).get('access/keys.json');
    expect(v1).toBeTypeOf('number');
    await docs.write('access/keys.json', '{"a":2}');
    expect((await docs.versions(['access/keys.json'])).get('access/keys.json')).not.toBe(v1);
    expect(await docs.create('tokens/api', 'first')).toBe('first');
    expect(await docs.create('tokens/api', 'second')).toBe('first');
    await docs.write('reuse/ab.json', '{}');
    await writeFile(join(d, 'reuse', '.ab.json.tmp-1-1'), 'torn');
    expect(await docs.list('reuse')).toEqual(['reuse/ab.json']);
  });
});

describe('PgDocuments', () => {
  it('writes and reads documents; versions move at each write', async () => {
    const docs = leader();
    expect(await docs.read('x/one.json')).toBeNull();
    await docs.write('x/one.json', 'v1');
    expect(await docs.read('x/one.json')).toBe('v1');
    expect((await docs.versions(['x/one.json'])).get('x/one.json')).toBe(1);
    await docs.write('x/one.json', 'v2');
    expect(await rowOf('x/one.json')).toEqual({ body: 'v2', version: 2 });
    await docs.write('x/two.json', 't');
    expect(await docs.list('x')).toEqual(['x/one.json', 'x/two.json']);
    expect(docs.where('x/one.json')).toContain('kiln_document');
    expect(docs.where('x/one.json')).not.toContain(new URL(db.url).password);
  });

  it('a coordinator without the lease, or whose lease moved on, lands nothing (E_NOT_LEADER)', async () => {
    await leader().write('fenced.json', 'leader wrote this');
    await expect(standby().write('fenced.json', 'standby')).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    const old = token;
    const oldDocs = new PgDocuments({ pg, fence: () => old });
    await lease({ epoch: old.epoch + 1, holder: 'holder-b' });
    await expect(oldDocs.write('fenced.json', 'stale leader')).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    await expect(oldDocs.write('fenced-new.json', 'stale leader')).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    expect(await rowOf('fenced.json')).toEqual({ body: 'leader wrote this', version: 1 });
    expect(await rowOf('fenced-new.json')).toBeUndefined();
    await leader().write('fenced.json', 'new leader');
    expect((await rowOf('fenced.json'))?.body).toBe('new leader');
  });

  it('create: coordinators starting together agree on one body, without the lease', async () => {
    const got = await Promise.all([standby().create('tokens/agent', 'A'), standby().create('tokens/agent', 'B'), leader().create('tokens/agent', 'C')]);
    expect(new Set(got).size).toBe(1);
    expect((await rowOf('tokens/agent'))?.body).toBe(got[0]);
  });
});

describe('the stores on a PostgreSQL state', () => {
  it("a standby's API keys follow the leader's (a new key authenticates, a revoked one no longer)", async () => {
    const onLeader = await ApiKeyStore.open(leader(), { legacyApiToken: true });
    const onStandby = await ApiKeyStore.open(standby(), { legacyApiToken: true });
    const { secret, key } = await onLeader.create({ scopes: ['read'], name: 'ci', createdBy: 'key:api-token' });
    expect(onStandby.authenticate(secret)).toBeNull();
    expect(await onStandby.reload()).toBe(true);
    expect(onStandby.authenticate(secret)).toMatchObject({ id: key.id, name: 'ci', scopes: ['read'] });
    expect(await onStandby.reload()).toBe(false);
    await expect(onStandby.create({ scopes: ['read'], createdBy: 'x' })).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    await onLeader.revoke('ci');
    await onStandby.reload();
    expect(onStandby.authenticate(secret)).toBeNull();
    // a new leader reads every key
    expect((await ApiKeyStore.open(leader())).list().map((k) => [k.name, k.state])).toEqual([['ci', 'revoked']]);
  });

  it('agent credentials: enrolled on the leader, verified by a standby after reload; refused writes leave memory as it was', async () => {
    const onLeader = await AgentCredentialStore.open(leader());
    const { token: enrol } = await onLeader.createToken({ name: null, expiresMs: 3_600_000, uses: 1, createdBy: 'key:api-token' });
    const { credential } = await onLeader.enrol(enrol, 'host-1');
    const onStandby = await AgentCredentialStore.open(standby());
    expect(onStandby.verify(credential)).toMatchObject({ ok: true, name: 'host-1' });
    await expect(onStandby.revokeAgent('host-1', 'key:x')).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    await onLeader.revokeAgent('host-1', 'key:api-token');
    expect(await onStandby.reload()).toBe(true);
    expect(onStandby.verify(credential)).toMatchObject({ ok: false, name: 'host-1' });
  });

  it('a corrupt document is an error naming it, never an empty store', async () => {
    await pg.query("INSERT INTO kiln_document (name, body, version) VALUES ('access/keys.json', '{not json', 1) ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, version = kiln_document.version + 1");
    await expect(ApiKeyStore.open(standby())).rejects.toThrow(/the API key file document access\/keys\.json \(table kiln_document in .*\) is corrupt/);
    await pg.query("UPDATE kiln_document SET body = '[]', version = version + 1 WHERE name = 'access/agents.json'");
    await expect(AgentCredentialStore.open(standby())).rejects.toThrow(/agent credentials file document access\/agents\.json .* is corrupt/);
  });

  it('secrets: the key is given, never made, on a shared state; a new leader with the same key opens them', async () => {
    const keyFile = join(dir, 'secrets.key');
    const noKey = await SecretStore.open({ dataDir: join(dir, 'c1'), docs: leader(), createKey: false });
    await expect(noKey.set('npm_token', Buffer.from('s3cret'))).rejects.toThrow(/on a shared \(PostgreSQL\) state every coordinator needs the same key file/);
    await writeFile(keyFile, `${Buffer.alloc(32, 7).toString('base64')}\n`, { mode: 0o600 });
    const s = await SecretStore.open({ dataDir: join(dir, 'c1'), keyFile, docs: leader(), createKey: false });
    await s.set('npm_token', Buffer.from('s3cret'));
    const other = await SecretStore.open({ dataDir: join(dir, 'c2'), keyFile, docs: leader(), createKey: false });
    expect(Buffer.from(other.values(['npm_token'])[0]!.value).toString()).toBe('s3cret');
    await expect(SecretStore.open({ dataDir: join(dir, 'c3'), docs: leader() })).rejects.toThrow(/exists but its key file .* does not/);
  });

  it('reuse records written by one leader are found by the next', async () => {
    const rec: ReuseRecord = { key: `sha256:${'c'.repeat(64)}`, build_id: 'b1', node: 'n', attempt_id: 'a1', attempt_number: 1, platform: 'linux/amd64', image_id: null, outputs: [], provenance: null, finished_at: 1 };
    const a = new ReuseIndex(join(dir, 'c1'), true, leader());
    await a.init();
    await a.put(rec);
    const b = new ReuseIndex(join(dir, 'c2'), true, leader());
    expect(await b.get(rec.key)).toEqual(rec);
    expect(await b.get(`sha256:${'d'.repeat(64)}`)).toBeNull();
    await expect(new ReuseIndex(join(dir, 'c3'), true, standby()).put({ ...rec, key: `sha256:${'e'.repeat(64)}` })).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
  });

  it('generated tokens: every coordinator of the database gets the same ones, with a local copy for the CLI', async () => {
    const db2 = await freshDatabase();
    const pg2 = await openPg(db2.url, { applicationName: 'kiln-test-tokens' });
    try {
      await migrate(pg2);
      const docs = new PgDocuments({ pg: pg2, fence: () => null });
      const [t1, t2] = await Promise.all([loadTokens(join(dir, 't1'), {}, docs), loadTokens(join(dir, 't2'), {}, docs)]);
      expect(t1.apiToken).toBe(t2.apiToken);
      expect(t1.agentToken).toBe(t2.agentToken);
      expect(t1.apiToken).not.toBe(t1.agentToken);
      expect((await readFile(join(dir, 't2', 'tokens', 'api'), 'utf8')).trim()).toBe(t1.apiToken);
      expect(t1.created).toEqual([join(dir, 't1', 'tokens', 'agent'), join(dir, 't1', 'tokens', 'api')]);
      expect((await loadTokens(join(dir, 't1'), {}, docs)).created).toEqual([]);
    } finally {
      await pg2.close();
      await db2.drop();
    }
  });
});
