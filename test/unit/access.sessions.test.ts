/**
 * Dashboard sessions (coordinator/access/sessions.ts) over a real key store in a temp dir:
 * ids are 32 random bytes and only their hash is kept; the store is bounded (overall and
 * per key, oldest first); a session ends at its own expiry, never outlives its key, and
 * ends when its key is revoked or expires; the cookie parser is bounded and strict; the
 * Origin rule for cookie-authenticated unsafe requests.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiKeyStore } from '../../coordinator/access/api-keys.js';
import { SESSION_ID_RE, SessionStore, clearSessionCookie, originAllowed, sessionCookieOf, setSessionCookie } from '../../coordinator/access/sessions.js';

describe('session store', () => {
  let dir: string;
  let now: number;
  let keys: ApiKeyStore;
  const clock = () => now;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-sessions-'));
    now = Date.parse('2026-12-05T08:00:00Z');
    keys = await ApiKeyStore.open(dir, { clock, legacyApiToken: true });
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  async function key(name: string, scopes: ('read' | 'cancel' | 'admin')[] = ['read'], expiresInMs?: number) {
    const { key: k, secret } = await keys.create({ name, scopes, createdBy: 'test', ...(expiresInMs !== undefined ? { expiresInMs } : {}) });
    return { principal: keys.authenticate(secret)!, id: k.id, secret };
  }

  it('makes random 43-character ids, keeps only their hash, and resolves them to the key', async () => {
    const { principal } = await key('ci', ['cancel']);
    const store = new SessionStore(keys, { clock });
    const a = store.create(principal);
    const b = store.create(principal);
    expect(a.id).toMatch(SESSION_ID_RE);
    expect(a.id).not.toBe(b.id);
    expect(JSON.stringify([...(store as unknown as { byHash: Map<string, unknown> }).byHash])).not.toContain(a.id);
    expect(store.resolve(a.id)).toEqual({ principal: { kind: 'key', id: principal.id, name: 'ci', scopes: ['cancel'] }, expiresAt: now + 12 * 3_600_000 });
    expect(a.maxAgeS).toBe(12 * 3600);
    expect(store.resolve('x'.repeat(43))).toBeNull();
    expect(store.resolve(`${a.id}x`)).toBeNull();
  });

  it('ends a session at its expiry', async () => {
    const { principal } = await key('ci');
    const store = new SessionStore(keys, { clock, ttlMs: 60_000 });
    const s = store.create(principal);
    now += 59_999;
    expect(store.resolve(s.id)).not.toBeNull();
    now += 1;
    expect(store.resolve(s.id)).toBeNull();
    expect(store.size).toBe(0);
  });

  it('never outlives its key, and ends when the key is revoked or expires', async () => {
    const short = await key('short', ['read'], 30_000);
    const store = new SessionStore(keys, { clock });
    const s = store.create(short.principal);
    expect(s.expiresAt).toBe(now + 30_000);
    expect(s.maxAgeS).toBe(30);
    now += 30_000;
    expect(store.resolve(s.id)).toBeNull();

    const revoked = await key('revoked');
    const r = store.create(revoked.principal);
    expect(store.resolve(r.id)).not.toBeNull();
    await keys.revoke(revoked.id);
    expect(store.resolve(r.id)).toBeNull();
  });

  it('keeps the legacy API token sessions while the process lives', () => {
    const store = new SessionStore(keys, { clock });
    const s = store.create({ kind: 'key', id: 'api-token', name: 'api-token', scopes: ['admin'] });
    expect(store.resolve(s.id)?.principal.scopes).toEqual(['admin']);
  });

  it('is bounded: the oldest session makes room, overall and per key', async () => {
    const a = await key('a');
    const b = await key('b');
    const store = new SessionStore(keys, { clock, maxSessions: 3, maxPerKey: 2 });
    const a1 = store.create(a.principal);
    const a2 = store.create(a.principal);
    const a3 = store.create(a.principal); // a's third: a1 goes
    expect(store.resolve(a1.id)).toBeNull();
    expect(store.resolve(a2.id)).not.toBeNull();
    const b1 = store.create(b.principal);
    expect(store.size).toBe(3);
    const b2 = store.create(b.principal); // full: the oldest (a2) goes
    expect(store.size).toBe(3);
    expect(store.resolve(a2.id)).toBeNull();
    for (const s of [a3, b1, b2]) expect(store.resolve(s.id)).not.toBeNull();
  });

  it('ends a session on sign-out', async () => {
    const { principal } = await key('ci');
    const store = new SessionStore(keys, { clock });
    const s = store.create(principal);
    expect(store.end(s.id)).toBe(true);
    expect(store.resolve(s.id)).toBeNull();
    expect(store.end(s.id)).toBe(false);
    expect(store.end('not an id')).toBe(false);
  });
});

describe('session cookie', () => {
  const id = 'A'.repeat(43);

  it('is read from a Cookie header among others, strictly', () => {
    expect(sessionCookieOf(undefined)).toBeNull();
    expect(sessionCookieOf('theme=dark')).toBeNull();
    expect(sessionCookieOf(`theme=dark; kiln_session=${id}; x=1`)).toBe(id);
    expect(sessionCookieOf(`kiln_session=${id}x`)).toBe('malformed');
    expect(sessionCookieOf('kiln_session=../../etc')).toBe('malformed');
    expect(sessionCookieOf(`kiln_session=${'B'.repeat(100_000)}`)).toBe('malformed');
    // only the first 8 KiB of the header are read
    expect(sessionCookieOf(`pad=${'p'.repeat(9000)}; kiln_session=${id}`)).toBeNull();
  });

  it('is set HttpOnly, SameSite=Strict, Path=/, with Max-Age, Secure over TLS; cleared with Max-Age=0', () => {
    expect(setSessionCookie(id, 3600, false)).toBe(`kiln_session=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600`);
    expect(setSessionCookie(id, 59.9, true)).toBe(`kiln_session=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=59; Secure`);
    expect(clearSessionCookie(false)).toBe('kiln_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0');
  });

  it('lets an unsafe cookie request through only from its own host (or without Origin)', () => {
    expect(originAllowed(undefined, '127.0.0.1:7700')).toBe(true);
    expect(originAllowed('http://127.0.0.1:7700', '127.0.0.1:7700')).toBe(true);
    expect(originAllowed('https://kiln.example:8443', 'kiln.example:8443')).toBe(true);
    expect(originAllowed('http://evil.example', '127.0.0.1:7700')).toBe(false);
    expect(originAllowed('http://127.0.0.1:7701', '127.0.0.1:7700')).toBe(false);
    expect(originAllowed('null', '127.0.0.1:7700')).toBe(false);
    expect(originAllowed('http://127.0.0.1:7700', undefined)).toBe(false);
  });
});
