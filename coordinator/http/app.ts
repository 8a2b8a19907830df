/**
 * The coordinator's HTTP application (hono + @hono/zod-openapi): middleware, auth, the
 * error funnel, every route, and the OpenAPI 3.1 document at `/openapi.json`.
 *
 * Every route is registered through the OpenAPI registry (probes and `/metrics`
 * included), so the document lists exactly what the server answers. A known path asked
 * with a method it does not have gets 405 with `Allow`; an unknown path 404.
 */
import type { IncomingMessage } from 'node:http';
import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { requestId } from 'hono/request-id';
import { AGENT_SOCKET_PATH, API_PREFIX, API_ROUTES, KILN_VERSION } from '../../shared/index.js';
import { clockOf, type AppEnv, type HttpDeps, type RequestSession } from './context.js';
import { createMetrics } from './metrics.js';
import { AGENT_BEARER, BEARER, PUBLIC, bodyLimitsOf, errors, problemContent, withScopes } from './openapi-common.js';
import { makeErrorHandler, problemResponse } from './problem.js';
import { registerAgentRoutes } from './routes-agents.js';
import { registerArtifactRoutes } from './routes-artifacts.js';
import { registerBuildRoutes } from './routes-builds.js';
import { registerCasRoutes } from './routes-cas.js';
import { registerImageRoutes } from './routes-images.js';
import { registerFleetRoutes } from './routes-fleet.js';
import { registerLogRoutes } from './routes-logs.js';
import { registerEventRoutes } from './routes-events.js';
import { registerAgentAccessRoutes } from './routes-agent-access.js';
import { registerSecretRoutes } from './routes-secrets.js';
import { registerAccessRoutes } from './routes-access.js';
import { registerSessionRoutes } from './routes-session.js';
import { StaticWeb, defaultWebRoot } from './static-web.js';
import { SessionStore, originAllowed, sessionCookieOf } from '../access/sessions.js';
import { registerWebhookRoutes } from './routes-webhooks.js';
import { registerClusterRoutes } from './routes-cluster.js';
import { actorOf } from '../access/api-keys.js';
import { RouteScopeTable, grants } from '../access/route-scopes.js';
import { decodedSegment, problemSummary, rateLimited, remoteOf, targetOf } from './access-guard.js';

const probe = (path: '/livez' | '/readyz' | '/healthz', summary: string, ready: boolean) =>
  createRoute({
    method: 'get',
    path,
    summary,
    security: PUBLIC,
    responses: {
      200: { description: 'ok', content: { 'text/plain': { schema: z.string() } } },
      ...(ready ? errors([[503, 'Not ready: starting or shutting down']], { secured: false }) : errors([], { secured: false })),
    },
  });

const metricsRoute = createRoute({
  method: 'get',
  path: '/metrics',
  summary: 'Prometheus metrics (agents, pools, queue, dead letters; no build ids)',
  security: PUBLIC,
  responses: {
    200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: z.string() } } },
    ...errors([], { secured: false }),
  },
});

/** A documented path as a matcher (`/api/v1/builds/{id}` -> /^\/api\/v1\/builds\/[^/]+$/) and its methods. */
interface PathMethods {
  re: RegExp;
  methods: Set<string>;
}

function documentedPaths(app: OpenAPIHono<AppEnv>): PathMethods[] {
  const byPath = new Map<string, Set<string>>();
  for (const d of app.openAPIRegistry.definitions) {
    if (d.type !== 'route') continue;
    const set = byPath.get(d.route.path) ?? new Set<string>();
    set.add(d.route.method.toUpperCase());
    if (d.route.method === 'get') set.add('HEAD');
    byPath.set(d.route.path, set);
  }
  return [...byPath].map(([path, methods]) => ({
    re: new RegExp(`^${path.split('/').map((seg) => (/^\{.+\}$/.test(seg) ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}$`),
    methods,
  }));
}

