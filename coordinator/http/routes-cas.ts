/**
 * Content-addressed storage routes: `PUT|HEAD|GET /api/v1/cas/sha256:<hex>` and
 * `POST /api/v1/cas/find-missing` (API_ROUTES.casBlob, API_ROUTES.casFindMissing).
 *
 * PUT streams the body into the artifact store while hashing it and keeps it only if it
 * hashes to the digest in the URL (201 when stored, 200 when it was already there:
 * idempotent). find-missing answers from the in-memory index, so clients upload only what
 * the store lacks; its body is bounded while it streams (at most MAX_FIND_MISSING digests'
 * worth) before it is parsed. The API token and the agent token (which uploads outputs)
 * may use them.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, DIGEST_RE, KilnError, MAX_FIND_MISSING, type Digest } from '../../shared/index.js';
import type { AppEnv, HttpDeps } from './context.js';
import type { MiddlewareHandler } from 'hono';
import { DigestParams, SECURED_OR_AGENT, documentBodyLimit, errors, limitBody, requireMediaType } from './openapi-common.js';
import { problemResponse } from './problem.js';

/** Media types a blob may be uploaded as (the bytes are stored as they are). */
export const BLOB_MEDIA_TYPES = ['application/octet-stream', 'application/x-tar'] as const;

const Stored = z.object({ digest: z.string().regex(DIGEST_RE), size: z.number().int().nonnegative(), created: z.boolean() });
const Blob = z.string().openapi({ type: 'string', format: 'binary' });
const blobHeaders = {
  'content-length': { description: 'Size of the blob in bytes', schema: { type: 'integer' as const, minimum: 0 } },
  etag: { description: 'The digest, quoted', schema: { type: 'string' as const } },
};

/** `/api/v1/cas/find-missing` matches the `{digest}` routes too: other methods on it get 405, not a digest error. */
const notFindMissing: MiddlewareHandler<AppEnv> = async function notFindMissing(c, next) {
  if (c.req.param('digest') === 'find-missing') {
    return problemResponse(c, 405, 'E_METHOD', `${c.req.method} is not allowed on ${c.req.path}; allowed: POST`, undefined, { allow: 'POST' });
  }
  return next();
};

function putBlobRoute(maxBlobBytes: number) {
  return createRoute({
    method: 'put',
    path: API_ROUTES.casBlob.template,
    summary: 'Upload a blob; stored only if the bytes hash to the digest',
    description: `A body without Content-Type is taken as application/octet-stream. At most ${maxBlobBytes} bytes (config max_blob_bytes). A blob already stored is not read again (200).`,
    security: SECURED_OR_AGENT,
    middleware: [notFindMissing, requireMediaType(BLOB_MEDIA_TYPES, { absentIsBytes: true })],
    request: {
      params: DigestParams,
      body: { required: true, content: Object.fromEntries(BLOB_MEDIA_TYPES.map((t) => [t, { schema: Blob }])) },
    },
    responses: {
      200: { description: 'Already stored', content: { 'application/json': { schema: Stored } } },
      201: { description: 'Stored', content: { 'application/json': { schema: Stored } } },
      ...errors([[400, 'Bad digest, no body, bad Content-Length, or the bytes do not hash to the digest'], [413, `The blob is larger than ${maxBlobBytes} bytes (max_blob_bytes)`], 415, 507], { agentToo: true }),
    },
  });
}

const getBlob = createRoute({
  method: 'get',
  path: API_ROUTES.casBlob.template,
  summary: 'Download a blob',
  security: SECURED_OR_AGENT,
  middleware: [notFindMissing],
  request: { params: DigestParams },
  responses: {
    200: { description: 'The blob', headers: blobHeaders, content: { 'application/octet-stream': { schema: Blob } } },
    ...errors([400, [404, 'No such blob']], { agentToo: true }),
  },
});

const FindMissingBody = z.strictObject({
  digests: z.array(z.string().regex(DIGEST_RE, 'must be sha256:<64 lowercase hex digits>')).max(MAX_FIND_MISSING),
});
/** A digest is 71 characters; with quotes and a comma 74. */
const FIND_MISSING_MAX_BYTES = MAX_FIND_MISSING * 80 + 1024;

