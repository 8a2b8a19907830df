/**
 * The HTTP side of the dashboard, on the real app (createApp) behind a real Node server on
 * port 0 with a real key store: signing in with a key (cookie attributes, the audit log
 * without the key), cookie auth standing in for the bearer (scopes kept), the Origin rule
 * for unsafe cookie requests, a revoked key and an expired session refused, bounded cookie
 * values; and the static dashboard: index.html for app routes, hashed assets cached, CSP
 * and nosniff, HEAD, no traversal (raw encoded `..`), problem+json 404 under /api, and
 * the API-only answer when nothing is built.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyStore } from '../../coordinator/access/api-keys.js';
import type { AuditEvent } from '../../coordinator/access/audit-log.js';
import { SessionStore } from '../../coordinator/access/sessions.js';
import { createApp } from '../../coordinator/http/app.js';
import { ChangeFeed } from '../../coordinator/events/change-feed.js';
import { TokenCheck } from '../../coordinator/http/auth.js';
import type { HttpDeps } from '../../coordinator/http/context.js';
import { defaultWebRoot } from '../../coordinator/http/static-web.js';
import { apiPath } from '../../shared/index.js';
import { sendRaw } from '../helpers/http-probe.js';

const API_TOKEN = 'unit-api-token-0123456789';

interface Running {
  url: string;
  host: string;
  audit: AuditEvent[];
  keys: ApiKeyStore;
  setNow: (ms: number) => void;
  close: () => Promise<void>;
}

async function serve(dataDir: string, webRoot: string | null): Promise<Running> {
  let now = Date.parse('2026-12-05T08:00:00Z');
  const clock = () => now;
  const keys = await ApiKeyStore.open(dataDir, { clock, legacyApiToken: true });
  const audit: AuditEvent[] = [];
  // what these routes never touch (engine, CAS, logs, ...): a proxy that answers anything
  const inert: unknown = new Proxy(function () {}, { get: (_t, p) => (p === 'then' ? undefined : p === Symbol.toPrimitive ? () => 0 : inert), apply: () => inert });
  const real: Partial<HttpDeps> = {
    tokens: new TokenCheck({ apiToken: API_TOKEN, agentToken: 'unit-agent-token-0123456789' }, keys),
    keys,
    audit: { record: (e) => audit.push(e), query: () => Promise.resolve([]) },
    rateLimits: { perKey: null, perAddress: null },
    isReady: () => true,
    defaultPlatform: 'linux/amd64',
    maxSpecBytes: 4 * 1024 * 1024,
    maxBlobBytes: 1024 ** 3,
    clock,
    sessions: new SessionStore(keys, { clock, ttlMs: 3_600_000 }),
    secureCookies: false,
    webRoot,
    // the events stream over a feed of nothing, pinging every 50 ms (the re-check of its session)
    events: { feed: new ChangeFeed({ watch: () => () => {}, pools: () => ({ items: [] }), durable: () => Promise.resolve() }), pingMs: 50 },
  };
  const deps = new Proxy(real as HttpDeps, { get: (t, p) => (p in t ? t[p as keyof HttpDeps] : inert) });
  const app = createApp(deps);
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    audit,
    keys,
    setNow: (ms) => (now = ms),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe('sessions over HTTP (cookie auth)', () => {
  let dir: string;
  let s: Running;
  let readKey: { id: string; secret: string };
  let adminKey: { id: string; secret: string };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-http-session-'));
    s = await serve(dir, null);
    const r = await s.keys.create({ name: 'viewer', scopes: ['read'], createdBy: 'test' });
    readKey = { id: r.key.id, secret: r.secret };
    const a = await s.keys.create({ name: 'ops', scopes: ['admin'], createdBy: 'test' });
    adminKey = { id: a.key.id, secret: a.secret };
  });
  afterAll(async () => {
    await s?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function signIn(secret: string): Promise<{ res: Response; cookie: string }> {
    const res = await fetch(`${s.url}${apiPath.session()}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: secret }) });
    const set = res.headers.get('set-cookie') ?? '';
    return { res, cookie: set.split(';')[0]! };
  }

  it('signs in with a key in the body: an HttpOnly SameSite=Strict cookie, the session view, an audit line without the key', async () => {
    const { res, cookie } = await signIn(readKey.secret);
    expect(res.status).toBe(200);
    expect(res.headers.get('set-cookie')).toMatch(/^kiln_session=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\/; Max-Age=3600$/);
    expect(await res.json()).toEqual({ key_id: readKey.id, name: 'viewer', scopes: ['read'], expires_at: '2026-12-05T09:00:00.000Z' });
    const who = await fetch(`${s.url}${apiPath.session()}`, { headers: { cookie } });
    expect(who.status).toBe(200);
    expect(((await who.json()) as { name: string }).name).toBe('viewer');
    const line = s.audit.find((e) => e.action === 'session.create' && e.outcome === 'ok');
    expect(line?.actor).toBe(`key:${readKey.id}/viewer`);
    expect(JSON.stringify(s.audit)).not.toContain(readKey.secret);
  });

  it('refuses a wrong key with 401 (audited, the key not recorded), a missing one, and a body over 4 KiB', async () => {
    const wrong = 'kiln_key_wrongwrongwrongwrongwrongwrongwrongwrong0';
    const { res } = await signIn(wrong);
    expect(res.status).toBe(401);
    expect(res.headers.get('set-cookie')).toBeNull();
    expect(((await res.json()) as { code: string }).code).toBe('E_UNAUTHORIZED');
    expect(s.audit.some((e) => e.action === 'session.create' && e.outcome === 'refused')).toBe(true);
    expect(JSON.stringify(s.audit)).not.toContain(wrong);
    expect((await fetch(`${s.url}${apiPath.session()}`, { method: 'POST' })).status).toBe(401);
    const big = await fetch(`${s.url}${apiPath.session()}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: 'k'.repeat(5000) }) });
    expect(big.status).toBe(413);
    const extra = await fetch(`${s.url}${apiPath.session()}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: readKey.secret, more: 1 }) });
    expect(extra.status).toBe(400);
  });

  it('takes the cookie in place of the bearer, with the same scopes', async () => {
    const { cookie } = await signIn(readKey.secret);
    // read scope: a cancel is refused for the scope (not for the cookie)
    const cancel = await fetch(`${s.url}${apiPath.buildCancel('b-01kbx2f3q4000-7d2k9x4m')}`, { method: 'POST', headers: { cookie, origin: s.url } });
    expect(cancel.status).toBe(403);
    expect(((await cancel.json()) as { code: string }).code).toBe('E_SCOPE');
    // admin routes too
    expect((await fetch(`${s.url}${apiPath.keys()}`, { headers: { cookie } })).status).toBe(403);
    const admin = await signIn(adminKey.secret);
    expect((await fetch(`${s.url}${apiPath.keys()}`, { headers: { cookie: admin.cookie } })).status).toBe(200);
    // no cookie, no bearer: 401
    expect((await fetch(`${s.url}${apiPath.keys()}`)).status).toBe(401);
    // a session cookie alone cannot mint a new session (it would outlive its 12 h for good)
    const renew = await fetch(`${s.url}${apiPath.session()}`, { method: 'POST', headers: { cookie, origin: s.url } });
    expect(renew.status).toBe(401);
    expect(renew.headers.get('set-cookie')).toBeNull();
  });

  it('refuses a cookie POST, PUT or DELETE from another origin (403), allows its own host and no Origin', async () => {
    const { cookie } = await signIn(adminKey.secret);
    const body = JSON.stringify({ scopes: ['read'], name: 'from-page' });
    const foreign = await fetch(`${s.url}${apiPath.keys()}`, { method: 'POST', headers: { cookie, origin: 'http://evil.example', 'content-type': 'application/json' }, body });
    expect(foreign.status).toBe(403);
    expect(((await foreign.json()) as { code: string }).code).toBe('E_FORBIDDEN');
    expect(s.keys.list().some((k) => k.name === 'from-page')).toBe(false);
    const otherPort = await fetch(`${s.url}${apiPath.session()}`, { method: 'DELETE', headers: { cookie, origin: 'http://127.0.0.1:1' } });
    expect(otherPort.status).toBe(403);
    const own = await fetch(`${s.url}${apiPath.keys()}`, { method: 'POST', headers: { cookie, origin: s.url, 'content-type': 'application/json' }, body });
    expect(own.status).toBe(201);
    // a GET is not checked (nothing changes); a bearer request is not either (no ambient credential)
    expect((await fetch(`${s.url}${apiPath.keys()}`, { headers: { cookie, origin: 'http://evil.example' } })).status).toBe(200);
    const bearer = await fetch(`${s.url}${apiPath.keys()}`, { method: 'POST', headers: { authorization: `Bearer ${adminKey.secret}`, origin: 'http://evil.example', 'content-type': 'application/json' }, body: JSON.stringify({ scopes: ['read'], name: 'by-bearer' }) });
    expect(bearer.status).toBe(201);
  });

  it('ends the sessions of a revoked key, refuses an expired session and a malformed or oversized cookie', async () => {
    const k = await s.keys.create({ name: 'soon-revoked', scopes: ['read'], createdBy: 'test' });
    const { cookie } = await signIn(k.secret);
    expect((await fetch(`${s.url}${apiPath.session()}`, { headers: { cookie } })).status).toBe(200);
    await s.keys.revoke(k.key.id);
    const after = await fetch(`${s.url}${apiPath.session()}`, { headers: { cookie } });
    expect(after.status).toBe(401);
    expect(((await after.json()) as { detail: string }).detail).toMatch(/session has ended/);

    const live = await signIn(readKey.secret);
    s.setNow(Date.parse('2026-12-05T09:00:00Z'));
    expect((await fetch(`${s.url}${apiPath.session()}`, { headers: { cookie: live.cookie } })).status).toBe(401);
    s.setNow(Date.parse('2026-12-05T08:00:00Z'));

    for (const bad of ['kiln_session=short', `kiln_session=${'A'.repeat(6000)}`, `kiln_session=${'A'.repeat(42)}$`]) {
      expect((await fetch(`${s.url}${apiPath.session()}`, { headers: { cookie: bad } })).status).toBe(401);
    }
  });

  it('ends an open events stream when its session is signed out, and one of a revoked key', async () => {
    const { cookie } = await signIn(readKey.secret);
    const res = await fetch(`${s.url}${apiPath.events()}?topics=pools`, { headers: { cookie } });
    expect(res.status).toBe(200);
    await fetch(`${s.url}${apiPath.session()}`, { method: 'DELETE', headers: { cookie, origin: s.url } });
    // The stream ends by itself at the next ping (reading to its end would hang without the re-check).
    const text = await res.text();
    expect(text).toContain(': connected');
    const r2 = await s.keys.create({ name: 'short-lived', scopes: ['read'], createdBy: 'test' });
    const bearer = await fetch(`${s.url}${apiPath.events()}?topics=pools`, { headers: { authorization: `Bearer ${r2.secret}` } });
    expect(bearer.status).toBe(200);
    await s.keys.revoke(r2.key.id);
    expect(await bearer.text()).toContain(': connected');
  });

  it('signs out: the session ends and the cookie is cleared (audited)', async () => {
    const { cookie } = await signIn(readKey.secret);
    const out = await fetch(`${s.url}${apiPath.session()}`, { method: 'DELETE', headers: { cookie, origin: s.url } });
    expect(out.status).toBe(204);
    expect(out.headers.get('set-cookie')).toBe('kiln_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0');
    expect((await fetch(`${s.url}${apiPath.session()}`, { headers: { cookie } })).status).toBe(401);
    expect(s.audit.some((e) => e.action === 'session.delete' && e.actor === `key:${readKey.id}/viewer`)).toBe(true);
  });

  it('answers GET / with a line saying the dashboard is not built when there is none (API only)', async () => {
    const root = await fetch(`${s.url}/`);
    expect(root.status).toBe(200);
    expect(await root.text()).toMatch(/dashboard is not built/);
    const app = await fetch(`${s.url}/builds/b-1`);
    expect(app.status).toBe(404);
    expect(app.headers.get('content-type')).toBe('application/problem+json');
  });
});

describe('the built dashboard at /', () => {
  let dir: string;
  let s: Running;
  const js = 'console.log("kiln")\n';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-static-'));
    const web = join(dir, 'web');
    await mkdir(join(web, 'assets'), { recursive: true });
    await writeFile(join(web, 'index.html'), '<!doctype html><title>kiln</title><script type="module" src="/assets/index-abc123.js"></script>');
    await writeFile(join(web, 'assets', 'index-abc123.js'), js);
    await writeFile(join(web, 'favicon.svg'), '<svg/>');
    await writeFile(join(dir, 'secret.txt'), 'TOP SECRET');
    await mkdir(join(dir, 'data'));
    s = await serve(join(dir, 'data'), web);
  });
  afterAll(async () => {
    await s?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves index.html for / and the app routes, never cached, with a strict CSP and nosniff', async () => {
    for (const path of ['/', '/builds', '/builds/b-01kbx2f3q4000-7d2k9x4m', '/agents', '/dead-letters', '/index.html']) {
      const res = await fetch(`${s.url}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(res.headers.get('cache-control')).toBe('no-cache');
      const csp = res.headers.get('content-security-policy')!;
      expect(csp).toContain("default-src 'self'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain('unsafe-inline');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(await res.text()).toContain('<title>kiln</title>');
    }
  });

  it('serves hashed assets with a year-long immutable cache, and HEAD without a body', async () => {
    const res = await fetch(`${s.url}/assets/index-abc123.js`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(await res.text()).toBe(js);
    const head = await sendRaw(s.url, { method: 'HEAD', target: '/assets/index-abc123.js', headers: {} });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(js.length));
    expect(head.text).toBe('');
    expect((await fetch(`${s.url}/favicon.svg`)).headers.get('content-type')).toBe('image/svg+xml');
    // a missing asset is a 404, not the app page
    expect((await fetch(`${s.url}/assets/index-gone.js`)).status).toBe(404);
    expect((await fetch(`${s.url}/robots.txt`)).status).toBe(404);
  });

  it('never serves a file outside its folder (raw, percent-encoded `..`)', async () => {
    for (const target of ['/../secret.txt', '/assets/../../secret.txt', '/%2e%2e/secret.txt', '/assets/%2E%2E/%2e%2e/secret.txt', '/..%2fsecret.txt', '/assets/..%2F..%2Fsecret.txt', '/%2e%2e%2f%2e%2e%2fsecret.txt', '/..%5csecret.txt', '/%00/secret.txt']) {
      const res = await sendRaw(s.url, { method: 'GET', target, headers: {} });
      expect(res.text, target).not.toContain('TOP SECRET');
      expect([400, 404], `${target}: ${res.status}`).toContain(res.status);
    }
  });

  it('keeps the API: unknown /api paths get the problem+json 404, other methods 404, /openapi.json and /healthz as before', async () => {
    const api = await fetch(`${s.url}/api/v1/no-such-thing`, { headers: { authorization: `Bearer ${API_TOKEN}` } });
    expect(api.status).toBe(404);
    expect(api.headers.get('content-type')).toBe('application/problem+json');
    const bare = await fetch(`${s.url}/api/nothing`);
    expect(bare.status).toBe(404);
    expect(bare.headers.get('content-type')).toBe('application/problem+json');
    expect((await fetch(`${s.url}/builds`, { method: 'POST' })).status).toBe(404);
    const doc = await fetch(`${s.url}/openapi.json`);
    expect(doc.headers.get('content-type')).toMatch(/application\/json/);
    expect(((await doc.json()) as { paths: Record<string, unknown> }).paths['/api/v1/session']).toBeDefined();
    expect(await (await fetch(`${s.url}/healthz`)).text()).toBe('ok\n');
  });

  it('looks for the built dashboard in dist/web', () => {
    expect(defaultWebRoot()).toMatch(/[/\\]dist[/\\]web$/);
  });
});
