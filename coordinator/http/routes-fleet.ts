/**
 * Fleet routes: pools (agents and queued nodes per platform, and `gpu`), the dead-letter
 * list (nodes whose attempt budget infrastructure failures used up), retrying a failed
 * node, and a failed build's error report.
 */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, BuildView, DeadLetterList, apiPath, ErrorReport, KilnError, PoolList, type DeadLetterViewT } from '../../shared/index.js';
import { buildView, poolListView } from '../builds/build-views.js';
import type { DeadLetterRecord } from '../state/records.js';
import { clockOf, type AppEnv, type HttpDeps } from './context.js';
import { BuildIdParams, NodeParams, SECURED, errors } from './openapi-common.js';


const listPools = createRoute({
  method: 'get',
  path: API_ROUTES.pools.template,
  summary: 'Pools: per platform (and `gpu`), the agents that can run it, their slots, the queue and dispatch waits',
  security: SECURED,
  responses: { 200: { description: 'The pools', content: { 'application/json': { schema: PoolList } } }, ...errors([]) },
});

const listDeadLetters = createRoute({
  method: 'get',
  path: API_ROUTES.deadLetter.template,
  summary: 'Nodes that failed because infrastructure failures used up their attempt budget, newest first',
  security: SECURED,
  responses: { 200: { description: 'The dead-letter list', content: { 'application/json': { schema: DeadLetterList } } }, ...errors([]) },
});

const retryNode = createRoute({
  method: 'post',
  path: API_ROUTES.nodeRetry.template,
  summary: 'Run a failed node again (its skipped dependents become pending again)',
  description: 'Works on finished builds too: the build runs again. Not for cancelled builds.',
  security: SECURED,
  request: { params: NodeParams },
  responses: {
    202: { description: 'The node is queued again (durable when answered)', content: { 'application/json': { schema: BuildView } } },
    ...errors([400, [404, 'No such build or node'], [409, 'The node is not failed, the build was cancelled, or its inputs are gone'], 503]),
  },
});

const getErrorReport = createRoute({
  method: 'get',
  path: API_ROUTES.buildError.template,
  summary: "Why a build failed: each failed node's attempt, agent, exit code, error, last log lines and provenance",
  security: SECURED,
  request: { params: BuildIdParams },
  responses: {
    200: { description: 'The error report (also kept as error-<id>.json in the data dir)', content: { 'application/json': { schema: ErrorReport } } },
    ...errors([400, [404, 'No such build, or it has no failed node']]),
  },
});

export function retryUrl(buildId: string, node: string): string {
  return apiPath.nodeRetry(buildId, node);
}

export function deadLetterView(r: DeadLetterRecord): DeadLetterViewT {
  return {
    build_id: r.build_id,
    build_name: r.build_name,
    node: r.node,
    platform: r.platform,
    at: new Date(r.at).toISOString(),
    reason: r.reason,
    attempts: r.attempts.map((a) => ({ id: a.id, number: a.number, agent: a.agent, state: a.state, reason: a.reason, error: a.error })),
    retry_url: retryUrl(r.build_id, r.node),
  };
}

export function registerFleetRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  const now = clockOf(deps);

  app.openapi(listPools, (c) => {
    // Layer-cache figures per pool (the same counters as GET /metrics).
    return c.json(poolListView(deps.engine), 200);
  });

  app.openapi(listDeadLetters, (c) => c.json({ items: deps.engine.deadLetters().map(deadLetterView) }, 200));

  app.openapi(retryNode, async (c) => {
    const { id, node } = c.req.valid('param');
    if (!deps.isReady()) throw new KilnError('E_UNAVAILABLE', 'the coordinator is not accepting retries right now (starting or shutting down)');
    const build = await deps.engine.retryNode(id, node);
    return c.json(buildView(build, deps.agents, now(), deps.engine), 202);
  });

  app.openapi(getErrorReport, async (c) => {
    const { id } = c.req.valid('param');
    const report = await deps.engine.errorReport(id);
    if (report) return c.json(report, 200);
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    throw new KilnError('E_NOT_FOUND', `build ${id} has no error report: no node of it failed (build state: ${build.state})`);
  });
}
