/**
 * The access parts on their own, with real files in a temp dir and a manual clock:
 * - the API key store: keys stored only as sha256, durable across a reopen, expiry by the
 *   clock, revoke by id or name, names unique among active keys, the bound (revoked and
 *   expired records pruned first, then refused), a corrupt or unreadable file refused;
 * - the audit log: lines appended as JSON, read back newest first with filters, rotated
 *   at the size bound keeping one old file, a torn last line skipped;
 * - the token bucket: burst, refill, Retry-After, `N/s burst M` parsing, the bounded Map;
 * - the 429 handling of the CLI's client and the agent's fetch (a real local server).
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiKeyStore, MAX_KEYS, actorOf, parseScopes, sha256Hex } from '../../coordinator/access/api-keys.js';
import { AuditLog } from '../../coordinator/access/audit-log.js';
import { RateLimiter, parseRateSpec } from '../../coordinator/access/rate-limit.js';
import { RouteScopeTable } from '../../coordinator/access/route-scopes.js';
import { TokenCheck } from '../../coordinator/http/auth.js';
import { honouring429 } from '../../agent/retry-after.js';
import { ApiClient, retryAfterMs } from '../../cli/api-client.js';
import { KilnError } from '../../shared/index.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-access-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('API key store', () => {
  it('stores only hashes, survives a reopen, and authenticates live keys only', async () => {
    let now = Date.parse('2026-12-05T00:00:00Z');
    const clock = () => now;
    const store = await ApiKeyStore.open(dir, { clock });
    const { key, secret } = await store.create({ scopes: ['read', 'cancel'], name: 'ops', createdBy: 'key:api-token' });
    const { secret: shortSecret } = await store.create({ scopes: ['read'], name: 'short', expiresInMs: 60_000, createdBy: 'key:api-token' });
    expect(secret).toMatch(/^kiln_key_[A-Za-z0-9_-]{43}$/);
    const file = await readFile(join(dir, 'access', 'keys.json'), 'utf8');
    expect(file).not.toContain(secret);
    expect(file).not.toContain(secret.slice(9));
    expect(file).toContain(sha256Hex(secret));
    expect((await stat(join(dir, 'access', 'keys.json'))).mode & 0o777).toBe(0o600);

    const again = await ApiKeyStore.open(dir, { clock });
    expect(again.authenticate(secret)).toEqual({ kind: 'key', id: key.id, name: 'ops', scopes: ['read', 'cancel'] });
    expect(again.authenticate(shortSecret)?.name).toBe('short');
    expect(again.authenticate('kiln_key_wrong')).toBeNull();
    now += 60_000;
    expect(again.authenticate(shortSecret), 'expired').toBeNull();
    expect(again.list().find((k) => k.name === 'short')?.state).toBe('expired');
    // an expired key's name is free again
    await again.create({ scopes: ['read'], name: 'short', createdBy: 'x' });

    await expect(again.create({ scopes: ['read'], name: 'ops', createdBy: 'x' })).rejects.toMatchObject({ code: 'E_CONFLICT' });
    const revoked = await again.revoke('ops');
    expect(revoked.state).toBe('revoked');
    expect(again.authenticate(secret)).toBeNull();
    expect((await ApiKeyStore.open(dir, { clock })).authenticate(secret), 'revocation is durable').toBeNull();
    await expect(again.revoke('nope')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    await expect(again.create({ scopes: ['read'], name: 'bad name!', createdBy: 'x' })).rejects.toMatchObject({ code: 'E_INVALID' });
    await expect(again.create({ scopes: ['read'], expiresInMs: 10, createdBy: 'x' })).rejects.toMatchObject({ code: 'E_INVALID' });
  });

  it('lists the legacy token as the admin key api-token, which it cannot revoke', async () => {
    const store = await ApiKeyStore.open(dir, { legacyApiToken: true });
    expect(store.list()).toEqual([expect.objectContaining({ id: 'api-token', scopes: ['admin'], legacy: true, state: 'active' })]);
    await expect(store.revoke('api-token')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    const check = new TokenCheck({ apiToken: 'legacy-api-token-0123456789', agentToken: 'legacy-agent-token-0123456789' }, store);
    expect(check.authenticate('Bearer legacy-api-token-0123456789')).toMatchObject({ kind: 'key', id: 'api-token', scopes: ['admin'] });
    expect(check.authenticate('Bearer legacy-agent-token-0123456789')).toEqual({ kind: 'agent', name: null });
    expect(check.role('Bearer legacy-agent-token-0123456789')).toBe('agent');
    expect(check.authenticate('Basic abc')).toBeNull();
    expect(actorOf(null)).toBe('anonymous');
  });

  it('is bounded: prunes revoked keys to make room, then refuses', async () => {
    const store = await ApiKeyStore.open(dir, { maxKeys: 20 });
    const made: Array<{ key: { id: string } }> = [];
    for (let i = 0; i < 20; i++) made.push(await store.create({ scopes: ['read'], createdBy: 'x' }));
    await expect(store.create({ scopes: ['read'], createdBy: 'x' })).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await store.revoke(made[0]!.key.id);
    await store.create({ scopes: ['read'], createdBy: 'x' });
    expect(store.list()).toHaveLength(20);
    expect(MAX_KEYS).toBe(1000);
    expect(store.list().some((k) => k.id === made[0]!.key.id)).toBe(false);
  });

  it('refuses a corrupt or unreadable key file, naming it, and never takes it as empty', async () => {
    await mkdir(join(dir, 'access'));
    const file = join(dir, 'access', 'keys.json');
    for (const text of ['{"version":1,"keys":[', '{"version":1,"keys":[{"id":"x"}]}', '{"version":2,"keys":[]}', '']) {
      await writeFile(file, text);
      const err = await ApiKeyStore.open(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KilnError);
      expect((err as KilnError).code).toBe('E_STATE');
      expect((err as KilnError).message).toContain(file);
    }
    await rm(file);
    await mkdir(file);
    const err = await ApiKeyStore.open(dir).catch((e: unknown) => e);
    expect((err as KilnError).message).toContain(file);
  });

  it('parses scope lists', () => {
    expect(parseScopes(['submit,read', 'read'])).toEqual(['read', 'submit']);
    expect(() => parseScopes(['write'])).toThrow(/unknown scope 'write'/);
    expect(() => parseScopes([''])).toThrow(/at least one scope/);
  });
});

describe('audit log', () => {
  it('appends JSON lines and reads them newest first, filtered', async () => {
    let now = 1_000_000;
    const log = await AuditLog.open(dir, { clock: () => now++ });
    log.record({ actor: 'key:k-1/ci', action: 'build.submit', target: 'b-1', outcome: 'ok', remote: '10.0.0.1' });
    log.record({ actor: 'key:k-2/ops', action: 'build.cancel', target: 'b-1', outcome: 'ok' });
    log.record({ actor: 'anonymous', action: 'GET /api/v1/builds', outcome: 'refused', detail: '401 E_UNAUTHORIZED: missing' });
    log.record({ actor: 'agent:builder-1', action: 'cas.put', outcome: 'refused', detail: 'x'.repeat(5000) });
    const all = await log.query({ limit: 100 });
    expect(all.map((e) => e.action)).toEqual(['cas.put', 'GET /api/v1/builds', 'build.cancel', 'build.submit']);
    expect(all[0]!.detail!.length).toBeLessThanOrEqual(1001);
    expect(all[3]).toEqual({ time: new Date(1_000_000).toISOString(), actor: 'key:k-1/ci', action: 'build.submit', target: 'b-1', outcome: 'ok', remote: '10.0.0.1' });
    expect((await log.query({ limit: 100, actor: 'ops' })).map((e) => e.action)).toEqual(['build.cancel']);
    expect((await log.query({ limit: 100, actor: 'k-1' })).map((e) => e.action)).toEqual(['build.submit']);
    expect((await log.query({ limit: 100, actor: 'builder-1' })).map((e) => e.action)).toEqual(['cas.put']);
    expect((await log.query({ limit: 100, action: 'build.' })).map((e) => e.action)).toEqual(['build.cancel', 'build.submit']);
    expect(await log.query({ limit: 1 })).toHaveLength(1);
    await log.close();
    const lines = (await readFile(join(dir, 'audit.log'), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(4);
    for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
  });

  it('rotates at its size bound, keeping one old file, and skips a torn line', async () => {
    const log = await AuditLog.open(dir, { maxBytes: 4096 });
    for (let i = 0; i < 200; i++) log.record({ actor: 'key:k-1', action: 'build.submit', target: `b-${String(i).padStart(4, '0')}`, outcome: 'ok' });
    await log.flush();
    const size = (await stat(join(dir, 'audit.log'))).size;
    const old = (await stat(join(dir, 'audit.log.1'))).size;
    expect(size).toBeLessThanOrEqual(4096);
    expect(old).toBeLessThanOrEqual(4096);
    const got = await log.query({ limit: 1000 });
    expect(got[0]!.target).toBe('b-0199');
    // consecutive, newest first, across both files
    got.forEach((e, i) => expect(e.target).toBe(`b-${String(199 - i).padStart(4, '0')}`));
    await log.close();
    await appendFile(join(dir, 'audit.log'), '{"actor":"torn');
    const reopened = await AuditLog.open(dir, { maxBytes: 4096 });
    expect((await reopened.query({ limit: 1 }))[0]!.target).toBe('b-0199');
    await reopened.close();
  });
});

describe('rate limits', () => {
  it('parses rates', () => {
    expect(parseRateSpec('x', '50/s burst 200')).toEqual({ perSecond: 50, burst: 200 });
    expect(parseRateSpec('x', '600/m')).toEqual({ perSecond: 10, burst: 10 });
    expect(parseRateSpec('x', 'off')).toBeNull();
    expect(() => parseRateSpec('rate_limit.per_key', 'fast')).toThrow(/rate_limit.per_key.*'fast' is not a rate/);
    expect(() => parseRateSpec('x', '0/s')).toThrow(/above 0/);
  });

  it('allows the burst, refills at the rate, and says when to come back', () => {
    let now = 0;
    const rl = new RateLimiter({ perSecond: 2, burst: 3 }, { clock: () => now });
    expect([rl.take('k'), rl.take('k'), rl.take('k')].every((r) => r.ok)).toBe(true);
    expect(rl.take('k')).toEqual({ ok: false, retryAfterS: 1 });
    expect(rl.take('other').ok, 'buckets are separate').toBe(true);
    now += 500; // one token back
    expect(rl.take('k').ok).toBe(true);
    expect(rl.take('k').ok).toBe(false);
    const slow = new RateLimiter({ perSecond: 0.1, burst: 1 }, { clock: () => now });
    slow.take('s');
    expect(slow.take('s')).toEqual({ ok: false, retryAfterS: 10 });
  });

  it('keeps its buckets bounded, dropping idle ones first', () => {
    let now = 0;
    const rl = new RateLimiter({ perSecond: 1, burst: 1 }, { clock: () => now, maxBuckets: 100 });
    for (let i = 0; i < 1000; i++) rl.take(`a${i}`);
    expect(rl.size).toBeLessThanOrEqual(100);
    now += 10_000;
    rl.take('busy');
    rl.take('fresh');
    expect(rl.size).toBeLessThanOrEqual(100);
    expect(rl.take('busy').ok, "a bucket in use keeps its state").toBe(false);
  });
});

describe('route table', () => {
  it('matches literal paths before templates, HEAD as GET, and decodes parameters', () => {
    const t = new RouteScopeTable();
    expect(t.match('POST', '/api/v1/cas/find-missing')?.row.scope).toBe('read');
    expect(t.match('PUT', '/api/v1/cas/sha256:00')?.row.scope).toBe('submit');
    expect(t.match('HEAD', '/api/v1/builds/b-1')?.row.path).toBe('/api/v1/builds/{id}');
    expect(t.match('POST', '/api/v1/builds/b-1/nodes/a%20b/retry')?.params.get('node')).toBe('a b');
    expect(t.match('PATCH', '/api/v1/builds')).toBeNull();
  });
});

describe('429 handling of the clients', () => {
  let server: Server;
  let base: string;
  let calls: string[];
  beforeEach(async () => {
    calls = [];
    server = createServer((req, res) => {
      calls.push(`${req.method} ${req.url}`);
      if (calls.length <= 2) {
        res.writeHead(429, { 'content-type': 'application/problem+json', 'retry-after': '1' });
        res.end(JSON.stringify({ type: 'urn:kiln:error:E_RATE_LIMITED', title: 'Too Many Requests', status: 429, detail: 'slow down', code: 'E_RATE_LIMITED' }));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    await new Promise((r) => server.close(r));
  });

  it('the CLI waits Retry-After and sends again (also a POST: a 429 means nothing was done)', async () => {
    const waits: number[] = [];
    const client = new ApiClient({ baseUrl: base, token: 't', tokenSource: 'test' }, async (ms) => void waits.push(ms));
    const res = await client.raw('/api/v1/builds', { method: 'POST', body: '{}' });
    expect(res.status).toBe(200);
    expect(waits).toEqual([1000, 1000]);
    expect(calls).toEqual(['POST /api/v1/builds', 'POST /api/v1/builds', 'POST /api/v1/builds']);
  });

  it('the CLI gives up after its retries with a clear error', async () => {
    server.removeAllListeners('request');
    server.on('request', (_req, res) => {
      res.writeHead(429, { 'content-type': 'application/problem+json', 'retry-after': '2' });
      res.end(JSON.stringify({ type: 'urn:kiln:error:E_RATE_LIMITED', title: 'Too Many Requests', status: 429, detail: 'slow down', code: 'E_RATE_LIMITED' }));
    });
    const waits: number[] = [];
    const client = new ApiClient({ baseUrl: base, token: 't', tokenSource: 'test' }, async (ms) => void waits.push(ms));
    await expect(client.json('/api/v1/builds', (await import('zod')).z.unknown())).rejects.toThrow(/rate limiting.*slow down.*3 retries/);
    expect(waits).toEqual([2000, 2000, 2000]);
  });

  it('reads Retry-After as seconds or a date, capped', () => {
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs(null)).toBe(1000);
    expect(retryAfterMs('9999')).toBe(30_000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 5_000)).toBe(5_000);
  });

  it('the agent waits Retry-After too', async () => {
    const waits: number[] = [];
    const f = honouring429(fetch, async (ms) => void waits.push(ms));
    const res = await f(`${base}/api/v1/cas/find-missing`, { method: 'POST', body: '{"digests":[]}' });
    expect(res.status).toBe(200);
    expect(waits).toEqual([1000, 1000]);
  });
});
