/**
 * The coordinator answers as its OpenAPI document (`/openapi.json`) says, checked
 * against a real coordinator process (port 0, real data dir) with a scripted agent and
 * builds in every state (test/helpers/api-fixtures.ts):
 *
 * - route inventory: every route the HTTP app registers (`app.routes` of createApp) and
 *   the agents' WebSocket endpoint is documented, and every documented operation is
 *   served, so a route added without its documentation fails here;
 * - security: a bearer `securitySchemes` entry, operations that need the token declare
 *   it, and no token / a wrong token gets a documented 401;
 * - generated requests: for every operation, valid requests and deliberately invalid
 *   ones derived from the document's schemas (fast-check, fixed seed), with real build
 *   ids, node names, agent names and digests most of the time; every response's status,
 *   content-type and body are checked against the document, an invalid request must not
 *   succeed, and nothing may answer 5xx;
 * - SSE (`follow=true` log routes) documented as text/event-stream with event schemas;
 *   HEAD where documented; probes and /metrics documented; the media types the kiln CLI
 *   sends documented; size limits documented and enforced with a documented 413;
 * - unknown methods on documented paths answer 405 with an Allow header.
 *
 * Every problem is collected (operation, request, status, content-type, ajv error) and
 * each test fails once with a grouped summary. KILN_CONFORMANCE_SEED and
 * KILN_CONFORMANCE_RUNS (requests per operation and kind, default 20) change the run;
 * KILN_VIOLATIONS_OUT=<prefix> writes every violation as JSON.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../coordinator/http/app.js';
import { TokenCheck } from '../../coordinator/http/auth.js';
import type { HttpDeps } from '../../coordinator/http/context.js';
import { AGENT_SOCKET_PATH, API_ROUTES, DIGEST_RE, NODE_NAME_RE, apiPath, sha256 } from '../../shared/index.js';
import { FAKE, NOWHERE, seedBuilds, type SeededBuilds } from '../helpers/api-fixtures.js';
import { startCoordinator, tempDir, type CoordinatorHandle } from '../helpers/cluster.js';
import { FakeAgent } from '../helpers/fake-agent.js';
import { excerpt, sendRaw, sendRequest, Violations, type ProbeRequest, type ProbeResponse } from '../helpers/http-probe.js';
import {
  DocValidator,
  checkResponse,
  documentedResponse,
  fillPath,
  follow,
  isJsonMedia,
  mediaMatches,
  operationsOf,
  pointerJoin,
  requestArbs,
  sseEventSchemas,
  toProbe,
  atPointer,
  type GeneratedRequest,
  type Json,
  type OpenApiDoc,
  type OperationSpec,
  type RequestContext,
} from '../helpers/openapi-requests.js';

const SEED = Number(process.env.KILN_CONFORMANCE_SEED ?? 20_261_204);
const RUNS = Number(process.env.KILN_CONFORMANCE_RUNS ?? 20);
/** Largest blob the test coordinator stores (config max_blob_bytes), so "oversize" is cheap to send. */
const MAX_BLOB_BYTES = 256 * 1024;
/** The coordinator's spec limit (coordinator/config.ts maxSpecBytes). */
const MAX_SPEC_BYTES = 4 * 1024 * 1024;
/** Response headers with meaning for clients: when the server sends one, the response should document it. */
const MEANINGFUL_HEADERS = ['location', 'link', 'etag', 'allow', 'retry-after'];
const SSE_LIMITS = { idleMs: 300, totalMs: 1500 };

function seedOf(key: string): number {
  return (SEED ^ createHash('sha256').update(key).digest().readInt32BE(0)) | 0;
}

/** `/a/{x}/b` and `/a/:y/b` as one shape: parameter names do not matter for matching. */
function shape(path: string): string {
  return path.replace(/\{[^}]+\}/g, '{}').replace(/:[A-Za-z0-9_]+(\{[^}]*\})?/g, '{}');
}

