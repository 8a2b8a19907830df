/**
 * Agent enrolment routes (access/agent-credentials.ts): enrolment tokens (create, list
 * without secrets, revoke; admin), an agent trading its enrolment token for its own
 * credential, an agent rotating its credential, and an admin revoking an agent (cut off
 * within a second: its connection closed, reconnects refused, its attempts queued again)
 * or asking it to rotate.
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { API_ROUTES, KilnError, NAME_RE, NAME_RULE, isKilnError } from '../../shared/index.js';
import { actorOf as principalActor } from '../access/api-keys.js';
import type { AgentAccess, AppEnv, HttpDeps } from './context.js';
import { AGENT_BEARER, AgentParams, SECURED, documentBodyLimit, errors, limitBody, nodeIncoming, requireMediaType } from './openapi-common.js';

/** Security scheme of the enrolment route: an enrolment token (`kiln tokens create --agent`). */
export const ENROL_BEARER = 'enrolToken';
const BODY_MAX_BYTES = 4 * 1024;
/** At most a year; at most 10000 uses. */
const MAX_EXPIRES_S = 366 * 24 * 3600;
const MAX_USES = 10_000;

const Credential = z
  .object({ name: z.string(), credential: z.string().openapi({ description: 'The agent credential (`kiln_agent_...`): shown once, stored only as a hash' }) })
  .openapi('AgentCredential');
const EnrolBody = z.object({ name: z.string().regex(NAME_RE, `must be an agent name (${NAME_RULE})`) }).strict();
const TokenView = z
  .object({
    id: z.string(),
    name: z.string().nullable(),
    state: z.enum(['active', 'expired', 'used', 'revoked']),
    expires_at: z.string(),
    uses: z.number().int(),
    used: z.number().int(),
    created_by: z.string(),
    created_at: z.string(),
    revoked_at: z.string().nullable(),
  })
  .openapi('EnrolToken');
const CreatedToken = TokenView.extend({ token: z.string().openapi({ description: 'The enrolment token (`kiln_enrol_...`): shown once, stored only as a hash' }) }).openapi('CreatedEnrolToken');
const CreateTokenBody = z
  .object({
    kind: z.literal('agent'),
    name: z.string().regex(NAME_RE, `must be an agent name (${NAME_RULE})`).optional().openapi({ description: 'Binds the token to this agent name' }),
    expires_in_s: z.number().int().min(1).max(MAX_EXPIRES_S).default(24 * 3600),
    uses: z.number().int().min(1).max(MAX_USES).default(1),
  })
  .strict();
const TokenParams = z.object({ id: z.string().regex(/^et-[0-9a-z-]{1,80}$/, 'must be an enrolment token id (et-...)') });

const guard = (what: string) => [requireMediaType(['application/json']), limitBody(BODY_MAX_BYTES, what)];

const enrolRoute = createRoute({
  method: 'post',
  path: API_ROUTES.agentEnrol.template,
  summary: 'Trade an enrolment token for this agent credential (the agent does it once, on its first start)',
  security: [{ [ENROL_BEARER]: [] }],
  middleware: guard('the body'),
  request: { body: { required: true, content: { 'application/json': { schema: EnrolBody } } } },
  responses: {
    200: { description: 'The agent credential (durable when answered)', content: { 'application/json': { schema: Credential } } },
    ...errors([400, [401, 'No enrolment token, or one never issued here'], [403, 'The enrolment token is revoked, expired, used up, or bound to another name'], [409, 'The name already has a live credential (revoke it first)'], 413, 415], { agentToo: true }),
  },
});
const rotateOwnRoute = createRoute({
  method: 'post',
  path: API_ROUTES.agentCredential.template,
  summary: "An agent's new credential, asked for with its current one (which stays valid until the new one is first used)",
  security: [{ [AGENT_BEARER]: [] }],
  responses: {
    200: { description: 'The new credential (durable when answered)', content: { 'application/json': { schema: Credential } } },
    ...errors([[401, 'Not a valid agent credential (the shared agent token cannot rotate)']]),
  },
});
const revokeRoute = createRoute({
  method: 'post',
  path: API_ROUTES.agentRevoke.template,
  summary: "Revoke an agent's credential: its connection is closed, reconnects refused, its running attempts queued again",
  security: SECURED,
  request: { params: AgentParams },
  responses: {
    200: { description: 'Revoked (durable when answered)', content: { 'application/json': { schema: z.object({ name: z.string(), revoked: z.number().int() }) } } },
    ...errors([400, [404, 'The agent has no live credential']]),
  },
});
const rotateRoute = createRoute({
  method: 'post',
  path: API_ROUTES.agentRotate.template,
  summary: 'Ask an agent to rotate its credential: it gets a new one and reconnects with it; its builds go on',
  security: SECURED,
  request: { params: AgentParams },
  responses: {
    200: {
      description: 'Asked (durable when answered); a disconnected agent rotates when it next connects',
      content: { 'application/json': { schema: z.object({ name: z.string(), connected: z.boolean() }) } },
    },
    ...errors([400, [404, 'The agent has no live credential']]),
  },
});
const createTokenRoute = createRoute({
  method: 'post',
  path: API_ROUTES.tokens.template,
  summary: 'Create an agent enrolment token (its secret is in this answer only)',
  security: SECURED,
  middleware: guard('the body'),
  request: { body: { required: true, content: { 'application/json': { schema: CreateTokenBody } } } },
  responses: {
    201: { description: 'The token (durable when answered)', content: { 'application/json': { schema: CreatedToken } } },
    ...errors([400, [409, 'Too many usable enrolment tokens'], 413, 415]),
  },
});
const listTokensRoute = createRoute({
  method: 'get',
  path: API_ROUTES.tokens.template,
  summary: 'Enrolment tokens, oldest first (never their secrets)',
  security: SECURED,
  responses: { 200: { description: 'The tokens', content: { 'application/json': { schema: z.object({ items: z.array(TokenView) }) } } }, ...errors([]) },
});
const revokeTokenRoute = createRoute({
  method: 'delete',
  path: API_ROUTES.token.template,
  summary: 'Revoke an enrolment token (agents already enrolled with it keep their credentials)',
  security: SECURED,
  request: { params: TokenParams },
  responses: { 200: { description: 'The token, revoked', content: { 'application/json': { schema: TokenView } } }, ...errors([400, 404]) },
});

