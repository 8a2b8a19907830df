/**
 * The one table of who may call what: every API route (method + OpenAPI path template)
 * with the scope an API key needs for it, whether the agent credential may use it, and
 * the audit action a mutation is recorded as. The auth middleware (http/app.ts) looks
 * every request up here, the OpenAPI document states each operation's scope as
 * `x-kiln-scope` from here, and test/integration/access.scopes.test.ts fails for a
 * documented route without a row. A request no row matches needs `admin` (fail closed).
 *
 * Scopes: `read` (look), `submit` (submit builds, upload contexts), `cancel` (cancel,
 * retry, pin/unpin), `admin` (agents, tokens, keys, gc, secrets, the audit log).
 * `admin` implies every scope; `submit` and `cancel` imply `read`.
 */
import { AGENT_SOCKET_PATH, API_ROUTES, KEY_SCOPES } from '../../shared/index.js';

export const SCOPES = KEY_SCOPES;
export type Scope = (typeof SCOPES)[number];

/** What each scope grants beyond itself. */
const IMPLIED: ReadonlyMap<Scope, readonly Scope[]> = new Map<Scope, readonly Scope[]>([
  ['read', []],
  ['submit', ['read']],
  ['cancel', ['read']],
  ['admin', ['read', 'submit', 'cancel']],
]);

/** true when a key holding `held` may use a route that needs `needed`. */
export function grants(held: readonly Scope[], needed: Scope): boolean {
  return held.some((s) => s === needed || (IMPLIED.get(s) ?? []).includes(needed));
}

export type RouteMethod = 'get' | 'post' | 'put' | 'delete' | 'head';

export interface RouteScope {
  readonly method: RouteMethod;
  /** The OpenAPI path template (`/api/v1/builds/{id}`). */
  readonly path: string;
  readonly scope: Scope;
  /** The agent credential may use it too (the CAS and the agents' WebSocket). */
  readonly agent?: true;
  /** A mutation: recorded in the audit log under this action name (`build.cancel`). */
  readonly action?: string;
  /** Authorized by a token of its own, which the route checks (an enrolment token; an agent's own credential): no API key or shared token gets through. */
  readonly own?: string;
}

const R = API_ROUTES;
const row = (method: RouteMethod, path: string, scope: Scope, extra: { agent?: true; action?: string; own?: string } = {}): RouteScope => ({ method, path, scope, ...extra });

/**
 * THE table. A new route gets a row here (the scope test fails until it has one).
 */
