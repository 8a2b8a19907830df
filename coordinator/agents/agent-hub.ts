/**
 * The agents' WebSocket endpoint, `/api/v1/agent`, on the coordinator's HTTP server: the
 * upgrade, its auth, and the ws plumbing of each connection.
 *
 * The upgrade is checked before any WebSocket exists: a wrong path gets 404 and a
 * missing or wrong agent token gets 401 (problem+json on the raw socket). Each accepted
 * socket gets an `AgentConnectionSession` (agent-session.ts), which holds the protocol:
 * hello and version negotiation, welcome, frames to the engine, acks and error frames.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { AGENT_SOCKET_PATH, CLOSE_CODES, MAX_FRAME_BYTES, systemTimers, type ProblemT } from '../../shared/index.js';
import { AgentConnectionSession, type AgentSessionOptions, type SessionEngine } from './agent-session.js';

export interface AgentHubOptions {
  engine: SessionEngine;
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
}

const STATUS_TEXT = new Map([
  [401, 'Unauthorized'],
  [404, 'Not Found'],
]);

/** Answers a refused upgrade on the raw socket, as problem+json. */
function rejectUpgrade(socket: Duplex, status: 401 | 404, code: string, detail: string): void {
  const title = STATUS_TEXT.get(status) ?? 'Bad Request';
  const problem: ProblemT = { type: `urn:kiln:error:${code}`, title, status, detail, code };
  const body = JSON.stringify(problem);
  socket.end(`HTTP/1.1 ${status} ${title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

export class AgentHub {
  private readonly wss: WebSocketServer;
  private readonly sessions = new Set<AgentConnectionSession>();

  private readonly sessionOptions: AgentSessionOptions;

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
    if (this.opts.tokens.role(req.headers.authorization) !== 'agent') {
      this.opts.logger.warn({ remote: req.socket.remoteAddress }, 'agent connection refused: missing or wrong agent token');
      return rejectUpgrade(socket, 401, 'E_UNAUTHORIZED', 'missing or wrong agent token');
    }
    // Only the address outlives the upgrade: holding `req` (headers, token) per connection costs memory.
    const remote = req.socket.remoteAddress ?? 'unknown';
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, remote));
  }

  /** Closes every agent connection (coordinator shutdown). */
  closeAll(code: number = CLOSE_CODES.GOING_AWAY, reason = 'coordinator shutting down'): void {
    for (const s of this.sessions) s.close(code, reason);
  }

  private onConnection(ws: WebSocket, remote: string): void {
    // Log lines carry the remote address; no child logger per connection (10k idle agents).
    const base = this.opts.logger;
    const session = new AgentConnectionSession(
      { send: (bytes) => ws.send(bytes), isOpen: () => ws.readyState === ws.OPEN, close: (code, reason) => ws.close(code, reason) },
      this.sessionOptions,
      { warn: (o, msg) => base.warn({ remote, ...o }, msg), error: (o, msg) => base.error({ remote, ...o }, msg) },
    );
    this.sessions.add(session);
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      void session.received(buf, isBinary);
    });
    ws.on('close', (code) => {
      this.sessions.delete(session);
      session.closed(code);
    });
    ws.on('error', (err) => base.warn({ remote, err: err.message }, 'agent socket error'));
  }
}
