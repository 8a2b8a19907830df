/**
 * Scopes, table-driven over the OpenAPI document of a real coordinator (port 0, real
 * data dir): for every secured operation in /openapi.json and every scope, a key holding
 * only that scope gets a 403 naming the scope it lacks (code E_SCOPE) when the route
 * table (coordinator/access/route-scopes.ts) says the scope is not enough, and anything
 * but a 403 when it is. The legacy agent token gets a 403 outside its routes (CAS and
 * WebSocket) and nothing else. An operation without a row in the table fails here, so a
 * new route cannot ship without a scope; the document's `x-kiln-scope` must say the
 * table's scope.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RouteScopeTable, SCOPES, grants, type Scope } from '../../coordinator/access/route-scopes.js';
import { API_ROUTES } from '../../shared/index.js';
import { startCoordinator, tempDir, type CoordinatorHandle } from '../helpers/cluster.js';

/** A value of the right shape for each path parameter; none of them exists, so handlers answer 404 and change nothing. */
const PARAM_VALUES = new Map<string, string>([
  ['id', 'b-01kbx2f3q4000-7d2k9x4m'],
  ['node', 'compile'],
  ['name', 'nobody-here'],
  ['digest', `sha256:${'0'.repeat(64)}`],
]);
/** Key routes take a key id or name as `{id}`: one that does not exist. */
const KEY_ID = 'no-such-key';

type Operation = { method: string; path: string; op: Record<string, unknown> };

