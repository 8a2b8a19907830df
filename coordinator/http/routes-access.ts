/**
 * Access routes (admin scope): API keys (create, list, revoke) and the audit log. A key's
 * secret is in the answer to its creation only; the store keeps its sha256.
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, AuditList, CreateKeyBody, CreatedKey, KeyList, KeyView, NAME_RE, NAME_RULE, apiPath } from '../../shared/index.js';
import { actorOf } from '../access/api-keys.js';
import type { AppEnv, HttpDeps } from './context.js';
import { SECURED, documentBodyLimit, errors, limitBody, requireMediaType } from './openapi-common.js';

const KEY_BODY_MAX_BYTES = 4 * 1024;

const createKey = createRoute({
  method: 'post',
  path: API_ROUTES.keys.template,
  summary: 'Create an API key with scopes (read, submit, cancel, admin), optionally expiring',
  description: 'The answer holds the key itself (`secret`), once: the coordinator keeps only its sha256. `admin` implies every scope; `submit` and `cancel` imply `read`.',
  security: SECURED,
  middleware: [requireMediaType(['application/json']), limitBody(KEY_BODY_MAX_BYTES, 'the body')],
  request: { body: { required: true, content: { 'application/json': { schema: CreateKeyBody } } } },
  responses: {
    201: {
      description: 'Created (durable when answered)',
      headers: { location: { description: 'The key', schema: { type: 'string' } } },
      content: { 'application/json': { schema: CreatedKey } },
    },
    ...errors([400, [409, 'An active key has this name, or there are too many keys'], 413, 415]),
  },
});

const listKeys = createRoute({
  method: 'get',
  path: API_ROUTES.keys.template,
  summary: 'API keys, newest first (never their secrets), and the legacy API token as `api-token`',
  security: SECURED,
  responses: { 200: { description: 'Every key', content: { 'application/json': { schema: KeyList } } }, ...errors([]) },
});

const KeyParams = z.object({ id: z.string().regex(NAME_RE, `must be a key id or name (${NAME_RULE})`).openapi({ example: 'ci' }) });

const revokeKey = createRoute({
  method: 'delete',
  path: API_ROUTES.key.template,
  summary: 'Revoke an API key (by id, or by the name of an active key): refused from the next request on',
  security: SECURED,
  request: { params: KeyParams },
  responses: {
    200: { description: 'The key, revoked (durable when answered)', content: { 'application/json': { schema: KeyView } } },
    ...errors([400, [404, 'No such key'], [409, 'The legacy API token: replace its file instead']]),
  },
});

const AuditQuery = z.object({
  limit: z
    .string()
    .regex(/^[1-9][0-9]{0,3}$/, 'must be an integer from 1 to 1000')
    .transform(Number)
    .refine((n) => n <= 1000, 'must be an integer from 1 to 1000')
    .optional()
    .transform((n) => n ?? 100)
    .openapi({ type: 'integer', minimum: 1, maximum: 1000, default: 100, description: 'At most this many entries' }),
  actor: z.string().min(1).max(200).optional().openapi({ description: 'Only this actor (key:<id>/<name>, agent:<name>), or a key id or name, or an agent name' }),
  action: z.string().min(1).max(100).optional().openapi({ description: 'Only this action (build.cancel), or every action with this prefix when it ends in a dot (build.)' }),
});

const listAudit = createRoute({
  method: 'get',
  path: API_ROUTES.audit.template,
  summary: 'The audit log, newest first: mutations and refused calls (reads are not recorded)',
  security: SECURED,
  request: { query: AuditQuery },
  responses: { 200: { description: 'Audit entries', content: { 'application/json': { schema: AuditList } } }, ...errors([400]) },
});

export function registerAccessRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  documentBodyLimit(app, `post ${API_ROUTES.keys.template}`, KEY_BODY_MAX_BYTES);
  app.openapi(createKey, async (c) => {
    const body = c.req.valid('json');
    const { key, secret } = await deps.keys.create({
      scopes: body.scopes,
      ...(body.name !== undefined ? { name: body.name } : {}),
      ...(body.expires_in_s !== undefined ? { expiresInMs: body.expires_in_s * 1000 } : {}),
      createdBy: actorOf(c.get('principal')),
    });
    return c.json({ key, secret }, 201, { location: apiPath.key(key.id) });
  });

  app.openapi(listKeys, (c) => c.json({ items: deps.keys.list() }, 200));

  app.openapi(revokeKey, async (c) => c.json(await deps.keys.revoke(c.req.valid('param').id), 200));

  app.openapi(listAudit, async (c) => {
    const q = c.req.valid('query');
    const items = await deps.audit.query({ limit: q.limit, ...(q.actor !== undefined ? { actor: q.actor } : {}), ...(q.action !== undefined ? { action: q.action } : {}) });
    return c.json({ items }, 200);
  });
}