export function createApp(deps: HttpDeps): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (result.success) return;
      const errs = result.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
      const first = errs[0];
      return problemResponse(c, 400, 'E_INVALID', `request validation failed${first ? `: ${first.path ? `${first.path}: ` : ''}${first.message}` : ''}`, errs);
    },
  });
  app.use(requestId());
  // `.` and `..` segments (also %2E-encoded) are resolved away before routing, so
  // `/builds/%2E%2E/cancel` would reach another route: refuse them as they were sent.
  const rawPathOf = (c: Context): string => ((c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.url ?? new URL(c.req.raw.url).pathname).split('?')[0]!;
  app.use(async (c, next) => {
    const path = rawPathOf(c);
    if (path.split('/').some((seg) => /^(?:\.|%2e){1,2}$/i.test(seg))) {
      return problemResponse(c, 400, 'E_INVALID', `the path ${path.slice(0, 200)} has a '.' or '..' segment; ids and names never are`);
    }
    return next();
  });
  app.onError(makeErrorHandler(deps.logger));
  let paths: PathMethods[] | null = null;
  // The dashboard (static-web.ts) answers GETs outside /api/ that no route takes.
  const web = new StaticWeb(deps.webRoot === undefined ? defaultWebRoot() : deps.webRoot);
  app.notFound(async (c) => {
    const page = await web.answer(c.req.method, rawPathOf(c));
    if (page) return page;
    paths ??= documentedPaths(app);
    const match = paths.find((p) => p.re.test(c.req.path));
    if (match) {
      const allow = [...match.methods].sort().join(', ');
      return problemResponse(c, 405, 'E_METHOD', `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allow}`, undefined, { allow });
    }
    return problemResponse(c, 404, 'E_NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`);
  });

  app.openAPIRegistry.registerComponent('securitySchemes', BEARER, {
    type: 'http',
    scheme: 'bearer',
    description:
      "An API key (kiln_key_…, with scopes: each operation's `x-kiln-scope`), or the legacy API token (tokens/api in the data dir), an admin key. " +
      'The dashboard sends the `kiln_session` cookie instead (from POST /api/v1/session; same key, same scopes; unsafe methods need a same-host Origin when it sends one).',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', AGENT_BEARER, {
    type: 'http',
    scheme: 'bearer',
    description: "The agent token (tokens/agent in the data dir): the agents' WebSocket and the CAS routes only",
  });
  // Served by the WebSocket server on the HTTP upgrade (agent-hub.ts), not by a route: documented here.
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: AGENT_SOCKET_PATH,
    summary: "The agents' WebSocket (kiln's msgpack protocol, shared/protocol/messages.ts)",
    description: 'Open with an HTTP/1.1 upgrade (`Connection: Upgrade`, `Upgrade: websocket`) and the agent token. A plain GET gets 426.',
    security: [{ [AGENT_BEARER]: [] }],
    responses: {
      101: { description: 'Switching Protocols: the WebSocket is open; the agent sends its hello' },
      401: problemContent('No agent token or a wrong one (refused before the upgrade)'),
      426: problemContent('Not a WebSocket upgrade'),
      ...errors([], { secured: false }),
    },
  });
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/openapi.json',
    summary: 'This document',
    security: PUBLIC,
    responses: { 200: { description: 'The OpenAPI 3.1 document', content: { 'application/json': { schema: z.object({}).passthrough() } } }, ...errors([], { secured: false }) },
  });

  app.openapi(probe('/livez', 'Liveness: the process answers', false), (c) => c.text('ok\n', 200));
  const ready = (c: Parameters<Parameters<typeof app.openapi>[1]>[0]) =>
    deps.isReady() ? c.text('ok\n', 200) : problemResponse(c, 503, 'E_UNAVAILABLE', 'not ready (starting or shutting down)');
  app.openapi(probe('/readyz', 'Readiness: state loaded and taking work (503 while starting or shutting down)', true), ready as never);
  app.openapi(probe('/healthz', 'Alias of /readyz', true), ready as never);
  // Prometheus scrapes without the API token (as /livez); it names agents and pools, never builds.
  const metrics = createMetrics(deps.engine, deps.agents, clockOf(deps), deps.webhooks);
  app.openapi(metricsRoute, async (c) => c.body(await metrics.metrics(), 200, { 'content-type': metrics.contentType }) as never);

  // Who is calling (auth.ts), whether they may (the route table, access/route-scopes.ts),
  // how often (rate limits; agents are not limited), and what they changed (audit log).
  const routeScopes = new RouteScopeTable();
  const sessions = deps.sessions ?? new SessionStore(deps.keys, { clock: clockOf(deps) });
  app.use(`${API_PREFIX}/*`, async (c, next) => {
    const remote = remoteOf(c);
    const match = routeScopes.match(c.req.method, c.req.path);
    // Enrolment is authorized by its enrolment token, which the route itself checks
    // (routes-agent-access.ts); it is rate limited by address like any caller without a key.
    const enrolment = c.req.path === API_ROUTES.agentEnrol.template;
    const authorization = c.req.header('authorization');
    let principal = enrolment ? null : deps.tokens.authenticate(authorization);
    // The dashboard's session cookie stands in for a missing Authorization header (access/sessions.ts).
    let session: RequestSession | null = null;
    const cookie = enrolment || authorization !== undefined ? null : sessionCookieOf(c.req.header('cookie'));
    if (cookie !== null && cookie !== 'malformed') {
      const s = sessions.resolve(cookie);
      if (s) {
        principal = s.principal;
        session = { id: cookie, expiresAt: s.expiresAt };
      }
    }
    // Signing in with the key in the body: the route checks that key.
    const signIn = c.req.method === 'POST' && c.req.path === API_ROUTES.session.template && principal === null && authorization === undefined;
    const refuse = (status: number, code: string, detail: string, headers?: Record<string, string>) => {
      deps.audit.record({ actor: actorOf(principal), action: `${c.req.method} ${match?.row.path ?? c.req.path.slice(0, 200)}`, ...targetOf(match), outcome: 'refused', detail: `${status} ${code}: ${detail}`, remote });
      return problemResponse(c, status, code, detail, undefined, headers);
    };
    if (principal?.kind !== 'agent') {
      const limited = rateLimited(deps.rateLimits, principal, remote);
      if (limited) return refuse(429, 'E_RATE_LIMITED', limited.detail, { 'retry-after': String(limited.retryAfterS) });
    }
    if (enrolment || signIn) return next();
    if (!principal) {
      if (cookie !== null) return refuse(401, 'E_UNAUTHORIZED', 'the session has ended (signed out, expired, or its key revoked or expired): sign in again');
      return refuse(401, 'E_UNAUTHORIZED', 'missing or wrong API token (send Authorization: Bearer <token>)', { 'www-authenticate': 'Bearer' });
    }
    // A cookie goes with every request the browser makes to this host, from any page: an
    // unsafe one must come from this host's own pages (SameSite=Strict already keeps most out).
    if (session && c.req.method !== 'GET' && c.req.method !== 'HEAD' && !originAllowed(c.req.header('origin'), c.req.header('host'))) {
      return refuse(403, 'E_FORBIDDEN', `a ${c.req.method} with the session cookie from the origin ${(c.req.header('origin') ?? '').slice(0, 200)} is refused: it must come from this coordinator's own pages`);
    }
    if (principal.kind === 'agent') {
      // The agent credential may only use the CAS (read contexts and inputs, upload outputs), its WebSocket and its credential's rotation.
      if (!match?.row.agent) return refuse(403, 'E_FORBIDDEN', 'the agent token cannot use this route; use an API key');
    } else {
      const needed = match?.row.scope ?? 'admin';
      if (!grants(principal.scopes, needed)) return refuse(403, 'E_SCOPE', `this route needs the '${needed}' scope; the key '${principal.name}' has ${principal.scopes.join(', ')}`);
    }
    c.set('role', principal.kind === 'agent' ? 'agent' : 'api');
    c.set('principal', principal);
    c.set('session', session);
    await next();
    // Mutations are recorded (an agent's own uploads only when refused); reads are not.
    const action = match?.row.action;
    if (action && (principal.kind !== 'agent' || c.res.status >= 400)) {
      const status = c.res.status;
      // A creation's target is the new id, the last segment of its Location (apiPath-encoded).
      const created = status === 201 ? decodedSegment(c.res.headers.get('location')?.split('/').pop()) : undefined;
      deps.audit.record({
        actor: actorOf(principal),
        action,
        ...(created ? { target: created } : targetOf(match)),
        outcome: status < 400 ? 'ok' : 'refused',
        ...(status >= 400 ? { detail: await problemSummary(c.res) } : {}),
        remote,
      });
    }
  });

  // A plain GET of the agents' WebSocket (an upgrade never reaches hono: agent-hub.ts takes it).
  app.get(AGENT_SOCKET_PATH, (c) =>
    problemResponse(c, 426, 'E_UPGRADE', `${AGENT_SOCKET_PATH} is the agents' WebSocket: connect with a WebSocket upgrade and the agent token`, undefined, { upgrade: 'websocket' }),
  );
  registerBuildRoutes(app, deps);
  registerArtifactRoutes(app, deps);
  registerImageRoutes(app, deps);
  registerLogRoutes(app, { ...deps, sessions });
  registerCasRoutes(app, deps);
  registerAgentRoutes(app, deps);
  registerFleetRoutes(app, deps);
  registerEventRoutes(app, { ...deps, sessions });
  registerAgentAccessRoutes(app, deps);
  if (deps.secrets) registerSecretRoutes(app, { ...deps, secrets: deps.secrets });
  registerAccessRoutes(app, deps);
  registerSessionRoutes(app, { ...deps, sessions, secureCookies: deps.secureCookies ?? false });
  registerWebhookRoutes(app, deps);
  registerClusterRoutes(app, deps);

  const docConfig = {
    openapi: '3.1.0' as const,
    info: {
      title: 'kiln coordinator API',
      version: KILN_VERSION,
      description:
        'Submit DAGs of BuildKit builds, follow their logs, store build contexts by digest; watch and steer the fleet (pools, agents, dead letters, retries, error reports). ' +
        'Every error is RFC 9457 application/problem+json with a stable `code`. A method a path does not have gets 405 with `Allow`.',
    },
    security: [{ [BEARER]: [] }],
  };
  let doc: ReturnType<typeof app.getOpenAPI31Document> | null = null;
  app.get('/openapi.json', (c) => {
    doc ??= withScopes(withBodyLimits(app.getOpenAPI31Document(docConfig), bodyLimitsOf(app)), routeScopes);
    return c.json(doc);
  });
  return app;
}

/** States each recorded body limit as `x-max-bytes` on its operation's request body. */
function withBodyLimits<D extends { paths?: unknown }>(doc: D, limits: ReadonlyMap<string, number>): D {
  const paths = (doc.paths ?? {}) as Record<string, Record<string, { requestBody?: Record<string, unknown> }>>;
  for (const [key, bytes] of limits) {
    const [method, path] = key.split(' ') as [string, string];
    const body = paths[path]?.[method]?.requestBody;
    if (body) body['x-max-bytes'] = bytes;
  }
  return doc;
}