/** sha256 of zero bytes: a PUT of it without a body uploads it correctly. */
const EMPTY_BLOB_HEX = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** HttpDeps that do nothing: enough to build the app and read its routes (nothing is served). */
function inertDeps(): HttpDeps {
  const inert: unknown = new Proxy(function () {}, {
    get: (_t, prop) => (prop === 'then' ? undefined : prop === Symbol.toPrimitive ? () => 0 : inert),
    apply: () => inert,
  });
  const real: Partial<HttpDeps> = {
    tokens: new TokenCheck({ apiToken: 'inventory-api', agentToken: 'inventory-agent' }),
    defaultPlatform: 'linux/amd64',
    maxSpecBytes: MAX_SPEC_BYTES,
    maxBlobBytes: 4 * 1024 ** 3,
    isReady: () => true,
    clock: () => 0,
  };
  return new Proxy(real as HttpDeps, { get: (t, prop) => (prop in t ? t[prop as keyof HttpDeps] : inert) });
}

function fail(v: Violations, title: string, name: string): void {
  v.dump(name);
  if (v.size > 0) console.log(v.summary(title, 200));
  expect(v.size, v.summary(title)).toBe(0);
}

describe('coordinator HTTP API conforms to its OpenAPI document', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let c: CoordinatorHandle;
  let agent: FakeAgent;
  let seeded: SeededBuilds;
  let doc: OpenApiDoc;
  let ops: OperationSpec[];
  let ctx: RequestContext;
  let agentToken: string;
  const nodesOf = new Map<string, string[]>();

  const auth = () => `Bearer ${c.apiToken}`;

  beforeAll(async () => {
    dir = await tempDir('conformance');
    c = await startCoordinator({ dataDir: join(dir.path, 'data'), config: { max_blob_bytes: MAX_BLOB_BYTES, rate_limit: { per_key: 'off', per_address: 'off' } } });
    agentToken = (await readFile(c.agentTokenFile, 'utf8')).trim();
    agent = await FakeAgent.start({ coordinator: c, name: 'fake-1', labels: { ...FAKE } });
    seeded = await seedBuilds(c, { agent: true });
    for (const id of [seeded.pending, seeded.withContext, seeded.cancelled, seeded.pinned, seeded.success!, seeded.failed!]) {
      const b = await c.api<{ nodes: Array<{ name: string }> }>(apiPath.build(id));
      nodesOf.set(id, b.body.nodes.map((n) => n.name));
    }
    const res = await fetch(`${c.url}/openapi.json`);
    expect(res.status, 'GET /openapi.json').toBe(200);
    doc = (await res.json()) as OpenApiDoc;
    ops = operationsOf(doc);
    const validator = new DocValidator(doc);
    const ids = [...nodesOf.keys()];
    ctx = {
      doc,
      validator,
      real: {
        id: ids,
        node: seeded.nodes,
        name: ['fake-1', 'never-connected'],
        agent: ['fake-1'],
        digest: seeded.digests,
        cursor: ids,
      },
      bodies: {
        [`POST ${API_ROUTES.builds.template}`]: realisticSpec(),
        [`POST ${API_ROUTES.casFindMissing.template}`]: fc.record({ digests: fc.array(fc.oneof(fc.constantFrom(...seeded.digests), fc.stringMatching(DIGEST_RE)), { maxLength: 5 }) }) as fc.Arbitrary<Json>,
      },
      adjust: (r) => adjustRequest(r),
    };
    console.log(`conformance: seed ${SEED} (KILN_CONFORMANCE_SEED), ${RUNS} valid + ${RUNS} invalid requests per operation (KILN_CONFORMANCE_RUNS), ${ops.length} documented operations`);
  });

  afterAll(async () => {
    await agent?.stop();
    await c?.proc.stop();
    await dir?.cleanup();
  });

  /** Realistic specs: nodes that wait for an agent that never comes (or that the fake agent runs), small DAGs. */
  function realisticSpec(): fc.Arbitrary<Json> {
    const name = fc.stringMatching(NODE_NAME_RE).filter((n) => !n.startsWith('fail'));
    return fc
      .record({
        names: fc.uniqueArray(name, { minLength: 1, maxLength: 3 }),
        buildName: fc.option(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_. -]{0,30}$/), { nil: undefined }),
        runs: fc.boolean(),
        args: fc.dictionary(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/), fc.string({ maxLength: 10 }), { maxKeys: 2 }),
        priority: fc.option(fc.integer({ min: -1000, max: 1000 }), { nil: undefined }),
      })
      .map(({ names, buildName, runs, args, priority }) => {
        const nodes: Record<string, Json> = {};
        names.forEach((n, i) => {
          nodes[n] = {
            dockerfile_inline: 'FROM kiln/busybox:1\nRUN echo generated\n',
            labels: runs ? { ...FAKE } : { ...NOWHERE },
            build_args: args,
            ...(i > 0 ? { needs: [names[i - 1]!] } : {}),
          };
        });
        return { ...(buildName ? { name: buildName } : {}), ...(priority !== undefined ? { priority } : {}), nodes } as Json;
      });
  }

  /** Pairs a build id with one of its own node names half of the time; gives PUT /cas bytes that hash to its digest. */
  function adjustRequest(r: GeneratedRequest): GeneratedRequest {
    const p = { ...r.pathParams };
    // deterministic for a seed: real ids (new on every run) enter the hash as their index
    const ids = [...nodesOf.keys()];
    const stable = (x: string) => (ids.includes(x) ? `#${ids.indexOf(x)}` : x);
    const h = createHash('sha256')
      .update(JSON.stringify([r.op.key, r.intent, Object.entries(r.pathParams).map(([k, x]) => [k, stable(x)]), r.query.map(([k, x]) => [k, stable(x)])]))
      .digest();
    if (p.id && p.node !== undefined && nodesOf.has(p.id) && h[0]! % 2 === 0 && r.valid) {
      const names = nodesOf.get(p.id)!;
      p.node = names[h[1]! % names.length]!;
    }
    if (r.op.key === `PUT ${API_ROUTES.casBlob.template}` && r.valid) {
      // Uploads are stored only when the bytes hash to the digest: make most of them do. Without a
      // documented requestBody (reported separately) send what a client sends.
      const body = r.body ?? { contentType: 'application/octet-stream', data: Buffer.from(`conformance blob ${h.toString('hex')}\n`) };
      if (h[2]! % 3 !== 0) p.digest = sha256(typeof body.data === 'string' ? Buffer.from(body.data) : body.data);
      return { ...r, pathParams: p, body };
    }
    return { ...r, pathParams: p };
  }

  async function probe(op: OperationSpec, req: ProbeRequest, intent: string, v: Violations, raw = false): Promise<ProbeResponse> {
    const res = raw ? await sendRaw(c.url, req) : await sendRequest(c.url, req, SSE_LIMITS);
    for (const x of checkResponse(ctx, op, req, res, intent)) v.add(x);
    checkHeaders(op, req, res, intent, v);
    if (res.status >= 500) v.add({ group: 'server error (5xx)', operation: op.key, problem: `answered ${res.status}`, request: req, intent, status: res.status, contentType: res.contentType, detail: excerpt(res.text, 300) });
    return res;
  }

  function checkHeaders(op: OperationSpec, req: ProbeRequest, res: ProbeResponse, intent: string, v: Violations): void {
    const d = documentedResponse(op, res.status);
    if (!d) return;
    const documented = Object.keys((atPointer(doc, pointerJoin(d[1].at, 'headers')) as Record<string, unknown> | undefined) ?? {}).map((k) => k.toLowerCase());
    for (const hdr of MEANINGFUL_HEADERS) {
      if (res.headers[hdr] !== undefined && !documented.includes(hdr)) {
        v.add({ group: 'undocumented response header', operation: op.key, problem: `${d[0]} sends a ${hdr} header that the response does not document`, request: req, intent, status: res.status, contentType: res.contentType, detail: `${hdr}: ${excerpt(res.headers[hdr], 120)}` });
      }
    }
  }

  it('documents every route the server answers, and serves every documented one (route inventory)', async () => {
    const v = new Violations();
    const app = createApp(inertDeps());
    const served = new Map<string, { method: string; path: string }>();
    for (const r of app.routes) {
      if (r.method === 'ALL' || r.path.endsWith('*')) continue; // middleware
      served.set(`${r.method} ${shape(r.path)}`, { method: r.method, path: r.path });
    }
    const documented = new Set(ops.map((o) => `${o.method.toUpperCase()} ${shape(o.path)}`));
    for (const [key, r] of served) {
      if (!documented.has(key)) v.add({ group: 'route answered but not documented', operation: `${r.method} ${r.path}`, problem: 'the app registers this route; /openapi.json has no such operation' });
      // ... and the real server answers it (not the not-found handler)
      const target = r.path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, (_, n: string) => (n === 'digest' ? seeded.digests[0]! : n === 'id' ? seeded.pending : n === 'name' ? 'fake-1' : 'compile'));
      if (r.method === 'POST' && /\/(cancel|retry|pause|drain)$/.test(target)) continue; // do not change the seeded data here
      const res = await sendRequest(c.url, { method: r.method, target, headers: { authorization: auth() } }, SSE_LIMITS);
      if (res.status === 404 && /no route for/.test(res.text)) v.add({ group: 'route inventory', operation: `${r.method} ${r.path}`, problem: 'registered in the app but the running server does not route it', status: res.status });
    }
    // the agents' WebSocket endpoint is served by the same server (upgrade), outside the app
    const ws = await sendRaw(c.url, { method: 'GET', target: AGENT_SOCKET_PATH, headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    if (ws.status !== 401) v.add({ group: 'route inventory', operation: `GET ${AGENT_SOCKET_PATH}`, problem: `the agents' WebSocket endpoint answered an upgrade without a token with ${ws.status}, not 401`, status: ws.status });
    const namedOutOfScope = JSON.stringify([doc.info?.description ?? '', ...Object.entries(doc).filter(([k]) => k.startsWith('x-'))]).includes(AGENT_SOCKET_PATH);
    if (!documented.has(`GET ${AGENT_SOCKET_PATH}`) && !namedOutOfScope) {
      v.add({ group: 'route answered but not documented', operation: `GET ${AGENT_SOCKET_PATH}`, problem: "the agents' WebSocket endpoint (upgrade with the agent token) is not in /openapi.json: document it as a GET with a 101 response and the agent token's security, or name its path in info.description (or an x- extension) as out of scope", status: ws.status });
    }
    const servedShapes = new Set(served.keys());
    for (const o of ops) {
      const k = `${o.method.toUpperCase()} ${shape(o.path)}`;
      const headOfGet = o.method === 'head' && servedShapes.has(`GET ${shape(o.path)}`);
      if (!servedShapes.has(k) && !headOfGet && !(o.path === AGENT_SOCKET_PATH)) v.add({ group: 'documented but not served', operation: o.key, problem: 'documented, but the app registers no such route' });
    }
    fail(v, 'route inventory', 'inventory');
  });

  it('declares bearer security and answers a missing or wrong token with a documented 401', async () => {
    const v = new Violations();
    const schemes = (doc.components?.securitySchemes ?? {}) as Record<string, { type?: string; scheme?: string }>;
    const bearer = Object.keys(schemes).filter((k) => schemes[k]?.type === 'http' && schemes[k]?.scheme?.toLowerCase() === 'bearer');
    if (bearer.length === 0) v.add({ group: 'security not documented', operation: '#/components/securitySchemes', problem: `no bearer scheme (type: http, scheme: bearer) among securitySchemes (${Object.keys(schemes).join(', ') || 'none'})` });
    for (const op of ops) {
      const { valid } = requestArbs(ctx, op);
      const [sample] = fc.sample(valid, { seed: seedOf(`security ${op.key}`), numRuns: 1 });
      const base = toProbe(sample!, null);
      const declared = op.security;
      const requiresBearer = declared !== undefined && declared.length > 0 && !declared.some((r) => Object.keys(r).length === 0) && declared.every((r) => Object.keys(r).some((k) => bearer.includes(k)));
      const open = declared === undefined || declared.length === 0 || declared.some((r) => Object.keys(r).length === 0);
      const noToken = await probe(op, base, 'no Authorization header', v);
      if (noToken.status === 401) {
        if (!requiresBearer) v.add({ group: 'security not declared', operation: op.key, problem: `needs the API token (401 without it) but declares ${declared === undefined ? 'no security requirement' : `security ${JSON.stringify(declared)}`}` });
        for (const [authz, why] of [
          ['Bearer wrong-token-0123456789abcdef', 'a wrong bearer token'],
          ['Basic a2lsbjpraWxu', 'Basic instead of Bearer'],
          ['Bearer', 'Bearer without a token'],
        ] as const) {
          const res = await probe(op, { ...base, headers: { ...base.headers, authorization: authz } }, why, v);
          if (res.status !== 401) v.add({ group: 'security not enforced', operation: op.key, problem: `${why} answered ${res.status}, not 401`, request: { ...base, headers: { ...base.headers, authorization: authz } }, status: res.status });
        }
        // the agent token may only use the CAS; whatever it gets must be documented
        await probe(op, { ...base, headers: { ...base.headers, authorization: `Bearer ${agentToken}` } }, 'the agent token', v);
      } else if (!open) {
        v.add({ group: 'security declared but not required', operation: op.key, problem: `declares security ${JSON.stringify(declared)} but answered ${noToken.status} without a token`, request: base, status: noToken.status });
      }
    }
    const scheme = v.all().filter((x) => x.operation.startsWith('#'));
    const folded = new Violations();
    for (const x of scheme) folded.add(x);
    const perOp = new Violations();
    for (const x of v.all().filter((y) => !y.operation.startsWith('#'))) for (let i = 0; i < x.count; i++) perOp.add(x);
    for (const x of perOp.byOperation('per operation').all()) folded.add(x);
    fail(folded, 'security', 'security');
  });

  it('answers generated valid and invalid requests as documented', async () => {
    const v = new Violations();
    const seen = new Map<string, Map<number, number>>();
    for (const op of ops) {
      const { valid, invalid } = requestArbs(ctx, op);
      const reqs: GeneratedRequest[] = [...fc.sample(valid, { seed: seedOf(op.key), numRuns: RUNS }), ...(invalid ? fc.sample(invalid, { seed: seedOf(`invalid ${op.key}`), numRuns: RUNS }) : [])];
      const counts = new Map<number, number>();
      seen.set(op.key, counts);
      for (const r of reqs) {
        const req = toProbe(r, auth());
        // fetch resolves `.`/`..` segments (also %2E) before sending: that request is for another path
        if (new URL(req.target, c.url).pathname !== req.target.split('?')[0]) continue;
        const res = await probe(op, req, r.intent, v);
        counts.set(res.status, (counts.get(res.status) ?? 0) + 1);
        // No body is the empty blob's whole body: storing it is right.
        const emptyBlob = r.intent === 'invalid: required request body missing' && req.target.includes(EMPTY_BLOB_HEX);
        if (!r.valid && !emptyBlob && res.status >= 200 && res.status < 300) {
          v.add({ group: 'invalid request accepted', operation: op.key, problem: `${r.intent.replace(/=[^ ]*( is invalid)/, '=…$1')} → ${res.status}`, request: req, intent: r.intent, status: res.status, contentType: res.contentType, detail: excerpt(res.text, 200) });
        }
        if (r.valid && (res.status === 415 || res.status === 414 || res.status === 431 || (res.status === 400 && !r.body))) {
          v.add({ group: 'valid request refused', operation: op.key, problem: `a request valid by the document answered ${res.status}`, request: req, intent: r.intent, status: res.status, contentType: res.contentType, detail: excerpt(res.text, 300) });
        }
      }
    }
    console.log(
      'statuses seen per operation:\n' +
        [...seen]
          .map(([k, m]) => `  ${k}: ${[...m].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}x${n}`).join(' ')}`)
          .join('\n'),
    );
    fail(v, 'generated requests', 'generated');
  });

  it('documents the log streams as text/event-stream with their events, and the streams match', async () => {
    const v = new Violations();
    const sseOps = ops.filter((o) => o.method === 'get' && /\/logs$/.test(o.path));
    if (sseOps.length === 0) v.add({ group: 'SSE not documented', operation: 'GET …/logs', problem: 'no log operations documented' });
    for (const op of sseOps) {
      const ok = op.responses['200'];
      const media = ok?.content?.find((m) => m.mediaType === 'text/event-stream');
      if (!media) {
        v.add({ group: 'SSE not documented', operation: op.key, problem: `200 does not document text/event-stream (documented: ${ok?.content?.map((m) => m.mediaType).join(', ') ?? 'nothing'})` });
        continue;
      }
      if (!op.params.some((p) => p.name === 'follow' && p.in === 'query')) v.add({ group: 'SSE not documented', operation: op.key, problem: 'no `follow` query parameter documented' });
      if (!sseEventSchemas(doc, media)) {
        v.add({
          group: 'SSE events not described',
          operation: op.key,
          problem:
            'text/event-stream has no event schema: expected the events (log {node,text} with id, status {node,state,attempt}, end {state}) as `itemSchema` (OpenAPI 3.2 style), an `x-sse-events: {log: {schema}, status: {schema}, end: {schema}}` extension, or a oneOf schema',
          detail: `media type object: ${excerpt(JSON.stringify(atPointer(doc, media.at)), 200)}`,
        });
      }
      if (!op.params.some((p) => p.in === 'header' && p.name.toLowerCase() === 'last-event-id')) v.add({ group: 'SSE not documented', operation: op.key, problem: 'the Last-Event-ID request header (resume after a reconnect) is not documented as a header parameter' });
      // real streams: a finished build ends; a waiting one is read until its first events
      const cases: Array<[string, string]> = [
        [seeded.success!, 'package'],
        [seeded.failed!, 'fail-build'],
        [seeded.pinned, 'keep'],
      ];
      for (const [id, node] of cases) {
        const target = `${fillPath(op.path, { id, node })}?follow=true`;
        const req = { method: 'GET', target, headers: { authorization: auth(), accept: 'text/event-stream' } };
        // hang guards only: a finished build's stream ends by itself; a waiting one is dropped after its first events
        const res = await sendRequest(c.url, req, id === seeded.pinned ? SSE_LIMITS : { idleMs: 5000, totalMs: 30_000 });
        for (const x of checkResponse(ctx, op, req, res, 'follow=true on a real build')) v.add(x);
        if (res.status === 200 && res.mediaType !== 'text/event-stream') v.add({ group: 'SSE not served', operation: op.key, problem: `follow=true answered ${res.mediaType}`, request: req, status: res.status, contentType: res.contentType });
        if (res.status === 200 && id !== seeded.pinned && !(res.events ?? []).some((e) => e.event === 'end')) v.add({ group: 'SSE stream incomplete', operation: op.key, problem: 'the stream of a finished build sent no `end` event', request: req, detail: excerpt(res.text, 300) });
      }
    }
    // a cursor in the compact form (bit 0: the first node's log received whole) resumes after that node's log
    const whole = await c.api(apiPath.buildLogs(seeded.success!));
    const after = await fetch(`${c.url}${apiPath.buildLogs(seeded.success!)}?cursor=${encodeURIComponent('~AQ~')}`, { headers: { authorization: auth() } });
    if (typeof whole.body !== 'string' || whole.body.length === 0) v.add({ group: 'log cursor', operation: `GET ${API_ROUTES.buildLogs.template}`, problem: 'the finished build has no log text' });
    if (after.status !== 200 || (await after.text()) !== '') v.add({ group: 'log cursor', operation: `GET ${API_ROUTES.buildLogs.template}`, problem: `a compact cursor marking its only node complete answered ${after.status} with text` });
    fail(v, 'log streams', 'sse');
  });

  it('documents HEAD, the probes, /metrics, the media types the kiln CLI sends, and size limits', async () => {
    const v = new Violations();
    const byKey = new Map(ops.map((o) => [o.key, o]));
    // probes and metrics: documented, public, and answering as documented
    for (const [path, media] of [
      ['/livez', 'text/plain'],
      ['/readyz', 'text/plain'],
      ['/healthz', 'text/plain'],
      ['/metrics', 'text/plain'],
      ['/openapi.json', 'application/json'],
    ] as const) {
      const op = byKey.get(`GET ${path}`);
      if (!op) {
        v.add({ group: 'probe or metrics not documented', operation: `GET ${path}`, problem: `not in /openapi.json (it answers 200 ${media} without a token)` });
        continue;
      }
      const res = await probe(op, { method: 'GET', target: path, headers: {} }, 'no token (public)', v);
      if (res.status !== 200) v.add({ group: 'probe or metrics not public', operation: op.key, problem: `answered ${res.status} without a token`, status: res.status });
      if (path === '/readyz' || path === '/healthz') {
        if (!op.responses['503']) v.add({ group: 'probe or metrics not documented', operation: op.key, problem: 'the 503 (not ready: starting or shutting down) is not documented' });
      }
    }
    // HEAD: documented where an operation says it answers HEAD, and answering as documented
    for (const op of ops) {
      if (!/\bHEAD\b/.test(`${op.summary} ${op.description}`)) continue;
      const head = byKey.get(`HEAD ${op.path}`);
      if (!head) {
        v.add({ group: 'HEAD not documented', operation: `HEAD ${op.path}`, problem: `${op.key} says "${excerpt(op.summary, 80)}" but there is no head operation` });
        continue;
      }
    }
    for (const op of ops.filter((o) => o.method === 'head')) {
      const { valid, invalid } = requestArbs(ctx, op);
      for (const r of [...fc.sample(valid, { seed: seedOf(op.key), numRuns: RUNS }), ...(invalid ? fc.sample(invalid, { seed: seedOf(`invalid ${op.key}`), numRuns: 4 }) : [])]) await probe(op, toProbe(r, auth()), r.intent, v);
    }
    // what the kiln CLI sends must be documented (cli/commands.ts)
    const clientSends: Array<[string, string[], string]> = [
      [`POST ${API_ROUTES.builds.template}`, ['application/json'], 'kiln submit sends the spec as application/json'],
      [`PUT ${API_ROUTES.casBlob.template}`, ['application/x-tar', 'application/octet-stream'], 'kiln submit uploads contexts as application/x-tar; agents upload outputs'],
      [`POST ${API_ROUTES.casFindMissing.template}`, ['application/json'], 'kiln submit asks which contexts are missing'],
    ];
    for (const [key, types, why] of clientSends) {
      const op = byKey.get(key);
      if (!op) continue;
      if (!op.body) {
        v.add({ group: 'request body not documented', operation: key, problem: `no requestBody documented (${why})` });
        continue;
      }
      const documentedTypes = op.body.media.map((m) => m.mediaType);
      if (!types.some((t) => documentedTypes.some((d) => mediaMatches(d, t)))) v.add({ group: 'request media type not documented', operation: key, problem: `requestBody documents ${documentedTypes.join(', ')}; ${why} (${types.join(' or ')})` });
    }
    // nullable query parameters cannot be sent
    for (const op of ops) {
      for (const p of op.params.filter((x) => x.in === 'query' && x.schema)) {
        const [s] = follow(doc, p.schema!);
        if (Array.isArray(s?.type) && s.type.includes('null')) v.add({ group: 'parameter schema', operation: op.key, problem: `query parameter '${p.name}' is typed ${JSON.stringify(s.type)}: a query string cannot carry null (drop "null")` });
      }
    }
    // size limits: documented, and enforced with a documented 413
    const oversize: Array<[string, () => ProbeRequest, number, string]> = [
      [
        `POST ${API_ROUTES.builds.template}`,
        () => ({ method: 'POST', target: apiPath.builds(), headers: { authorization: auth(), 'content-type': 'application/json' }, body: JSON.stringify({ nodes: { big: { dockerfile_inline: `FROM kiln/busybox:1\n#${'x'.repeat(MAX_SPEC_BYTES)}` } } }) }),
        MAX_SPEC_BYTES,
        'the spec limit (4 MiB)',
      ],
      [
        `PUT ${API_ROUTES.casBlob.template}`,
        () => {
          const bytes = Buffer.alloc(MAX_BLOB_BYTES + 1, 7);
          return { method: 'PUT', target: apiPath.casBlob(sha256(bytes)), headers: { authorization: auth(), 'content-type': 'application/octet-stream' }, body: bytes };
        },
        MAX_BLOB_BYTES,
        'the blob limit (config max_blob_bytes)',
      ],
    ];
    for (const [key, make, limit, what] of oversize) {
      const op = byKey.get(key);
      if (!op) continue;
      const req = make();
      const res = await probe(op, req, `oversized body (${what} is ${limit} bytes)`, v, true);
      if (res.status !== 413) v.add({ group: 'size limit not enforced', operation: key, problem: `a body over ${what} answered ${res.status}, not 413`, request: req, status: res.status, contentType: res.contentType, detail: excerpt(res.text, 200) });
      if (!op.responses['413']) v.add({ group: 'size limit not documented', operation: key, problem: 'answers 413 for an oversized body but documents no 413' });
      const raw = op.raw as Record<string, unknown>;
      const rb = op.body ? (follow(doc, pointerJoin(op.at, 'requestBody'))[0] ?? {}) : {};
      const stated = [raw, rb, ...(op.body?.media.map((m) => atPointer(doc, m.at) as Record<string, unknown>) ?? [])].some((o) => Object.entries(o ?? {}).some(([k, x]) => k.startsWith('x-') && /max|limit|size/i.test(k) && typeof x === 'number'));
      const inSchema = (op.body?.media ?? []).some((m) => m.schema && typeof (follow(doc, m.schema)[0] as Record<string, unknown> | undefined)?.maxLength === 'number' && !isJsonMedia(m.mediaType));
      const inText = new RegExp(`\\b(${limit}|${limit / 1024} ?KiB|${limit / 1024 / 1024} ?MiB)\\b`).test(`${op.description} ${JSON.stringify(op.responses['413'] ? atPointer(doc, op.responses['413'].at) : '')}`) || /max_blob_bytes/.test(`${op.description}`);
      if (!stated && !inSchema && !inText) v.add({ group: 'size limit not documented', operation: key, problem: `the limit (${what}) is not stated: give it as e.g. \`x-max-bytes\` on the requestBody, maxLength of a binary body schema, or in the description / 413 description` });
    }
    // array limits in JSON bodies (maxItems): one over is refused with a documented 4xx
    for (const op of ops) {
      for (const m of (op.body?.media ?? []).filter((x) => x.schema && isJsonMedia(x.mediaType))) {
        const [s, sAt] = follow(doc, m.schema!);
        for (const [prop, ps] of Object.entries((s?.properties as Record<string, Record<string, unknown>> | undefined) ?? {})) {
          if (typeof ps.maxItems !== 'number' || ps.maxItems > 1_000_000) continue;
          const item = prop === 'digests' ? seeded.digests[0]! : 'x';
          const body = JSON.stringify({ [prop]: Array.from({ length: ps.maxItems + 1 }, () => item) });
          const req = { method: op.method.toUpperCase(), target: fillPath(op.path, {}), headers: { authorization: auth(), 'content-type': m.mediaType }, body };
          const res = await probe(op, req, `${prop}: maxItems ${ps.maxItems} + 1`, v, true);
          if (res.status < 400 || res.status >= 500) v.add({ group: 'size limit not enforced', operation: op.key, problem: `${prop} with maxItems+1 (${ps.maxItems + 1}) items answered ${res.status}`, request: { ...req, body: `${body.slice(0, 100)}…` }, status: res.status, detail: `schema at ${sAt}` });
        }
      }
    }
    fail(v, 'documentation of HEAD, probes, media types and limits', 'docs');
  });

  it('answers unknown methods on documented paths with 405 and an Allow header', async () => {
    const v = new Violations();
    const byPath = new Map<string, Set<string>>();
    for (const o of ops) {
      const s = byPath.get(o.path) ?? new Set<string>();
      s.add(o.method.toUpperCase());
      byPath.set(o.path, s);
    }
    for (const [path, methods] of byPath) {
      const target = fillPath(path, { id: seeded.pending, node: 'compile', name: 'fake-1', digest: seeded.digests[0]! });
      for (const m of ['GET', 'POST', 'PUT', 'DELETE', 'PATCH']) {
        if (methods.has(m)) continue;
        const req: ProbeRequest = { method: m, target, headers: { authorization: auth() } };
        const res = await sendRequest(c.url, req, SSE_LIMITS);
        const allowed = [...methods, ...(methods.has('GET') ? ['HEAD'] : [])];
        if (res.status !== 405) v.add({ group: 'unknown method not 405', operation: path, problem: `${m} answered ${res.status} (want 405, Allow: ${allowed.join(', ')})`, request: req, status: res.status, contentType: res.contentType, detail: excerpt(res.text, 200) });
        else {
          const allow = (res.headers.allow ?? '').split(',').map((x) => x.trim().toUpperCase()).filter(Boolean);
          if (!allowed.every((a) => allow.includes(a))) v.add({ group: 'unknown method not 405', operation: path, problem: `${m}: 405 without a complete Allow header (got '${res.headers.allow ?? ''}', want ${allowed.join(', ')})`, request: req, status: res.status });
          if (res.mediaType !== 'application/problem+json') v.add({ group: 'unknown method not 405', operation: path, problem: `${m}: 405 is ${res.mediaType ?? 'untyped'}, not application/problem+json`, request: req, status: res.status });
        }
      }
    }
    fail(v.byOperation('unknown method on a documented path'), 'unknown methods', 'methods');
  });
});

