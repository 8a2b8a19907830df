/**
 * The coordinator's HTTP application (hono + @hono/zod-openapi): middleware, auth, the
 * error funnel, every route, and the OpenAPI 3.1 document at `/openapi.json`.
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { requestId } from 'hono/request-id';
import { KILN_VERSION } from '../../shared/index.js';
import { clockOf, type AppEnv, type HttpDeps } from './context.js';
import { createMetrics } from './metrics.js';
import { makeErrorHandler, problemResponse } from './problem.js';
import { registerAgentRoutes } from './routes-agents.js';
import { registerArtifactRoutes } from './routes-artifacts.js';
import { registerBuildRoutes } from './routes-builds.js';
import { registerCasRoutes } from './routes-cas.js';
import { registerFleetRoutes } from './routes-fleet.js';
import { registerLogRoutes } from './routes-logs.js';

export function createApp(deps: HttpDeps): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (result.success) return;
      const errors = result.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
      const first = errors[0];
      return problemResponse(c, 400, 'E_INVALID', `request validation failed${first ? `: ${first.path ? `${first.path}: ` : ''}${first.message}` : ''}`, errors);
    },
  });
  app.use(requestId());
  app.onError(makeErrorHandler(deps.logger));
  app.notFound((c) => problemResponse(c, 404, 'E_NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`));

  app.get('/livez', (c) => c.text('ok\n'));
  const ready = (c: Context) =>
    deps.isReady() ? c.text('ok\n') : problemResponse(c, 503, 'E_UNAVAILABLE', 'not ready (starting or shutting down)');
  app.get('/readyz', ready);
  app.get('/healthz', ready);
  // Prometheus scrapes without the API token (as /livez); it names agents and pools, never builds.
  const metrics = createMetrics(deps.engine, deps.agents, clockOf(deps));
  app.get('/metrics', async (c) => c.body(await metrics.metrics(), 200, { 'content-type': metrics.contentType }));

  app.use('/api/v1/*', async (c, next) => {
    const role = deps.tokens.role(c.req.header('authorization'));
    if (!role) return problemResponse(c, 401, 'E_UNAUTHORIZED', 'missing or wrong API token (send Authorization: Bearer <token>)');
    // The agent token may only use the CAS: read contexts and inputs, upload outputs.
    if (role === 'agent' && !c.req.path.startsWith('/api/v1/cas/')) {
      return problemResponse(c, 403, 'E_UNAUTHORIZED', 'the agent token cannot use this route; use the API token');
    }
    c.set('role', role);
    await next();
  });

  // A spec is read whole before it is parsed: refuse oversized bodies while they stream in.
  app.post(
    '/api/v1/builds',
    bodyLimit({
      maxSize: deps.maxSpecBytes,
      onError: (c) => problemResponse(c, 413, 'E_TOO_LARGE', `spec is larger than ${deps.maxSpecBytes} bytes`),
    }),
  );
  registerBuildRoutes(app, deps);
  registerArtifactRoutes(app, deps);
  registerLogRoutes(app, deps);
  registerCasRoutes(app, deps);
  registerAgentRoutes(app, deps);
  registerFleetRoutes(app, deps);

  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'kiln coordinator API', version: KILN_VERSION, description: 'Submit DAGs of BuildKit builds, follow their logs, store build contexts by digest; watch and steer the fleet (pools, agents, dead letters, retries, error reports).' },
  });
  return app;
}