describe('every route needs its scope (table-driven over /openapi.json)', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let c: CoordinatorHandle;
  let ops: Operation[];
  const keyOf = new Map<Scope, string>();
  let agentToken: string;
  const table = new RouteScopeTable();

  beforeAll(async () => {
    dir = await tempDir('scopes');
    // Limits off: this test is about scopes, and it sends a few hundred requests at once.
    c = await startCoordinator({ dataDir: join(dir.path, 'data'), config: { rate_limit: { per_key: 'off', per_address: 'off' } } });
    agentToken = (await readFile(c.agentTokenFile, 'utf8')).trim();
    for (const scope of SCOPES) {
      const r = await c.api<{ secret: string }>(API_ROUTES.keys.path(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scopes: [scope], name: `only-${scope}` }) });
      expect(r.status, `create a ${scope} key`).toBe(201);
      expect(r.body.secret).toMatch(/^kiln_key_[A-Za-z0-9_-]{43}$/);
      keyOf.set(scope, r.body.secret);
    }
    const doc = (await (await fetch(`${c.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, Record<string, unknown>>> };
    ops = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if (!['get', 'put', 'post', 'delete', 'head', 'patch'].includes(method)) continue;
        if (Array.isArray(op.security) && op.security.length === 0) continue; // public: probes, metrics, the document
        ops.push({ method, path, op });
      }
    }
  });

  afterAll(async () => {
    await c?.proc.stop();
    await dir?.cleanup();
  });

  function target(path: string): string {
    return path.replace(/\{([^}]+)\}/g, (_, name: string) => {
      if (path.startsWith(API_ROUTES.keys.template)) return KEY_ID;
      const v = PARAM_VALUES.get(name);
      if (v === undefined) throw new Error(`${path}: no test value for the path parameter {${name}}: add one to PARAM_VALUES`);
      return encodeURIComponent(v).replace(/%3A/gi, ':');
    });
  }

  async function call(method: string, path: string, token: string): Promise<{ status: number; body: { code?: string; detail?: string } }> {
    const res = await fetch(`${c.url}${target(path)}`, { method: method.toUpperCase(), headers: { authorization: `Bearer ${token}` } });
    // An event stream (GET /api/v1/events) does not end: its status is the answer.
    if (res.headers.get('content-type')?.startsWith('text/event-stream')) {
      await res.body?.cancel();
      return { status: res.status, body: {} };
    }
    const text = await res.text();
    let body: { code?: string; detail?: string } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      /* not JSON */
    }
    return { status: res.status, body };
  }

  it('has a row in the route table for every secured operation, and the document states its scope', () => {
    expect(ops.length).toBeGreaterThan(25);
    const missing = ops.filter((o) => table.forOperation(o.method, o.path) === undefined).map((o) => `${o.method.toUpperCase()} ${o.path}`);
    expect(missing, 'operations without a scope in coordinator/access/route-scopes.ts ROUTE_SCOPES').toEqual([]);
    const wrong = ops.filter((o) => o.op['x-kiln-scope'] !== table.forOperation(o.method, o.path)!.scope).map((o) => `${o.method.toUpperCase()} ${o.path}: x-kiln-scope ${String(o.op['x-kiln-scope'])}`);
    expect(wrong).toEqual([]);
  });

  it('answers each scope on each route as the table says (403 E_SCOPE naming the missing scope, or not 403)', async () => {
    const problems: string[] = [];
    let refused = 0;
    let allowed = 0;
    for (const o of ops) {
      const row = table.forOperation(o.method, o.path);
      if (!row) continue; // reported by the test above
      for (const scope of SCOPES) {
        const r = await call(o.method, o.path, keyOf.get(scope)!);
        if (row.own) {
          // authorized by a token of its own (enrolment token, agent credential): no API key gets through
          if (r.status < 400) problems.push(`${o.method.toUpperCase()} ${o.path} with a '${scope}' key: ${r.status}, though the route takes only ${row.own}`);
          continue;
        }
        const what = `${o.method.toUpperCase()} ${o.path} with a '${scope}' key (route needs '${row.scope}')`;
        if (grants([scope], row.scope)) {
          allowed++;
          if (r.status === 403 || r.status === 401) problems.push(`${what}: ${r.status} ${r.body.detail ?? ''}`);
        } else {
          refused++;
          if (r.status !== 403) problems.push(`${what}: ${r.status}, not 403`);
          else if (r.body.code !== 'E_SCOPE' || !r.body.detail?.includes(`needs the '${row.scope}' scope`) || !r.body.detail.includes(`'only-${scope}' has ${scope}`)) {
            problems.push(`${what}: 403 without naming the scope: ${JSON.stringify(r.body)}`);
          }
        }
      }
    }
    expect(problems).toEqual([]);
    // Every scope was both allowed and refused somewhere (the table is not all one scope).
    expect(refused).toBeGreaterThan(20);
    expect(allowed).toBeGreaterThan(20);
  });

  it('keeps the agent token to the CAS and its WebSocket', async () => {
    const problems: string[] = [];
    for (const o of ops) {
      const row = table.forOperation(o.method, o.path);
      if (!row) continue;
      const r = await call(o.method, o.path, agentToken);
      if (row.own) {
        // the shared agent token is none of these routes' own tokens either
        if (r.status < 400) problems.push(`${o.method} ${o.path}: the agent token got ${r.status}, though the route takes only ${row.own}`);
        continue;
      }
      if (row.agent && (r.status === 403 || r.status === 401)) problems.push(`${o.method} ${o.path}: the agent token got ${r.status}`);
      if (!row.agent && (r.status !== 403 || r.body.code !== 'E_FORBIDDEN')) problems.push(`${o.method} ${o.path}: the agent token got ${r.status} ${r.body.code ?? ''}, not 403 E_FORBIDDEN`);
    }
    expect(problems).toEqual([]);
  });

  it('implies read from submit and cancel, and everything from admin', () => {
    expect(grants(['submit'], 'read')).toBe(true);
    expect(grants(['cancel'], 'read')).toBe(true);
    expect(grants(['submit'], 'cancel')).toBe(false);
    expect(grants(['cancel'], 'submit')).toBe(false);
    expect(grants(['read'], 'submit')).toBe(false);
    for (const s of SCOPES) expect(grants(['admin'], s)).toBe(true);
    expect(grants(['read', 'cancel'], 'admin')).toBe(false);
  });
});
