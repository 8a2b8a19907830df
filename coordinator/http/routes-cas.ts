/**
 * Content-addressed storage routes: `PUT|HEAD|GET /api/v1/cas/sha256:<hex>` and
 * `POST /api/v1/cas/find-missing`.
 *
 * PUT streams the body into the artifact store while hashing it and keeps it only if it
 * hashes to the digest in the URL (201 when stored, 200 when it was already there:
 * idempotent). find-missing answers from the in-memory index, so clients upload only what
 * the store lacks. The API token and the agent token (which uploads outputs) may use them.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import { DIGEST_RE, KilnError, type Digest } from '../../shared/index.js';
import type { AppEnv, HttpDeps } from './context.js';
import { problemContent } from './openapi-common.js';

const DigestParams = z.object({
  digest: z.string().regex(DIGEST_RE, 'must be sha256:<64 lowercase hex digits>'),
});

const Stored = z.object({ digest: z.string(), size: z.number().int(), created: z.boolean() });

const putBlob = createRoute({
  method: 'put',
  path: '/api/v1/cas/{digest}',
  summary: 'Upload a blob; stored only if the bytes hash to the digest',
  request: { params: DigestParams },
  responses: {
    200: { description: 'Already stored', content: { 'application/json': { schema: Stored } } },
    201: { description: 'Stored', content: { 'application/json': { schema: Stored } } },
    400: problemContent('Digest mismatch or bad digest'),
    413: problemContent('Too large'),
  },
});

const getBlob = createRoute({
  method: 'get',
  path: '/api/v1/cas/{digest}',
  summary: 'Download a blob (HEAD: does it exist, and its size)',
  request: { params: DigestParams },
  responses: {
    200: { description: 'The blob', content: { 'application/octet-stream': { schema: z.string() } } },
    404: problemContent('No such blob'),
  },
});

/** Most digests one find-missing request may ask about. */
export const MAX_FIND_MISSING = 100_000;

const findMissing = createRoute({
  method: 'post',
  path: '/api/v1/cas/find-missing',
  summary: 'Which of these digests the store does not hold (upload only those)',
  request: {
    body: {
      required: true,
      content: { 'application/json': { schema: z.object({ digests: z.array(z.string()).max(MAX_FIND_MISSING) }) } },
    },
  },
  responses: {
    200: { description: 'The missing digests, in the order asked, without duplicates', content: { 'application/json': { schema: z.object({ missing: z.array(z.string()) }) } } },
    400: problemContent('Not a list of sha256 digests'),
  },
});

export function registerCasRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  app.openapi(findMissing, (c) => {
    const { digests } = c.req.valid('json');
    for (let i = 0; i < digests.length; i++) {
      if (!DIGEST_RE.test(digests[i]!)) throw new KilnError('E_INVALID', `digests.${i}: '${String(digests[i]).slice(0, 80)}' is not sha256:<64 lowercase hex digits>`);
    }
    return c.json({ missing: deps.cas.findMissing(digests as Digest[]) }, 200);
  });

  app.openapi(putBlob, async (c) => {
    const digest = c.req.valid('param').digest as Digest;
    const lengthHeader = c.req.header('content-length');
    const expected = lengthHeader !== undefined ? Number(lengthHeader) : undefined;
    if (expected !== undefined && !Number.isSafeInteger(expected)) throw new KilnError('E_INVALID', `bad Content-Length '${lengthHeader}'`);
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
}
