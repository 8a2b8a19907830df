/**
 * What a standby coordinator answers (issue 14) while another one holds the leader lease of
 * their shared PostgreSQL state:
 *
 * - `/livez` 200; `/readyz` and `/healthz` 503 (a load balancer sends traffic to the leader);
 * - `GET /api/v1/cluster` (authenticated like on the leader) the cluster view;
 * - reads of builds, their logs and artifacts, the dead letters and CAS blobs are answered
 *   from the standby's own copy of the state (`replica`: the leader's journal rows applied
 *   as they are written, a fraction of a second behind), authenticated as on the leader, so
 *   they are served during an election too;
 * - other reads (`GET`/`HEAD /api/v1/…`: the fleet, the events stream, log follows) are
 *   forwarded to the leader and its answer streamed back (the leader authenticates them; a
 *   request forwarded once is never forwarded again, and a leader that cannot be reached
 *   makes the 503 below);
 * - writes (any other `/api/v1/…` request) a 503 problem `E_NOT_LEADER` with the leader's URL
 *   in `leader` (null during an election) and `Retry-After: 1`: clients with a list of
 *   coordinators retry there. Nothing is done here, so no request runs twice;
 * - other GETs (the dashboard) a 307 to the same path on the leader, when one is known;
 * - an agent's WebSocket is accepted and closed at once with `NOT_LEADER` (4016) and
 *   `leader <url>`, so the agent connects to the leader.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Hono, type Context } from 'hono';
import { WebSocketServer } from 'ws';
import { AGENT_SOCKET_PATH, API_PREFIX, API_ROUTES, CLOSE_CODES, NotLeaderError, notLeaderReason, type ClusterViewT } from '../../shared/index.js';
import type { TokenCheck } from './auth.js';
import { problemResponse } from './problem.js';

export interface StandbyDeps {
  /** The leader's advertised URL as last seen (null: none known, an election). */
  leader: () => string | null;
  /** This coordinator's advertised URL (a stale view naming it is not followed). */
  self: string;
  cluster: () => Promise<ClusterViewT>;
  /** Who a request is from (GET /api/v1/cluster needs a known caller, as on the leader). */
  tokens: TokenCheck;
  /** The app over the standby's own copy of the state (reads only), when it has one. */
  replica?: () => ((req: Request) => Response | Promise<Response>) | null;
}

/** Reads a standby answers from its own copy: builds (their logs and artifacts), dead letters, CAS blobs; never a stream. */
export function servedByReplica(method: string, url: URL, accept: string | undefined): boolean {
  if (method !== 'GET' && method !== 'HEAD') return false;
  if (accept?.includes('text/event-stream')) return false;
  const follow = url.searchParams.get('follow');
  if (follow !== null && follow !== 'false' && follow !== '0') return false;
  const p = url.pathname;
  return p === API_ROUTES.builds.template || p.startsWith(`${API_ROUTES.builds.template}/`) || p === API_ROUTES.deadLetter.template || p.startsWith('/api/v1/cas/');
}

export interface StandbyApp {
  fetch: (req: Request) => Response | Promise<Response>;
  handleUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Closes the sockets it accepted and not yet closed. */
  close(): void;
}

/** Set on a read a standby forwards (to its own URL): a forwarded read is never forwarded again. */
const FORWARDED_HEADER = 'x-kiln-forwarded-by';
/** How long a forwarded read waits for the leader's answer to begin. */
const FORWARD_HEADERS_MS = 5_000;
/** What a forwarded read carries of the client's request. */
const FORWARDED_REQUEST_HEADERS = ['authorization', 'cookie', 'accept', 'last-event-id', 'range', 'if-none-match', 'x-request-id'];

export function createStandbyApp(deps: StandbyDeps): StandbyApp {
  const app = new Hono();
  const notLeader = (c: Context) => {
    const err = new NotLeaderError(deps.leader());
    return problemResponse(c, err.status, err.code, err.message, undefined, { 'retry-after': '1' }, { leader: err.leader });
  };
  app.get('/livez', (c) => c.text('ok\n', 200));
  const ready = (c: Context) => {
    const leader = deps.leader();
    return problemResponse(c, 503, 'E_UNAVAILABLE', `not ready: this coordinator is a standby (${leader ? `the leader is ${leader}` : 'an election is under way'})`, undefined, undefined, { leader });
  };
  app.get('/readyz', ready);
  app.get('/healthz', ready);
  app.get(API_ROUTES.cluster.template, async (c) => {
    if (!deps.tokens.authenticate(c.req.header('authorization'))) return problemResponse(c, 401, 'E_UNAUTHORIZED', 'missing or unknown API key', undefined, { 'www-authenticate': 'Bearer' });
    return c.json(await deps.cluster(), 200);
  });
  app.on(['GET', 'HEAD'], `${API_PREFIX}/*`, (c) => {
    const own = deps.replica?.();
    if (own && servedByReplica(c.req.method, new URL(c.req.url), c.req.header('accept'))) return own(c.req.raw);
    return forwardRead(c);
  });
  app.all(`${API_PREFIX}/*`, notLeader);
  app.all(API_PREFIX, notLeader);
  app.get('*', (c) => {
    const leader = deps.leader();
    if (!leader) return notLeader(c);
    const u = new URL(c.req.url);
    return c.redirect(`${leader.replace(/\/+$/, '')}${u.pathname}${u.search}`, 307);
  });
  app.all('*', notLeader);

  /** A read, forwarded to the leader; its answer streamed back as it comes. */
  const forwardRead = async (c: Context): Promise<Response> => {
    const leader = deps.leader();
    if (!leader || leader === deps.self || c.req.header(FORWARDED_HEADER) !== undefined) return notLeader(c);
    const u = new URL(c.req.url);
    const headers = new Headers();
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const v = c.req.header(name);
      if (v !== undefined) headers.set(name, v);
    }
    headers.set(FORWARDED_HEADER, deps.self);
    const abort = new AbortController();
    c.req.raw.signal.addEventListener('abort', () => abort.abort(), { once: true });
    // A leader that takes the connection but does not answer (paused, during a failover) is
    // given up on after FORWARD_HEADERS_MS, not undici's 5 minutes; a stream, once answering, runs on.
    const noAnswer = setTimeout(() => abort.abort(), FORWARD_HEADERS_MS);
    let res: Response;
    try {
      res = await fetch(`${leader.replace(/\/+$/, '')}${u.pathname}${u.search}`, { method: c.req.method, headers, redirect: 'manual', signal: abort.signal });
    } catch {
      return notLeader(c); // the leader does not answer (gone, or an election): the client tries elsewhere
    } finally {
      clearTimeout(noAnswer);
    }
    const out = new Headers(res.headers);
    // fetch has already decoded the body: its length and encoding no longer apply.
    out.delete('content-encoding');
    out.delete('content-length');
    out.delete('transfer-encoding');
    out.delete('connection');
    return new Response(res.body, { status: res.status, headers: out });
  };

  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  return {
    fetch: (req) => app.fetch(req),
    handleUpgrade(req, socket, head) {
      socket.on('error', () => socket.destroy());
      const path = (req.url ?? '').split('?')[0];
      if (path !== AGENT_SOCKET_PATH) {
        socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => ws.close(CLOSE_CODES.NOT_LEADER, notLeaderReason(deps.leader())));
    },
    close() {
      for (const ws of wss.clients) ws.terminate();
    },
  };
}
