/**
 * The dashboard's session against a real coordinator process (port 0, real data dir, the
 * built dist/web): a read key signs in over HTTP, the cookie alone reads the builds list
 * and a build, a cancel with it is refused for the scope (403 E_SCOPE) and nothing is
 * cancelled; without the cookie, 401; the page itself is served at / and at a build's
 * route with its CSP; sign-out ends the session. The audit log names the key, never holds it.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiPath, withQuery } from '../../shared/index.js';
import { REPO, getBuild, requireBuilt, startCoordinator, submitSpec, tempDir, type CoordinatorHandle } from '../helpers/cluster.js';

describe('dashboard session on a real coordinator', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let c: CoordinatorHandle;
  let key: { id: string; secret: string };

  beforeAll(async () => {
    requireBuilt();
    await access(join(REPO, 'dist', 'web', 'index.html')); // npm run build made the dashboard
    dir = await tempDir('web-session');
    c = await startCoordinator({ dataDir: join(dir.path, 'data') });
    const r = await c.api<{ secret: string; key: { id: string } }>(apiPath.keys(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scopes: ['read'], name: 'wallboard' }) });
    expect(r.status).toBe(201);
    key = { id: r.body.key.id, secret: r.body.secret };
  });
  afterAll(async () => {
    await c?.proc.stop();
    await dir?.cleanup();
  });

  it('signs in with a read key, reads with the cookie, is refused a cancel, and signs out', async () => {
    // no agent: the build stays pending, so a cancel would change it
    const id = await submitSpec(c, { name: 'dash-read', nodes: { a: { dockerfile_inline: 'FROM kiln/busybox:1\n' } } });

    const signIn = await fetch(`${c.url}${apiPath.session()}`, { method: 'POST', headers: { 'content-type': 'application/json', origin: c.url }, body: JSON.stringify({ key: key.secret }) });
    expect(signIn.status).toBe(200);
    const setCookie = signIn.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/^kiln_session=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\/; Max-Age=\d+$/);
    expect(((await signIn.json()) as { scopes: string[] }).scopes).toEqual(['read']);
    const cookie = setCookie.split(';')[0]!;

    const list = await fetch(`${c.url}${apiPath.builds()}`, { headers: { cookie } });
    expect(list.status).toBe(200);
    expect(((await list.json()) as { items: { id: string }[] }).items.map((b) => b.id)).toContain(id);
    const one = await fetch(`${c.url}${apiPath.build(id)}`, { headers: { cookie } });
    expect(one.status).toBe(200);

    const cancel = await fetch(`${c.url}${apiPath.buildCancel(id)}`, { method: 'POST', headers: { cookie, origin: c.url } });
    expect(cancel.status).toBe(403);
    const problem = (await cancel.json()) as { code: string; detail: string };
    expect(problem.code).toBe('E_SCOPE');
    expect(problem.detail).toMatch(/'cancel' scope/);
    expect((await getBuild(c, id)).state).toBe('pending');

    expect((await fetch(`${c.url}${apiPath.builds()}`)).status).toBe(401);

    // the page: index.html at / and at the build's own route, with its policy
    for (const path of ['/', `/builds/${id}`]) {
      const page = await fetch(`${c.url}${path}`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
      expect(await page.text()).toMatch(/<script type="module" crossorigin src="\/assets\/index-[\w-]+\.js"><\/script>/);
    }

    const out = await fetch(`${c.url}${apiPath.session()}`, { method: 'DELETE', headers: { cookie, origin: c.url } });
    expect(out.status).toBe(204);
    expect((await fetch(`${c.url}${apiPath.builds()}`, { headers: { cookie } })).status).toBe(401);

    const audit = await c.api<{ items: { actor: string; action: string; outcome: string }[] }>(`${apiPath.audit()}?limit=50`);
    const text = JSON.stringify(audit.body);
    expect(text).not.toContain(key.secret);
    const actor = `key:${key.id}/wallboard`;
    expect(audit.body.items.some((e) => e.action === 'session.create' && e.actor === actor && e.outcome === 'ok')).toBe(true);
    expect(audit.body.items.some((e) => e.action === 'session.delete' && e.actor === actor)).toBe(true);
    expect(audit.body.items.some((e) => e.actor === actor && e.outcome === 'refused' && /cancel/.test(e.action))).toBe(true);
  });

  it("ends an open log stream once its session is signed out (at the stream's next keep-alive)", async () => {
    // no agent: the build stays pending and its log stream stays open, sending keep-alives
    const id = await submitSpec(c, { name: 'dash-follow', nodes: { a: { dockerfile_inline: 'FROM kiln/busybox:1\n' } } });
    const signIn = await fetch(`${c.url}${apiPath.session()}`, { method: 'POST', headers: { 'content-type': 'application/json', origin: c.url }, body: JSON.stringify({ key: key.secret }) });
    expect(signIn.status).toBe(200);
    const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
    const follow = await fetch(`${c.url}${withQuery(apiPath.nodeLogs(id, 'a'), { follow: true })}`, { headers: { cookie } });
    expect(follow.status).toBe(200);
    const out = await fetch(`${c.url}${apiPath.session()}`, { method: 'DELETE', headers: { cookie, origin: c.url } });
    expect(out.status).toBe(204);
    // The body ends by itself (without the re-check it would stay open while the build waits).
    const text = await follow.text();
    expect(text).toContain('retry: 1000');
    expect((await getBuild(c, id)).state).toBe('pending');
  });
});