const findMissing = createRoute({
  method: 'post',
  path: API_ROUTES.casFindMissing.template,
  summary: 'Which of these digests the store does not hold (upload only those)',
  description: `At most ${MAX_FIND_MISSING} digests (a body of at most ${FIND_MISSING_MAX_BYTES} bytes).`,
  security: SECURED_OR_AGENT,
  middleware: [requireMediaType(['application/json']), limitBody(FIND_MISSING_MAX_BYTES, 'the find-missing body')],
  request: { body: { required: true, content: { 'application/json': { schema: FindMissingBody } } } },
  responses: {
    200: {
      description: 'The missing digests, in the order asked, without duplicates',
      content: { 'application/json': { schema: z.object({ missing: z.array(z.string().regex(DIGEST_RE)) }) } },
    },
    ...errors([[400, 'Not a JSON object `{digests: [sha256:...]}`'], 413, 415], { agentToo: true }),
  },
});

export function registerCasRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  documentBodyLimit(app, `put ${API_ROUTES.casBlob.template}`, deps.maxBlobBytes);
  documentBodyLimit(app, `post ${API_ROUTES.casFindMissing.template}`, FIND_MISSING_MAX_BYTES);
  app.openapi(findMissing, (c) => {
    const { digests } = c.req.valid('json');
    return c.json({ missing: deps.cas.findMissing(digests as Digest[]) }, 200);
  });

  app.openapi(putBlobRoute(deps.maxBlobBytes), async (c) => {
    const digest = c.req.valid('param').digest as Digest;
    const lengthHeader = c.req.header('content-length');
    const expected = lengthHeader !== undefined ? Number(lengthHeader) : undefined;
    if (expected !== undefined && !Number.isSafeInteger(expected)) throw new KilnError('E_INVALID', `bad Content-Length '${lengthHeader}'`);
    if (expected === undefined && !c.req.header('transfer-encoding')) throw new KilnError('E_INVALID', 'a body is required: send the blob (with Content-Length)');
    if (expected !== undefined && deps.cas.has(digest)) {
      // Stored already (the bytes are not read again): a different length cannot be this blob.
      const stored = await deps.cas.store.size(digest);
      if (stored !== null && stored !== expected) throw new KilnError('E_DIGEST_MISMATCH', `Content-Length ${expected} is not the size of ${digest} (${stored} bytes)`);
    }
    // Under @hono/node-server read the request socket itself (no web-stream conversion);
    // otherwise (app.fetch in tests) the web Request's body.
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    const body = incoming ? null : c.req.raw.body;
    const source: AsyncIterable<Uint8Array> = incoming ?? (body ? Readable.fromWeb(body as never) : Readable.from([]));
    const r = await deps.cas.put(digest, source, expected);
    return c.json({ digest, size: r.size, created: r.created }, r.created ? 201 : 200);
  });

  app.openapi(getBlob, async (c) => {
    const digest = c.req.valid('param').digest as Digest;
    // The index answers whether it exists; the length comes from the store itself, so a
    // blob damaged on disk is sent as it is and the client's digest check catches it.
    const size = deps.cas.has(digest) ? await deps.cas.store.size(digest) : null;
    if (size === null) throw new KilnError('E_NOT_FOUND', `blob ${digest} not found`);
    const headers = { 'content-type': 'application/octet-stream', 'content-length': String(size), etag: `"${digest}"` };
    if (c.req.method === 'HEAD') return new Response(null, { status: 200, headers }) as never;
    const body = await deps.cas.read(digest);
    // Served by @hono/node-server: pipe the file straight into the socket (no web-stream
    // conversion on the hot path); otherwise (tests calling app.fetch) as a web Response.
    const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
    if (outgoing) {
      outgoing.writeHead(200, headers);
      body.on('error', (err) => outgoing.destroy(err));
      body.pipe(outgoing);
      return RESPONSE_ALREADY_SENT as never;
    }
    return new Response(Readable.toWeb(body) as ReadableStream, { status: 200, headers }) as never;
  });

  // HEAD is served by the GET handler (hono routes HEAD to GET); documented on its own.
  app.openAPIRegistry.registerPath({
    method: 'head',
    path: API_ROUTES.casBlob.template,
    summary: 'Does the store hold this blob, and its size (Content-Length)',
    security: SECURED_OR_AGENT,
    request: { params: DigestParams },
    responses: {
      200: { description: 'Stored; Content-Length is its size', headers: blobHeaders },
      ...errors([400, [404, 'No such blob']], { agentToo: true }),
    },
  });
}
