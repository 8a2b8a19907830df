/**
 * Pieces shared by the OpenAPI route definitions: the security requirement, the error
 * responses each operation documents (problem+json), the path and query parameters with
 * the exact shapes the server validates, and the guards that run before validation on
 * routes with a body (media type -> 415, size -> 413 from Content-Length, or while a
 * chunked body streams in).
 *
 * The document is generated from these same objects, so what it says is what the
 * server checks.
 */
import type { IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from '@hono/zod-openapi';
import { AGENT_NAME_PARAM_RE, BUILD_ID_RE, BUILD_ID_RULE, DIGEST_RE, NAME_RE, NAME_RULE, Problem } from '../../shared/index.js';
import type { RouteScopeTable } from '../access/route-scopes.js';
import type { AppEnv } from './context.js';
import { problemResponse } from './problem.js';

/** Name of the API token's bearer security scheme in `components.securitySchemes`. */
export const BEARER = 'bearerAuth';
/** Name of the agent token's bearer scheme (the agents' WebSocket and the CAS routes). */
export const AGENT_BEARER = 'agentToken';
/** Operations that need the API token. */
export const SECURED: Array<Record<string, string[]>> = [{ [BEARER]: [] }];
/** Operations either token may use (the CAS: agents read contexts and inputs, upload outputs). */
export const SECURED_OR_AGENT: Array<Record<string, string[]>> = [{ [BEARER]: [] }, { [AGENT_BEARER]: [] }];
/** Operations anyone may call (probes, metrics, the document itself). */
export const PUBLIC: Array<Record<string, string[]>> = [];

export function problemContent(description: string) {
  return { description, content: { 'application/problem+json': { schema: Problem } } };
}

/** The 429 of a rate-limited operation, with its Retry-After header. */
function rateLimited() {
  return { ...problemContent(ERROR_TEXT[429]!), headers: { 'retry-after': { description: 'Seconds until the key or address may call again', schema: { type: 'integer' as const, minimum: 1 } } } };
}

const ERROR_TEXT: Record<number, string> = {
  400: 'The request is invalid (a parameter, header or body failed validation); `errors` name the fields',
  401: 'No API token, or a wrong one (send `Authorization: Bearer <token>`)',
  403: 'The key lacks the scope this route needs (`x-kiln-scope`; `code` E_SCOPE names it), or the agent token is used outside the CAS',
  404: 'Not found',
  409: 'Conflicts with the current state',
  413: 'The body is larger than allowed',
  415: 'The body has a media type this route does not take',
  429: 'Too many requests from this key or address: wait `Retry-After` seconds (nothing was done)',
  500: 'Internal error (see the coordinator log)',
  503: 'The coordinator is starting or shutting down',
  507: 'The artifact store is full (nothing partial was kept)',
};

/**
 * Error responses of an operation: the statuses given (with an optional more precise
 * description), plus 500, which any operation can answer. Secured operations also list
 * 401, 403 (a scope; `agentToo` only documents that the agent token may call it too)
 * and 429 (rate limits).
 */
export function errors(statuses: Array<number | [number, string]>, opts: { secured?: boolean; agentToo?: boolean } = {}) {
  const out: Record<number, ReturnType<typeof problemContent> & { headers?: object }> = {};
  const add = (s: number, d?: string) => (out[s] = problemContent(d ?? ERROR_TEXT[s] ?? 'Error'));
  if (opts.secured !== false) {
    add(401);
    add(403);
    out[429] = rateLimited();
  }
  for (const s of statuses) Array.isArray(s) ? add(s[0], s[1]) : add(s);
  add(500);
  return out;
}

export const BuildId = z.string().regex(BUILD_ID_RE, `must be ${BUILD_ID_RULE}`).openapi({ example: 'b-01kbx2f3q4000-7d2k9x4m' });
export const NodeName = z.string().regex(NAME_RE, `must be a node name (${NAME_RULE})`).openapi({ example: 'compile' });
export const AgentName = z.string().regex(AGENT_NAME_PARAM_RE, `must be an agent name (${NAME_RULE})`).openapi({ example: 'builder-1' });

export const BuildIdParams = z.object({ id: BuildId });
export const NodeParams = z.object({ id: BuildId, node: NodeName });
export const AgentParams = z.object({ name: AgentName });
export const DigestParams = z.object({
  digest: z.string().regex(DIGEST_RE, 'must be sha256:<64 lowercase hex digits>').openapi({ example: `sha256:${'0'.repeat(64)}` }),
});

/** A non-negative integer in a query string (no `null`, no exponent, at most 2^53 - 1). */
export function countQuery(description: string) {
  return z
    .string()
    .regex(/^(0|[1-9][0-9]{0,15})$/, 'must be a non-negative integer')
    .transform(Number)
    .refine((n) => Number.isSafeInteger(n), `must be at most ${Number.MAX_SAFE_INTEGER}`)
    .optional()
    .openapi({ type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description });
}

/** The media type of a request, without parameters (`application/json; charset=utf-8` -> `application/json`). */
export function mediaType(header: string | undefined): string | null {
  if (!header) return null;
  return header.split(';')[0]!.trim().toLowerCase() || null;
}

/**
 * Refuses a body whose Content-Type is not one of `types` (415, naming the accepted ones).
 * With `optional`, a request without a body (no Content-Length or 0, no Transfer-Encoding)
 * needs no Content-Type. With `absentIsBytes`, a body without a Content-Type is taken as
 * application/octet-stream (RFC 9110 8.3 lets a recipient assume that).
 */
export function requireMediaType(types: readonly string[], opts: { optional?: boolean; absentIsBytes?: boolean } = {}): MiddlewareHandler<AppEnv> {
  return async function requireMediaType(c, next) {
    const type = mediaType(c.req.header('content-type'));
    if (type === null && opts.absentIsBytes) return next();
    if (type === null && opts.optional) {
      const length = c.req.header('content-length');
      const chunked = c.req.header('transfer-encoding');
      if ((length === undefined || length === '0') && !chunked) return next();
    }
    if (type === null || !types.includes(type)) {
      const got = type === null ? 'no Content-Type' : `Content-Type ${type}`;
      return problemResponse(c, 415, 'E_MEDIA_TYPE', `${got} is not taken here; send ${types.join(' or ')}`);
    }
    return next();
  };
}

const limitsByApp = new WeakMap<object, Map<string, number>>();

/**
 * Records the body limit a route enforces (`post /api/v1/builds` -> bytes); the document
 * states it as `x-max-bytes` on the operation's request body (see app.ts).
 */
export function documentBodyLimit(app: object, operation: string, bytes: number): void {
  let m = limitsByApp.get(app);
  if (!m) limitsByApp.set(app, (m = new Map()));
  m.set(operation, bytes);
}

/** The body limits recorded for `app`. */
export function bodyLimitsOf(app: object): ReadonlyMap<string, number> {
  return limitsByApp.get(app) ?? new Map();
}

/** The Node request under @hono/node-server (its `env.incoming` binding); undefined under `app.fetch` (tests). */
export function nodeIncoming(c: Context): IncomingMessage | undefined {
  return (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
}

/**
 * Refuses a body larger than `maxBytes` (413), before anything parses it. Under
 * @hono/node-server a body with a Content-Length is judged from the header alone (Node's
 * parser never delivers more than it states), without building a web Request and its
 * stream, so the route can read the body straight from the socket (`c.req.arrayBuffer()`
 * does). A chunked body (no length) is counted while it streams in (hono's bodyLimit).
 */
export function limitBody(maxBytes: number, what: string): MiddlewareHandler<AppEnv> {
  const tooLarge = (c: Context) => problemResponse(c, 413, 'E_TOO_LARGE', `${what} is larger than ${maxBytes} bytes`);
  const streaming = bodyLimit({ maxSize: maxBytes, onError: tooLarge });
  return async function limitBody(c, next) {
    const incoming = nodeIncoming(c);
    if (incoming) {
      if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
      const length = incoming.headers['content-length'];
      if (length !== undefined && incoming.headers['transfer-encoding'] === undefined) return parseInt(length, 10) > maxBytes ? tooLarge(c) : next();
    }
    return streaming(c, next);
  };
}

/**
 * States each operation's scope (access/route-scopes.ts) as `x-kiln-scope`, and
 * `x-kiln-agent: true` where the agent credential may call it too. Public operations
 * (probes, metrics, this document) have neither.
 */
export function withScopes<D extends { paths?: unknown }>(doc: D, table: RouteScopeTable): D {
  const paths = (doc.paths ?? {}) as Record<string, Record<string, { security?: unknown[] } & Record<string, unknown>>>;
  for (const [path, ops] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(ops)) {
      if (typeof op !== 'object' || op === null || (Array.isArray(op.security) && op.security.length === 0)) continue;
      const row = table.forOperation(method, path);
      if (!row) continue;
      op['x-kiln-scope'] = row.scope;
      if (row.agent) op['x-kiln-agent'] = true;
    }
  }
  return doc;
}
