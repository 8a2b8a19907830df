/**
 * The dashboard's session routes (`/api/v1/session`): sign in with an API key sent in the
 * body (or as the bearer token) and get an HttpOnly, SameSite=Strict cookie; ask who the
 * session (or key) is; sign out. The key never appears in a URL, a log line or the audit
 * log: sign-ins and sign-outs are recorded by the key's id and name. The cookie is checked
 * by the auth middleware (app.ts) with the session store (access/sessions.ts).
 */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { API_ROUTES, SESSION_BODY_MAX_BYTES, SessionBody, SessionView, type SessionBodyT, type SessionViewT } from '../../shared/index.js';
import { actorOf, type KeyPrincipal } from '../access/api-keys.js';
import { clearSessionCookie, setSessionCookie, type SessionStore } from '../access/sessions.js';
import { remoteOf } from './access-guard.js';
import type { AppEnv, HttpDeps } from './context.js';
import { SECURED, documentBodyLimit, errors, limitBody, requireMediaType } from './openapi-common.js';
import { problemResponse } from './problem.js';

const path = API_ROUTES.session.template;
const sessionCookieHeader = { 'set-cookie': { description: 'kiln_session=<opaque>; HttpOnly; SameSite=Strict; Path=/; Max-Age=<s> (Secure over TLS)', schema: { type: 'string' as const } } };

const signIn = createRoute({
  method: 'post',
  path,
  summary: 'Sign in to the dashboard: trade an API key for a session cookie',
  description:
    'The key goes in the body (`{"key": "kiln_key_…"}`; the dashboard does this) or as the bearer token. The answer sets the `kiln_session` cookie (HttpOnly, SameSite=Strict), which every `/api/v1` route then takes in place of `Authorization` (same key, same scopes). Sessions live in memory for 12 h at most and never past their key: revoking the key, its expiry or a coordinator restart ends them. With the cookie, a POST, PUT or DELETE whose `Origin` is not this host is refused (403).',
  security: SECURED,
  middleware: [requireMediaType(['application/json'], { optional: true }), limitBody(SESSION_BODY_MAX_BYTES, 'the body')],
  request: { body: { required: false, content: { 'application/json': { schema: SessionBody } } } },
  responses: {
    200: { description: 'Signed in: the session cookie is set', headers: sessionCookieHeader, content: { 'application/json': { schema: SessionView } } },
    ...errors([400, [401, 'No key, or a wrong, expired or revoked one'], 413, 415]),
  },
});

const whoAmI = createRoute({
  method: 'get',
  path,
  summary: 'Who the session cookie (or the bearer key) is: key id, name, scopes, when it ends',
  security: SECURED,
  responses: { 200: { description: 'The session', content: { 'application/json': { schema: SessionView } } }, ...errors([[401, 'No session (signed out, expired, its key revoked) and no key']]) },
});

const signOut = createRoute({
  method: 'delete',
  path,
  summary: 'Sign out: ends the session and clears its cookie',
  security: SECURED,
  responses: { 204: { description: 'Signed out (the cookie is cleared)', headers: sessionCookieHeader }, ...errors([]) },
});

export interface SessionRouteDeps extends Pick<HttpDeps, 'tokens' | 'keys' | 'audit'> {
  sessions: SessionStore;
  /** The coordinator serves TLS: cookies get `Secure`. */
  secureCookies: boolean;
}

function viewOf(p: KeyPrincipal, expiresAt: number | null): SessionViewT {
  return { key_id: p.id, name: p.name, scopes: [...p.scopes], expires_at: expiresAt === null ? null : new Date(expiresAt).toISOString() };
}

export function registerSessionRoutes(app: OpenAPIHono<AppEnv>, deps: SessionRouteDeps): void {
  documentBodyLimit(app, `post ${path}`, SESSION_BODY_MAX_BYTES);
  const audit = (c: Context<AppEnv>, actor: string, action: string, outcome: 'ok' | 'refused', detail?: string) =>
    deps.audit.record({ actor, action, outcome, remote: remoteOf(c), ...(detail !== undefined ? { detail } : {}) });

  app.openapi(signIn, (c) => {
    const body = c.req.valid('json') as SessionBodyT | undefined;
    let principal: KeyPrincipal | null = null;
    if (body?.key !== undefined) {
      const p = deps.tokens.authenticate(`Bearer ${body.key}`);
      principal = p?.kind === 'key' ? p : null;
    } else if (c.get('session') === null) {
      // The bearer key signs in; a session cookie alone does not (it would renew itself past its 12 h for good).
      const p = c.get('principal') as AppEnv['Variables']['principal'] | undefined;
      principal = p?.kind === 'key' ? p : null;
    }
    if (principal === null) {
      const detail = body?.key !== undefined ? 'the key is wrong, expired or revoked (an agent token cannot sign in)' : 'send the key to sign in with: {"key": "kiln_key_…"}';
      audit(c, 'anonymous', 'session.create', 'refused', `401 E_UNAUTHORIZED: ${detail}`);
      return problemResponse(c, 401, 'E_UNAUTHORIZED', detail) as never;
    }
    const { id, expiresAt, maxAgeS } = deps.sessions.create(principal);
    audit(c, actorOf(principal), 'session.create', 'ok');
    const cookie = setSessionCookie(id, maxAgeS, deps.secureCookies);
    return c.json(viewOf(principal, expiresAt), 200, { 'set-cookie': cookie, 'cache-control': 'no-store' });
  });

  app.openapi(whoAmI, (c) => {
    const p = c.get('principal');
    if (p.kind !== 'key') return problemResponse(c, 401, 'E_UNAUTHORIZED', 'no session') as never;
    const session = c.get('session');
    return c.json(viewOf(p, session ? session.expiresAt : deps.keys.expiresAtMs(p.id)), 200, { 'cache-control': 'no-store' });
  });

  app.openapi(signOut, (c) => {
    const session = c.get('session');
    if (session) deps.sessions.end(session.id);
    audit(c, actorOf(c.get('principal')), 'session.delete', 'ok', session ? undefined : 'no session cookie: nothing to end');
    c.header('set-cookie', clearSessionCookie(deps.secureCookies));
    return c.body(null, 204);
  });
}
