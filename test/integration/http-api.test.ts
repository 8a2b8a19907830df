/**
 * The coordinator's HTTP API over a real socket: authentication, RFC 9457 errors, spec
 * validation that names node and field and stores nothing, the content-addressed store,
 * cursor pagination, health and the OpenAPI document.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tarOf } from '../helpers/api-fixtures.js';
import { startCoordinator, tempDir, type CoordinatorHandle } from '../helpers/cluster.js';
import { API_PREFIX, API_ROUTES, apiPath } from '../../shared/index.js';

interface Problem {
  status: number;
  code: string;
  detail: string;
  errors?: Array<{ path: string; message: string }>;
}

function sha(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}


describe('coordinator HTTP API', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let c: CoordinatorHandle;

  beforeAll(async () => {
    dir = await tempDir('api');
    c = await startCoordinator({ dataDir: `${dir.path}/data` });
  });

  afterAll(async () => {
    await c.proc.stop();
    await dir.cleanup();
  });

  const post = (body: string, type = 'application/json') => c.api<Problem>(apiPath.builds(), { method: 'POST', headers: { 'content-type': type }, body });

  it('answers health checks without a token and refuses the API without one', async () => {
    expect((await fetch(`${c.url}/livez`)).status).toBe(200);
    expect((await fetch(`${c.url}/readyz`)).status).toBe(200);
    const res = await fetch(`${c.url}${apiPath.builds()}`);
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    expect(await res.json()).toMatchObject({ status: 401, code: 'E_UNAUTHORIZED' });
    const wrong = await fetch(`${c.url}${apiPath.builds()}`, { headers: { authorization: 'Bearer nope-nope-nope-nope' } });
    expect(wrong.status).toBe(401);
  });

  it('rejects bad specs with 400 naming the node and field, and stores nothing', async () => {
    const cases: Array<[string, string, RegExp, string?]> = [
      [JSON.stringify({ nodes: { a: { dockerfile_inline: 'FROM x', colour: 'red' } } }), 'nodes.a.colour', /node 'a': field 'colour': unknown field/],
      [JSON.stringify({ nodes: { a: { dockerfile_inline: 'FROM x', needs: ['ghost'] } } }), 'nodes.a.needs', /node 'a': field 'needs': unknown node 'ghost'/],
      [JSON.stringify({ nodes: { a: { dockerfile_inline: 'FROM x', needs: ['b'] }, b: { dockerfile_inline: 'FROM x', needs: ['a'] } } }), 'nodes.a.needs', /dependency cycle: a -> b -> a/],
      [JSON.stringify({ nodes: { a: { dockerfile_inline: 'FROM x', platform: 'linux/amd65' } } }), 'nodes.a.platform', /node 'a': field 'platform': unknown architecture 'amd65'/],
      [JSON.stringify({ nodes: { a: { context: './app' } } }), 'nodes.a.context', /must be the sha256 digest/],
      [JSON.stringify({ nodes: { a: { context: `sha256:${'0'.repeat(64)}` } } }), 'nodes.a.context', /was not uploaded/],
      ['nodes:\n  a:\n    dockerfile_inline: "FROM x"\n  a:\n    dockerfile_inline: "FROM y"\n', 'nodes.a', /duplicate node name 'a'/, 'application/yaml'],
      ['nodes: [unclosed', '', /not valid YAML/, 'application/yaml'],
      [JSON.stringify({ nodes: { a: { dockerfile_inline: 'FROM x', timeout: 'soon' } } }), 'nodes.a.timeout', /invalid duration 'soon'/],
    ];
    for (const [body, path, message, type] of cases) {
      const r = await post(body, type);
      expect(r.status, body).toBe(400);
      expect(r.headers.get('content-type')).toContain('application/problem+json');
      expect(r.body.code).toBe('E_SPEC_INVALID');
      const match = r.body.errors?.find((e) => e.path === path && message.test(e.message));
      expect(match, `${body} -> ${JSON.stringify(r.body.errors)}`).toBeDefined();
      expect(r.body.detail).toMatch(/invalid spec/);
    }
    const list = await c.api<{ items: unknown[] }>(apiPath.builds());
    expect(list.body.items).toEqual([]);
  });

  it('refuses an oversized spec body with 413', async () => {
    const huge = JSON.stringify({ nodes: { a: { dockerfile_inline: 'x'.repeat(5 * 1024 * 1024) } } });
    const r = await post(huge);
    expect(r.status).toBe(413);
    expect(r.body.code).toBe('E_TOO_LARGE');
  });

  it('checks the Dockerfile is inside the uploaded context', async () => {
    const tar = await tarOf({ 'src/main.c': 'int main(){}' });
    const digest = sha(tar);
    expect((await c.api(apiPath.casBlob(digest), { method: 'PUT', body: tar })).status).toBe(201);
    const r = await post(JSON.stringify({ nodes: { compile: { context: digest, dockerfile: 'build/Dockerfile' } } }));
    expect(r.status).toBe(400);
    expect(r.body.errors?.[0]).toMatchObject({ path: 'nodes.compile.dockerfile' });
    expect(r.body.errors?.[0]?.message).toMatch(/'build\/Dockerfile' is not in the context/);
  });

  it('stores blobs only when the bytes match the digest, idempotently', async () => {
    const data = Buffer.from(`blob ${Date.now()}`);
    const digest = sha(data);
    const bad = await c.api<Problem>(apiPath.casBlob(digest), { method: 'PUT', body: Buffer.from('something else') });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('E_DIGEST_MISMATCH');
    expect((await c.api(apiPath.casBlob(digest), { method: 'HEAD' })).status).toBe(404);

    const put = await c.api<{ created: boolean; size: number }>(apiPath.casBlob(digest), { method: 'PUT', body: data });
    expect(put.status).toBe(201);
    expect(put.body).toMatchObject({ created: true, size: data.length });
    const again = await c.api<{ created: boolean }>(apiPath.casBlob(digest), { method: 'PUT', body: data });
    expect(again.status).toBe(200);
    expect(again.body.created).toBe(false);

    const head = await c.api(apiPath.casBlob(digest), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(data.length));
    const get = await fetch(`${c.url}${apiPath.casBlob(digest)}`, { headers: { authorization: `Bearer ${c.apiToken}` } });
    expect(Buffer.from(await get.arrayBuffer())).toEqual(data);

    const badDigest = await c.api<Problem>(apiPath.casBlob('sha256:XYZ'), { method: 'HEAD' });
    expect(badDigest.status).toBe(400);
  });

  it('lets the agent token use the CAS (read contexts, upload outputs) but nothing else', async () => {
    const agentToken = (await readFile(c.agentTokenFile, 'utf8')).trim();
    const data = Buffer.from('for agents');
    await c.api(apiPath.casBlob(sha(data)), { method: 'PUT', body: data });
    const get = await fetch(`${c.url}${apiPath.casBlob(sha(data))}`, { headers: { authorization: `Bearer ${agentToken}` } });
    expect(get.status).toBe(200);
    const put = await fetch(`${c.url}${apiPath.casBlob(sha('x'))}`, { method: 'PUT', body: 'x', headers: { authorization: `Bearer ${agentToken}`, 'content-type': 'application/octet-stream' } });
    expect(put.status).toBe(201);
    const missing = await fetch(`${c.url}${apiPath.casFindMissing()}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${agentToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ digests: [sha('x'), sha('not there'), sha('x'), sha('not there')] }),
    });
    expect(await missing.json()).toEqual({ missing: [sha('not there')] });
    const builds = await fetch(`${c.url}${apiPath.builds()}`, { headers: { authorization: `Bearer ${agentToken}` } });
    expect(builds.status).toBe(403);
  });

  it('paginates builds newest first with a cursor and a Link header', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await c.api<{ id: string }>(apiPath.builds(), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: `page-${i}`, nodes: { n: { dockerfile_inline: 'FROM kiln/busybox:1' } } }),
      });
      expect(r.status).toBe(201);
      expect(r.headers.get('location')).toBe(apiPath.build(r.body.id));
      ids.push(r.body.id);
    }
    const p1 = await c.api<{ items: Array<{ id: string; name: string }>; next_cursor: string | null }>(`${apiPath.builds()}?limit=2`);
    expect(p1.body.items.map((b) => b.id)).toEqual([ids[2], ids[1]]);
    expect(p1.body.next_cursor).toBe(ids[1]);
    expect(p1.headers.get('link')).toContain('rel="next"');
    const p2 = await c.api<{ items: Array<{ id: string }>; next_cursor: string | null }>(`${apiPath.builds()}?limit=2&cursor=${p1.body.next_cursor}`);
    expect(p2.body.items.map((b) => b.id)).toEqual([ids[0]]);
    expect(p2.body.next_cursor).toBeNull();
    const bad = await c.api<Problem>(`${apiPath.builds()}?limit=0`);
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('E_INVALID');
    for (const id of ids) await c.api(apiPath.buildCancel(id), { method: 'POST' });
  });

  it('answers unknown builds and routes with problem+json 404, malformed ids 400, other methods 405', async () => {
    const r = await c.api<Problem>(apiPath.build('b-01kbx2f3q4000-7d2k9x4m'));
    expect(r.status).toBe(404);
    expect(r.body.code).toBe('E_NOT_FOUND');
    const bad = await c.api<Problem>(apiPath.build('b-nope'));
    expect(bad.status).toBe(400);
    expect(bad.body.detail).toMatch(/id: must be a build id as kiln gives it/);
    expect((await c.api<Problem>(`${API_PREFIX}/nothing-here`)).status).toBe(404);
    const del = await c.api<Problem>(apiPath.builds(), { method: 'DELETE' });
    expect(del.status).toBe(405);
    expect(del.headers.get('allow')).toBe('GET, HEAD, POST');
    expect(del.body.code).toBe('E_METHOD');
  });

  it('serves an OpenAPI 3.1 document describing the routes', async () => {
    const doc = (await (await fetch(`${c.url}/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toBe('3.1.0');
    // every route of the shared table (what clients build their paths from) is served and documented
    for (const { template } of Object.values(API_ROUTES)) {
      expect(doc.paths[template], template).toBeDefined();
    }
  });
});
