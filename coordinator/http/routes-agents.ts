/**
 * Agent routes: the fleet as the coordinator sees it (connected, disconnected, lost), one
 * agent in detail (operator control, health, circuit breaker, load, GPUs in use), and
 * the operator's switches: pause (no new work), drain (no new work, stays so; running
 * attempts finish) and resume.
 */
import { createRoute, type OpenAPIHono, type z } from '@hono/zod-openapi';
import { AGENT_CONTROL_ROUTES, API_ROUTES, AgentControlBody, AgentPage, AgentView, KilnError } from '../../shared/index.js';
import type { AgentEntry } from '../placement/agent-registry.js';
import { agentView } from '../placement/agent-view.js';
import { clockOf, type AppEnv, type HttpDeps } from './context.js';
import { AgentParams, SECURED, documentBodyLimit, errors, limitBody, requireMediaType } from './openapi-common.js';
import { PageQuery, nextLink } from './pagination.js';

const listAgents = createRoute({
  method: 'get',
  path: API_ROUTES.agents.template,
  summary: 'Agents known to the coordinator, by name',
  security: SECURED,
  request: { query: PageQuery },
  responses: { 200: { description: 'A page of agents', content: { 'application/json': { schema: AgentPage } } }, ...errors([400]) },
});

const getAgent = createRoute({
  method: 'get',
  path: API_ROUTES.agent.template,
  summary: 'One agent: capabilities, operator control, health, circuit breaker, load and GPUs in use',
  security: SECURED,
  request: { params: AgentParams },
  responses: {
    200: { description: 'The agent', content: { 'application/json': { schema: AgentView } } },
    ...errors([400, [404, 'No agent with this name has connected']]),
  },
});

/** A reason is at most 1000 characters; the body around it needs little more. */
const CONTROL_BODY_MAX_BYTES = 16 * 1024;

const CONTROLS = {
  pause: { control: 'paused', summary: 'Pause an agent: it gets no new work; running attempts go on' },
  drain: { control: 'draining', summary: 'Drain an agent: no new work, running attempts finish; it stays draining until resumed' },
  resume: { control: 'active', summary: 'Resume a paused or draining agent' },
} as const;

// createRoute's literal types per action; the handler is the same for all three.
function controlRoute(action: keyof typeof CONTROLS) {
  return createRoute({
    method: 'post',
    path: AGENT_CONTROL_ROUTES[action].template,
    summary: CONTROLS[action].summary,
    description: 'The setting is durable: it survives coordinator restarts and agent reconnects. The body is optional.',
    security: SECURED,
    middleware: [requireMediaType(['application/json'], { optional: true }), limitBody(CONTROL_BODY_MAX_BYTES, 'the body')],
    request: {
      params: AgentParams,
      body: { required: false, content: { 'application/json': { schema: AgentControlBody } } },
    },
    responses: {
      200: { description: 'The agent after the change (durable when answered)', content: { 'application/json': { schema: AgentView } } },
      ...errors([[400, 'A bad name, or the body is not valid JSON or not `{reason?: string}`'], [404, 'No agent with this name has connected'], 413, 415]),
    },
  });
}

export function registerAgentRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  const now = clockOf(deps);
  const view = (a: AgentEntry) => agentView(a, now(), deps.engine.agentControl(a.name));

  app.openapi(listAgents, (c) => {
    const { limit, cursor } = c.req.valid('query');
    const all = [...deps.agents.all()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const from = cursor ? all.filter((a) => a.name > cursor) : all;
    const page = from.slice(0, limit);
    const next = from.length > limit ? page[page.length - 1]!.name : null;
    return c.json({ items: page.map(view), next_cursor: next }, 200, nextLink(c.req.url, next));
  });

  app.openapi(getAgent, (c) => {
    const { name } = c.req.valid('param');
    const a = deps.agents.get(name);
    if (!a) throw new KilnError('E_NOT_FOUND', `agent '${name}' not found (no agent with this name has connected)`);
    return c.json(view(a), 200);
  });

  for (const action of Object.keys(CONTROLS) as Array<keyof typeof CONTROLS>) {
    documentBodyLimit(app, `post ${AGENT_CONTROL_ROUTES[action].template}`, CONTROL_BODY_MAX_BYTES);
    app.openapi(controlRoute(action), async (c) => {
      const { name } = c.req.valid('param');
      const body = c.req.valid('json') as z.infer<typeof AgentControlBody>;
      const entry = await deps.engine.setAgentControl(name, CONTROLS[action].control, body.reason ?? null);
      return c.json(view(entry), 200);
    });
  }
}
