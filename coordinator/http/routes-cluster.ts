/**
 * GET /api/v1/cluster (issue 14): which coordinator leads the shared state, under which
 * fencing epoch, and every coordinator seen on it. Every coordinator answers it, leader or
 * standby; an embedded coordinator answers with itself as the leader at epoch 0. The view
 * comes from `deps.cluster` (the lease's tables with a PostgreSQL state).
 */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, ClusterView } from '../../shared/index.js';
import type { AppEnv, HttpDeps } from './context.js';
import { SECURED, errors } from './openapi-common.js';

const getCluster = createRoute({
  method: 'get',
  path: API_ROUTES.cluster.template,
  summary: 'The coordinators sharing this state: the leader, the fencing epoch, and each coordinator with its role and when it was last seen',
  description: 'Answered by every coordinator, leader or standby. `leader` is null while no coordinator holds the lease (an election).',
  security: SECURED,
  responses: {
    200: { description: 'The cluster', content: { 'application/json': { schema: ClusterView } } },
    ...errors([[503, 'The shared state (PostgreSQL) cannot be reached']]),
  },
});

export function registerClusterRoutes(app: OpenAPIHono<AppEnv>, deps: Pick<HttpDeps, 'cluster'>): void {
  app.openapi(getCluster, async (c) => c.json(await deps.cluster(), 200));
}