function bearerOf(c: Context<AppEnv>): string | null {
  return /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '')?.[1] ?? null;
}

/** Who made an admin call, for the audit log (never the secret). */
/** Who is calling, as the audit log names them (the key's id and name; never a secret). */
function actorOf(c: Context<AppEnv>): string {
  return principalActor(c.get('principal') ?? null);
}

export function registerAgentAccessRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  app.openAPIRegistry.registerComponent('securitySchemes', ENROL_BEARER, {
    type: 'http',
    scheme: 'bearer',
    description: 'An agent enrolment token (`kiln tokens create --agent`): the enrolment route only',
  });
  const access = (): AgentAccess => {
    if (!deps.agentAccess) throw new KilnError('E_NOT_FOUND', 'agent enrolment is not enabled on this coordinator');
    return deps.agentAccess;
  };
  const remoteOf = (c: Context<AppEnv>) => nodeIncoming(c)?.socket.remoteAddress;

  documentBodyLimit(app, `post ${API_ROUTES.agentEnrol.template}`, BODY_MAX_BYTES);
  app.openapi(enrolRoute, async (c) => {
    const a = access();
    const { name } = c.req.valid('json');
    // No token at all is refused (and audited) by the store like any other.
    return c.json(await a.store.enrol(bearerOf(c) ?? '', name, remoteOf(c)), 200);
  });

  app.openapi(rotateOwnRoute, async (c) => {
    const token = bearerOf(c) ?? '';
    return c.json(await access().store.rotate(token, remoteOf(c)), 200);
  });

  app.openapi(revokeRoute, async (c) => {
    const a = access();
    const { name } = c.req.valid('param');
    let revoked: number;
    try {
      revoked = await a.store.revokeAgent(name, actorOf(c));
    } catch (err) {
      // Refused in memory at once even when the write failed: cut the connection all the same
      // (the caller sees the error and retries; nothing is cut for an agent with no credential).
      if (!isKilnError(err) || err.code !== 'E_NOT_FOUND') await a.hub.revoke(name);
      throw err;
    }
    await a.hub.revoke(name);
    return c.json({ name, revoked }, 200);
  });

  app.openapi(rotateRoute, async (c) => {
    const a = access();
    const { name } = c.req.valid('param');
    await a.store.requestRotation(name, actorOf(c));
    return c.json({ name, connected: a.hub.askRotate(name) }, 200);
  });

  documentBodyLimit(app, `post ${API_ROUTES.tokens.template}`, BODY_MAX_BYTES);
  app.openapi(createTokenRoute, async (c) => {
    const b = c.req.valid('json');
    const made = await access().store.createToken({ name: b.name ?? null, expiresMs: b.expires_in_s * 1000, uses: b.uses, createdBy: actorOf(c) });
    return c.json({ ...made.view, token: made.token }, 201);
  });

  app.openapi(listTokensRoute, (c) => c.json({ items: access().store.listTokens() }, 200));

  app.openapi(revokeTokenRoute, async (c) => {
    const { id } = c.req.valid('param');
    return c.json(await access().store.revokeToken(id, actorOf(c)), 200);
  });
}
