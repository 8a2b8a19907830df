/**
 * The agents' WebSocket endpoint, `/api/v1/agent`, on the coordinator's HTTP server: the
 * upgrade, its auth, and the ws plumbing of each connection.
 *
 * The upgrade is checked before any WebSocket exists: a wrong path gets 404 and a
 * missing or wrong agent token gets 401 (problem+json on the raw socket). Each accepted
 * socket gets an `AgentConnectionSession` (agent-session.ts), which holds the protocol:
 * hello and version negotiation, welcome, frames to the engine, acks and error frames.
 *
 * Besides the shared agent token, an agent may connect with its own credential
 * (access/agent-credentials.ts): its hello must then name the agent the credential was
 * issued to. `revoke(name)` closes that agent's credential connections with
 * CREDENTIAL_REVOKED and has the engine lose it at once (its attempts queued again);
 * `askRotate(name)` closes them with CREDENTIAL_ROTATE (the agent gets a new credential
 * and reconnects; its builds go on).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { AGENT_SOCKET_PATH, CLOSE_CODES, corkForTurn, MAX_FRAME_BYTES, systemTimers, type ProblemT } from '../../shared/index.js';
import type { AuditSink } from '../access/agent-audit.js';
import { isAgentCredential, type VerifyResult } from '../access/agent-credentials.js';
import type { Engine } from '../builds/engine.js';
import { AgentConnectionSession, type AgentSessionOptions, type SessionEngine } from './agent-session.js';

export interface AgentHubOptions {
  engine: SessionEngine & Partial<Pick<Engine, 'agentCutOff'>>;
  /** The role an Authorization header grants (http/auth.ts TokenCheck). */
  tokens: { role(authorization: string | undefined): string | null };
  logger: Logger;
  heartbeatIntervalMs: number;
  lostAfterMs: number;
  /** Sent in the welcome: cut off this long, the agent cancels its running builds. */
  cutoffCancelMs: number;
  helloTimeoutMs?: number;
  /** Adds the registry credentials an assignment needs as it is sent. */
  withRegistryAuth?: AgentSessionOptions['withRegistryAuth'];
  /** Per-agent credentials; absent: only the shared agent token is taken. */
  credentials?: { verify(token: string): VerifyResult };
  audit?: AuditSink;
  /**
   * The per-address rate limit of the HTTP API (access/rate-limit.ts; null or absent: off).
   * A refused upgrade takes a token from its address's bucket; with the bucket empty the
   * refusal is a 429 with Retry-After, neither logged nor audited. Accepted agents take none.
   */
  refusalLimit?: { take(key: string): { ok: true } | { ok: false; retryAfterS: number } } | null;
}

/** A connection made with an agent credential. */
interface CredentialConnection {
  session: AgentConnectionSession;
}

const STATUS_TEXT = new Map([
  [401, 'Unauthorized'],
  [404, 'Not Found'],
  [429, 'Too Many Requests'],
]);

/** Answers a refused upgrade on the raw socket, as problem+json. */
function rejectUpgrade(socket: Duplex, status: 401 | 404 | 429, code: string, detail: string, retryAfterS?: number): void {
  const title = STATUS_TEXT.get(status) ?? 'Bad Request';
  const problem: ProblemT = { type: `urn:kiln:error:${code}`, title, status, detail, code };
  const body = JSON.stringify(problem);
  const retry = retryAfterS === undefined ? '' : `Retry-After: ${retryAfterS}\r\n`;
  socket.end(`HTTP/1.1 ${status} ${title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${retry}Connection: close\r\n\r\n${body}`);
}

export class AgentHub {
  private readonly wss: WebSocketServer;
  private readonly sessions = new Set<AgentConnectionSession>();

  private readonly sessionOptions: AgentSessionOptions;
  /** Connections made with a credential, by the agent name it was issued to. */
  private readonly byCredential = new Map<string, Set<CredentialConnection>>();