export const ROUTE_SCOPES: readonly RouteScope[] = [
  // builds
  row('get', R.builds.template, 'read'),
  row('post', R.builds.template, 'submit', { action: 'build.submit' }),
  row('get', R.build.template, 'read'),
  row('post', R.buildCancel.template, 'cancel', { action: 'build.cancel' }),
  row('get', R.buildLogs.template, 'read'),
  row('get', R.nodeLogs.template, 'read'),
  row('get', R.buildArtifacts.template, 'read'),
  row('get', R.buildImages.template, 'read'),
  row('get', R.buildError.template, 'read'),
  row('post', R.buildPin.template, 'cancel', { action: 'build.pin' }),
  row('delete', R.buildPin.template, 'cancel', { action: 'build.unpin' }),
  row('post', R.nodeRetry.template, 'cancel', { action: 'node.retry' }),
  // fleet
  row('get', R.agents.template, 'read'),
  row('get', R.agent.template, 'read'),
  row('post', R.agentPause.template, 'admin', { action: 'agent.pause' }),
  row('post', R.agentResume.template, 'admin', { action: 'agent.resume' }),
  row('post', R.agentDrain.template, 'admin', { action: 'agent.drain' }),
  row('get', R.pools.template, 'read'),
  row('get', R.events.template, 'read'),
  row('get', R.deadLetter.template, 'read'),
  row('post', R.gc.template, 'admin', { action: 'gc.run' }),
  // CAS: agents read contexts and inputs and upload outputs; clients upload contexts
  row('get', R.casBlob.template, 'read', { agent: true }),
  row('head', R.casBlob.template, 'read', { agent: true }),
  row('put', R.casBlob.template, 'submit', { agent: true, action: 'cas.put' }),
  row('post', R.casFindMissing.template, 'read', { agent: true }),
  // the agents' WebSocket (a plain GET gets 426; the upgrade is checked by agent-hub.ts)
  row('get', AGENT_SOCKET_PATH, 'read', { agent: true }),
  // access
  row('post', R.keys.template, 'admin', { action: 'key.create' }),
  row('get', R.keys.template, 'admin'),
  row('delete', R.key.template, 'admin', { action: 'key.revoke' }),
  row('get', R.audit.template, 'admin'),
  // agent enrolment (the credential store records these in the audit log with their details)
  row('post', R.tokens.template, 'admin'),
  row('get', R.tokens.template, 'admin'),
  row('delete', R.token.template, 'admin'),
  row('post', R.agentRevoke.template, 'admin'),
  row('post', R.agentRotate.template, 'admin'),
  // an agent trades its own credential for a new one (the agent credential only)
  row('post', R.agentCredential.template, 'admin', { agent: true, own: "the agent's own credential (kiln_agent_...)" }),
  // authorized by the enrolment token itself (the middleware lets it through to the route)
  row('post', R.agentEnrol.template, 'admin', { own: 'an enrolment token (kiln_enrol_...)' }),
  // build secrets (values never leave the coordinator but in an assignment)
  row('get', R.secrets.template, 'admin'),
  row('put', R.secret.template, 'admin', { action: 'secret.set' }),
  row('delete', R.secret.template, 'admin', { action: 'secret.remove' }),
  // the dashboard's session: any key may sign in (the key in the body, or as the bearer); the route records sign-ins and sign-outs
  row('post', R.session.template, 'read'),
  row('get', R.session.template, 'read'),
  row('delete', R.session.template, 'read'),
  // webhooks: a build's own hooks to any reader; the coordinator's hooks only to admins (the routes check that)
  row('get', R.webhooks.template, 'read'),
  row('get', R.webhookDeliveries.template, 'read'),
  // the coordinators sharing the state (issue 14)
  row('get', R.cluster.template, 'read'),
];

interface Compiled {
  readonly re: RegExp;
  readonly params: readonly string[];
  readonly row: RouteScope;
}

function compile(r: RouteScope): Compiled {
  const params: string[] = [];
  const source = r.path
    .split('/')
    .map((seg) => {
      const m = /^\{(.+)\}$/.exec(seg);
      if (!m) return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      params.push(m[1]!);
      return '([^/]+)';
    })
    .join('/');
  return { re: new RegExp(`^${source}$`), params, row: r };
}

export interface RouteMatch {
  readonly row: RouteScope;
  /** The path parameters, decoded (`{id: 'b-…'}`). */
  readonly params: ReadonlyMap<string, string>;
}

/** Looks requests up in a table; literal paths win over templated ones (`/cas/find-missing` before `/cas/{digest}`). */
export class RouteScopeTable {
  private readonly byMethod = new Map<string, Compiled[]>();

  constructor(readonly rows: readonly RouteScope[] = ROUTE_SCOPES) {
    for (const r of rows) {
      const list = this.byMethod.get(r.method) ?? [];
      list.push(compile(r));
      this.byMethod.set(r.method, list);
    }
    for (const list of this.byMethod.values()) list.sort((a, b) => a.params.length - b.params.length);
  }

  /** The row for a request (HEAD falls back to GET), or null. */
  match(method: string, path: string): RouteMatch | null {
    const m = method.toLowerCase();
    return this.find(m, path) ?? (m === 'head' ? this.find('get', path) : null);
  }

  /** The row declared for an operation of the document (method + template), or undefined. */
  forOperation(method: string, template: string): RouteScope | undefined {
    const m = method.toLowerCase();
    const exact = (x: string) => this.rows.find((r) => r.method === x && r.path === template);
    return exact(m) ?? (m === 'head' ? exact('get') : undefined);
  }

  private find(method: string, path: string): RouteMatch | null {
    for (const c of this.byMethod.get(method) ?? []) {
      const hit = c.re.exec(path);
      if (!hit) continue;
      const params = new Map<string, string>();
      c.params.forEach((name, i) => {
        const v = hit[i + 1]!;
        let decoded = v;
        try {
          decoded = decodeURIComponent(v);
        } catch {
          /* left as sent */
        }
        params.set(name, decoded);
      });
      return { row: c.row, params };
    }
    return null;
  }
}
