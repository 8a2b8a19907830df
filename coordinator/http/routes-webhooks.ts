/**
 * Webhook routes (issue 13): the hooks with their counters and latest attempt, and one
 * hook's delivery log (the last attempts, newest first; kept in memory). A build's own
 * hooks are shown to any reader; the coordinator's hooks only to admin keys (the list
 * leaves them out, their log is a 403). No secret is ever shown, and a hook's URL only as
 * scheme://host[:port]. Without the webhooks module loaded (no hook configured, no
 * allowed hosts) the list is empty.
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, DeliveryList, KilnError, WEBHOOK_ID_RE, WEBHOOK_ID_RULE, WebhookList, type DeliveryViewT } from '../../shared/index.js';
import { grants } from '../access/route-scopes.js';
import type { AppEnv, HttpDeps } from './context.js';
import { SECURED, errors } from './openapi-common.js';

const WebhookParams = z.object({ id: z.string().regex(WEBHOOK_ID_RE, `must be ${WEBHOOK_ID_RULE}`).openapi({ example: 'ops' }) });

const listWebhooks = createRoute({
  method: 'get',
  path: API_ROUTES.webhooks.template,
  summary: "Webhooks: the coordinator's (admin keys only) and builds' own (since the coordinator started), with counters and the latest attempt",
  security: SECURED,
  responses: { 200: { description: 'The hooks', content: { 'application/json': { schema: WebhookList } } }, ...errors([]) },
});

const hookDeliveries = createRoute({
  method: 'get',
  path: API_ROUTES.webhookDeliveries.template,
  summary: "A webhook's delivery log: its last 50 attempts, newest first (in memory: a restart empties it)",
  security: SECURED,
  request: { params: WebhookParams },
  responses: {
    200: { description: 'The hook and its attempts', content: { 'application/json': { schema: DeliveryList } } },
    ...errors([400, [403, "A coordinator hook's log needs the admin scope"], [404, 'No such hook']]),
  },
});

/**
 * A delivery without the start of the receiver's answer: a build's own hook is aimed by
 * whoever submitted it, so what the receiver said is shown to admin keys only (it could be
 * another service's reply on an allowed host).
 */
function withoutResponse(d: DeliveryViewT): DeliveryViewT {
  return d.response === '' ? d : { ...d, response: '' };
}

export function registerWebhookRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  const isAdmin = (c: { get(k: 'principal'): AppEnv['Variables']['principal'] }) => {
    const p = c.get('principal');
    return p.kind === 'key' && grants(p.scopes, 'admin');
  };

  app.openapi(listWebhooks, (c) => {
    const all = deps.webhooks?.list() ?? [];
    const admin = isAdmin(c);
    const items = all.filter((h) => admin || h.scope === 'build').map((h) => (admin || !h.last ? h : { ...h, last: withoutResponse(h.last) }));
    return c.json({ items }, 200);
  });

  app.openapi(hookDeliveries, (c) => {
    const { id } = c.req.valid('param');
    const found = deps.webhooks?.deliveries(id);
    if (!found) throw new KilnError('E_NOT_FOUND', `no webhook '${id}' (coordinator hooks by name; a build's hooks as <build id>:<n>, once it had an event)`);
    const admin = isAdmin(c);
    if (found.hook.scope === 'coordinator' && !admin) throw new KilnError('E_SCOPE', `the coordinator's webhook '${id}' is shown to admin keys only`);
    if (admin) return c.json(found, 200);
    return c.json({ hook: found.hook.last ? { ...found.hook, last: withoutResponse(found.hook.last) } : found.hook, items: found.items.map(withoutResponse) }, 200);
  });
}