  constructor(private readonly opts: AgentHubOptions) {
    const { engine, heartbeatIntervalMs, lostAfterMs, cutoffCancelMs, helloTimeoutMs, withRegistryAuth } = opts;
    this.sessionOptions = {
      engine,
      heartbeatIntervalMs,
      lostAfterMs,
      cutoffCancelMs,
      ...(helloTimeoutMs !== undefined ? { helloTimeoutMs } : {}),
      ...(withRegistryAuth ? { withRegistryAuth } : {}),
      timers: systemTimers,
      now: () => performance.now(),
    };
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false });
  }

  /** The http server's `upgrade` handler. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const path = (req.url ?? '').split('?')[0];
    if (path !== AGENT_SOCKET_PATH) return rejectUpgrade(socket, 404, 'E_NOT_FOUND', `no WebSocket endpoint at ${path}; agents connect to ${AGENT_SOCKET_PATH}`);
    const remote = req.socket.remoteAddress ?? 'unknown';
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
    let credentialOf: { name: string; token: string } | null = null;
    let rotate = false;
    if (bearer !== undefined && this.opts.credentials && isAgentCredential(bearer)) {
      const v = this.opts.credentials.verify(bearer);
      if (v.ok) {
        credentialOf = { name: v.name, token: bearer };
        rotate = v.rotateRequested;
      } else if (this.opts.tokens.role(req.headers.authorization) !== 'agent') {
        // (A shared agent token configured with the credential prefix is still the shared token.)
        if (this.overLimit(socket, remote)) return;
        this.refused(remote, `agent:${v.name ?? 'unknown'}`, v.reason);
        return rejectUpgrade(socket, 401, 'E_UNAUTHORIZED', `agent credential refused: ${v.reason}`);
      }
    } else if (this.opts.tokens.role(req.headers.authorization) !== 'agent') {
      if (this.overLimit(socket, remote)) return;
      this.refused(remote, 'unknown', 'missing or wrong agent token');
      return rejectUpgrade(socket, 401, 'E_UNAUTHORIZED', 'missing or wrong agent token');
    }
    // Only the address outlives the upgrade: holding `req` (headers, token) per connection costs memory.
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      // An admin asked this agent to rotate while it was away: it does so, then reconnects.
      if (rotate) return ws.close(CLOSE_CODES.CREDENTIAL_ROTATE, 'an admin asked for a new credential: rotate it and reconnect');
      this.onConnection(ws, socket, remote, credentialOf);
    });
  }

  /** A refusal from `remote` past its address's rate limit: answered 429 (true), else false (the caller answers 401). */
  private overLimit(socket: Duplex, remote: string): boolean {
    const r = this.opts.refusalLimit?.take(remote);
    if (!r || r.ok) return false;
    rejectUpgrade(socket, 429, 'E_RATE_LIMITED', `too many refused agent connections from ${remote}: retry in ${r.retryAfterS}s`, r.retryAfterS);
    return true;
  }

  private refused(remote: string, actor: string, why: string): void {
    this.opts.logger.warn({ remote, reason: why }, `agent connection refused: ${why}`);
    this.opts.audit?.record({ actor, action: 'agent.connect', outcome: 'refused', detail: why, remote });
  }

  /**
   * Cuts off the agent whose credential was just revoked: its credential connections are
   * closed with CREDENTIAL_REVOKED and the engine loses it now (its attempts are queued
   * again). Resolves once that is recorded.
   */
  async revoke(name: string): Promise<void> {
    const conns = [...(this.byCredential.get(name) ?? [])];
    const why = `agent ${name}'s credential was revoked`;
    for (const c of conns) c.session.close(CLOSE_CODES.CREDENTIAL_REVOKED, 'credential revoked by an admin: do not reconnect');
    const cutOff = this.opts.engine.agentCutOff?.bind(this.opts.engine);
    if (!cutOff) return;
    if (conns.length === 0) await cutOff(name, null, why);
    for (const c of conns) await cutOff(name, c.session.channel, why);
  }

  /** Tells the agent to rotate its credential now (it reconnects with the new one); false when it has no credential connection. */
  askRotate(name: string): boolean {
    const conns = this.byCredential.get(name);
    for (const c of conns ?? []) c.session.close(CLOSE_CODES.CREDENTIAL_ROTATE, 'an admin asked for a new credential: rotate it and reconnect');
    return (conns?.size ?? 0) > 0;
  }

  /**
   * A session engine that refuses a hello naming another agent than the credential's, and
   * checks the credential again at the hello: one revoked after the upgrade was verified
   * but before `revoke` could see the connection (the upgrade completes asynchronously) is
   * refused here with CREDENTIAL_REVOKED instead of getting a session.
   */
  private credentialEngine(name: string, token: string, remote: string): SessionEngine {
    const engine = this.opts.engine;
    return {
      hello: (hello, channel) => {
        const v = this.opts.credentials?.verify(token);
        if (!v?.ok || v.name !== name) {
          const reason = `agent credential refused: ${v && !v.ok ? v.reason : 'no longer valid'}`;
          this.refused(remote, `agent:${name}`, reason);
          return Promise.resolve({ ok: false as const, closeCode: CLOSE_CODES.CREDENTIAL_REVOKED, reason });
        }
        if (hello.name === name) return engine.hello(hello, channel);
        const reason = `this agent credential was issued to agent '${name}', not '${hello.name}'`;
        this.refused(remote, `agent:${name}`, reason);
        return Promise.resolve({ ok: false as const, closeCode: CLOSE_CODES.CREDENTIAL_NAME, reason });
      },
      welcomed: (entry, channel) => engine.welcomed(entry, channel),
      frame: (entry, frame) => engine.frame(entry, frame),
      disconnected: (entry, channel, how) => engine.disconnected(entry, channel, how),
    };
  }

  /** Closes every agent connection (coordinator shutdown). */
  closeAll(code: number = CLOSE_CODES.GOING_AWAY, reason = 'coordinator shutting down'): void {
    for (const s of this.sessions) s.close(code, reason);
  }

  private onConnection(ws: WebSocket, socket: Duplex, remote: string, credential: { name: string; token: string } | null): void {
    // Log lines carry the remote address; no child logger per connection (10k idle agents).
    const base = this.opts.logger;
    const credentialOf = credential?.name ?? null;
    // The session's engine keeps the token (a few dozen bytes) to check it again at the hello.
    const options = credential === null ? this.sessionOptions : { ...this.sessionOptions, engine: this.credentialEngine(credential.name, credential.token, remote) };
    const session = new AgentConnectionSession(
      {
        // The frames of one turn (the acks of an agent's log frames) leave in one write: shared/cork-per-turn.ts.
        send: (bytes) => {
          corkForTurn(socket);
          ws.send(bytes);
        },
        isOpen: () => ws.readyState === ws.OPEN,
        close: (code, reason) => ws.close(code, reason),
      },
      options,
      { warn: (o, msg) => base.warn({ remote, ...o }, msg), error: (o, msg) => base.error({ remote, ...o }, msg) },
    );
    this.sessions.add(session);
    let conn: CredentialConnection | null = null;
    if (credentialOf !== null) {
      conn = { session };
      const set = this.byCredential.get(credentialOf) ?? new Set<CredentialConnection>();
      set.add(conn);
      this.byCredential.set(credentialOf, set);
    }
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      void session.received(buf, isBinary);
    });
    ws.on('close', (code) => {
      this.sessions.delete(session);
      if (conn !== null && credentialOf !== null) {
        const set = this.byCredential.get(credentialOf);
        set?.delete(conn);
        if (set?.size === 0) this.byCredential.delete(credentialOf);
      }
      session.closed(code);
    });
    ws.on('error', (err) => base.warn({ remote, err: err.message }, 'agent socket error'));
  }
}
