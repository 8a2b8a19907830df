/**
 * Agent routes: the fleet as the coordinator sees it (connected, disconnected, lost).
 */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { AgentPage, type AgentViewT } from '../../shared/index.js';
import type { AgentEntry } from '../agents/agent-registry.js';
import type { AppEnv, HttpDeps } from './context.js';
import { PageQuery, nextLink } from './pagination.js';

const listAgents = createRoute({
  method: 'get',
  path: '/api/v1/agents',
  summary: 'Agents known to the coordinator, by name',
  request: { query: PageQuery },
  responses: { 200: { description: 'A page of agents', content: { 'application/json': { schema: AgentPage } } } },
});

export function agentView(a: AgentEntry): AgentViewT {
  const h = a.hello;
  return {
    name: a.name,
    state: a.state,
    agent_version: h?.agent_version ?? 'unknown',
    executor: h?.executor ?? 'unknown',
    platforms: h?.platforms ?? [],
    labels: h?.labels ?? {},
    max_jobs: a.maxJobs,
    running: [...a.running],
    docker: h?.docker ?? null,
    gpus: h?.gpus ?? [],
    connected_at: a.connectedAt === null ? null : new Date(a.connectedAt).toISOString(),
    last_seen_at: new Date(a.lastSeenAt).toISOString(),
  };
}

export function registerAgentRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  app.openapi(listAgents, (c) => {
    const { limit, cursor } = c.req.valid('query');
    const all = [...deps.agents.all()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const from = cursor ? all.filter((a) => a.name > cursor) : all;
    const page = from.slice(0, limit);
    const next = from.length > limit ? page[page.length - 1]!.name : null;
    return c.json({ items: page.map(agentView), next_cursor: next }, 200, nextLink(c.req.url, next));
  });
}
