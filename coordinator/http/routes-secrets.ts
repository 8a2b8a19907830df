/**
 * Build-secret routes (issue 12), for admins: list the secrets (names, sizes, versions,
 * times; never values), set one (the body is the value, raw bytes), remove one. The value
 * is never echoed, logged or put in an error message. Scope: `admin` for all three.
 */
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, KilnError, MAX_SECRET_BYTES, SECRET_NAME_RE, SECRET_NAME_RULE, SecretList, SecretView } from '../../shared/index.js';
import type { SecretInfo, SecretStore } from '../secrets/secret-store.js';
import type { AppEnv, HttpDeps } from './context.js';
import { SECURED, documentBodyLimit, errors, limitBody, requireMediaType } from './openapi-common.js';

const SecretParams = z.object({ name: z.string().regex(SECRET_NAME_RE, `must be a secret name (${SECRET_NAME_RULE})`).openapi({ example: 'npm_token' }) });
const Value = z.string().openapi({ format: 'binary' });

const listSecrets = createRoute({
  method: 'get',
  path: API_ROUTES.secrets.template,
  summary: 'Build secrets the coordinator holds: names, sizes, versions and times (never values); admin only',
  security: SECURED,
  responses: { 200: { description: 'The secrets, by name', content: { 'application/json': { schema: SecretList } } }, ...errors([]) },
});

const putSecret = createRoute({
  method: 'put',
  path: API_ROUTES.secret.template,
  summary: 'Set a build secret (the body is its value); admin only',
  description: `Stored encrypted (AES-256-GCM) with the coordinator's secrets key; 1 to ${MAX_SECRET_BYTES} bytes. Answered once durable. Nodes name it with \`secrets: [NAME]\` and mount it with \`RUN --mount=type=secret,id=NAME\`.`,
  security: SECURED,
  middleware: [requireMediaType(['application/octet-stream'], { absentIsBytes: true })],
  request: { params: SecretParams, body: { required: true, content: { 'application/octet-stream': { schema: Value } } } },
  responses: {
    200: { description: 'Replaced', content: { 'application/json': { schema: SecretView } } },
    201: { description: 'Created', content: { 'application/json': { schema: SecretView } } },
    ...errors([[400, 'Bad name, or an empty value'], [409, 'The coordinator holds the most secrets it keeps'], [413, `The value is larger than ${MAX_SECRET_BYTES} bytes`], 415]),
  },
});

const deleteSecret = createRoute({
  method: 'delete',
  path: API_ROUTES.secret.template,
  summary: 'Remove a build secret; admin only',
  security: SECURED,
  request: { params: SecretParams },
  responses: { 204: { description: 'Removed (durable when answered)' }, ...errors([400, [404, 'No secret of that name']]) },
});

function view(s: SecretInfo) {
  return { name: s.name, size: s.size, version: s.version, updated_at: new Date(s.updated_at).toISOString() };
}

async function readValue(c: { env: unknown; req: { raw: Request } }): Promise<Uint8Array> {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  const chunks: Buffer[] = [];
  let size = 0;
  const body = incoming ? null : c.req.raw.body;
  const source: AsyncIterable<Uint8Array> = incoming ?? (body ? Readable.fromWeb(body as never) : Readable.from([]));
  for await (const chunk of source) {
    size += chunk.length;
    if (size > MAX_SECRET_BYTES) throw new KilnError('E_TOO_LARGE', `the secret value is larger than ${MAX_SECRET_BYTES} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

export function registerSecretRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps & { secrets: SecretStore }): void {
  const store = deps.secrets;
  app.put(API_ROUTES.secret.template, limitBody(MAX_SECRET_BYTES, 'the secret value'));
  documentBodyLimit(app, `put ${API_ROUTES.secret.template}`, MAX_SECRET_BYTES);

  app.openapi(listSecrets, (c) => c.json({ items: store.list().map(view) }, 200));

  app.openapi(putSecret, async (c) => {
    const { name } = c.req.valid('param');
    const value = await readValue(c);
    const r = await store.set(name, value);
    value.fill(0);
    deps.logger.info({ secret: name, size: r.size, version: r.version }, r.created ? 'secret created' : 'secret replaced');
    return c.json(view(r), r.created ? 201 : 200);
  });

  app.openapi(deleteSecret, async (c) => {
    const { name } = c.req.valid('param');
    if (!(await store.remove(name))) throw new KilnError('E_NOT_FOUND', `no secret '${name}'`);
    deps.logger.info({ secret: name }, 'secret removed');
    return c.body(null, 204);
  });
}
