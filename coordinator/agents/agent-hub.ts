/**
 * The agents' WebSocket endpoint, `/api/v1/agent`, on the coordinator's HTTP server.
 *
 * The upgrade is checked before any WebSocket exists: a wrong path gets 404 and a
 * missing or wrong agent token gets 401 (problem+json on the raw socket). After the
 * upgrade the agent has `helloTimeoutMs` to send its hello; the hub picks the highest
 * protocol version both sides speak (or closes with 4002 and a reason the agent shows
 * its operator), hands the hello to the engine, and answers `welcome`. From then on
 * every frame is decoded and validated (codec.ts) and passed to the engine; invalid
 * frames get an `error` frame back and never reach the engine. Heartbeats are acked only
 * as often as the agent needs to hear from the coordinator within its lost timeout
 * (about every other one with the defaults), which halves the cost of an idle fleet.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import {
  AGENT_SOCKET_PATH,
  coerceError,
  CLOSE_CODES,
  KILN_VERSION,
  MAX_FRAME_BYTES,
  MAX_LOG_CHUNK_BYTES,
  PROTOCOL_VERSIONS,
  decodeFrame,
  encodeFrame,
  type Payload,
  type ToAgentType,
} from '../../shared/index.js';
import type { Engine } from '../builds/engine.js';
import type { TokenCheck } from '../http/auth.js';
import { problemBody } from '../http/problem.js';
import type { AgentChannel, AgentEntry } from '../placement/agent-registry.js';


export interface AgentHubOptions {
  engine: Engine;
  tokens: TokenCheck;
  logger: Logger;
  heartbeatIntervalMs: number;
  lostAfterMs: number;
  /** Sent in the welcome: cut off this long, the agent cancels its running builds. */
  cutoffCancelMs: number;
  helloTimeoutMs?: number;
}

/** WebSocket close reasons are limited to 123 bytes. */
function closeReason(text: string): string {
  const b = Buffer.from(text);
  return b.length <= 123 ? text : b.subarray(0, 120).toString('utf8').replace(/\uFFFD*$/, '') + '...';
}

function rejectUpgrade(socket: Duplex, status: number, code: string, detail: string): void {
  const body = JSON.stringify(problemBody(status, code, detail));
  const reason = status === 401 ? 'Unauthorized' : status === 404 ? 'Not Found' : 'Bad Request';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export class AgentHub {
  private readonly wss: WebSocketServer;
  private readonly sockets = new Set<WebSocket>();

  constructor(private readonly opts: AgentHubOptions) {
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
    for (const ws of this.sockets) ws.close(code, reason);
  }

  private onConnection(ws: WebSocket, remote: string): void {
    this.sockets.add(ws);
    // Log lines carry the remote address; no child logger per connection (10k idle agents).
    const base = this.opts.logger;
    const log = {
      warn: (o: object, msg: string) => base.warn({ remote, ...o }, msg),
      error: (o: object, msg: string) => base.error({ remote, ...o }, msg),
    };
    let entry: AgentEntry | null = null;
    let version = 0;
    let nextId = 0;
    let lastSentAt = 0;
    const channel: AgentChannel = {
      send: <T extends ToAgentType>(type: T, payload: Payload<T>) => {
        if (ws.readyState !== ws.OPEN) return;
        ws.send(encodeFrame(type, ++nextId, payload, version || PROTOCOL_VERSIONS[0]));
        lastSentAt = performance.now();
      },
      close: (code, reason) => ws.close(code, closeReason(reason)),
    };
    const sendError = (code: string, message: string, ref?: number) => channel.send('error', { code, message, ...(ref !== undefined ? { ref } : {}) });
    const helloTimer = setTimeout(() => {
      if (!entry) ws.close(CLOSE_CODES.HELLO_TIMEOUT, 'no hello received');
    }, this.opts.helloTimeoutMs ?? 10_000);
    let helloStarted = false;

    ws.on('message', (data: RawData, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (!isBinary) {
        sendError('E_PROTOCOL', 'text frames are not part of the kiln protocol; send msgpack binary frames');
        return;
      }
      const decoded = decodeFrame(buf, 'coordinator');
      if (!entry) {
        if (helloStarted) return; // frames racing the hello handshake are dropped
        if (!decoded.ok || decoded.frame.type !== 'hello') {
          const why = decoded.ok ? `expected hello, got ${decoded.frame.type}` : decoded.error;
          sendError('E_PROTOCOL', why);
          ws.close(CLOSE_CODES.INVALID_FRAME, closeReason(`invalid hello: ${why}`));
          return;
        }
        const hello = decoded.frame.payload;
        const common = PROTOCOL_VERSIONS.filter((v) => hello.protocol_versions.includes(v));
        if (common.length === 0) {
          const msg = `incompatible protocol: agent speaks ${hello.protocol_versions.join(',')}, coordinator speaks ${PROTOCOL_VERSIONS.join(',')}`;
          log.warn({ agent: hello.name, agent_version: hello.agent_version }, msg);
          sendError('E_PROTOCOL_VERSION', `${msg}; upgrade the agent or the coordinator (coordinator ${KILN_VERSION}, agent ${hello.agent_version})`);
          ws.close(CLOSE_CODES.PROTOCOL_VERSION, closeReason(msg));
          return;
        }
        version = Math.max(...common);
        helloStarted = true;
        void this.opts.engine.hello(hello, channel).then(
          (outcome) => {
            clearTimeout(helloTimer);
            if (!outcome.ok) {
              sendError('E_CONFLICT', outcome.reason);
              ws.close(outcome.closeCode, closeReason(outcome.reason));
              return;
            }
            if (ws.readyState !== ws.OPEN) {
              this.opts.engine.disconnected(outcome.entry, channel);
              return;
            }
            entry = outcome.entry;
            channel.send('welcome', {
              protocol_version: version,
              coordinator_version: KILN_VERSION,
              agent_name: hello.name,
              heartbeat_interval_ms: this.opts.heartbeatIntervalMs,
              lost_after_ms: this.opts.lostAfterMs,
              max_log_chunk_bytes: MAX_LOG_CHUNK_BYTES,
              cutoff_cancel_ms: this.opts.cutoffCancelMs,
              resume: outcome.resume,
            });
            this.opts.engine.welcomed(outcome.entry, channel);
          },
          (err: unknown) => {
            log.error({ err }, 'handling hello failed');
            ws.close(1011, 'internal error');
          },
        );
        return;
      }
      if (!decoded.ok) {
        log.warn({ agent: entry.name, error: decoded.error }, 'invalid frame from agent');
        sendError('E_PROTOCOL', decoded.error, decoded.id);
        return;
      }
      if (decoded.frame.v !== version) {
        sendError('E_PROTOCOL_VERSION', `frame has protocol version ${decoded.frame.v}; this connection speaks ${version}`, decoded.frame.id);
        return;
      }
      const current = entry;
      this.opts.engine.frame(current, decoded.frame).then(
        (ack) => {
          if (!ack) return;
          // A heartbeat ack only proves the link to the agent. Skip it while the agent will
          // still hear from us in time: its next heartbeat (within 1.1 intervals) gets one.
          if (decoded.frame.type === 'heartbeat' && performance.now() - lastSentAt + 1.1 * this.opts.heartbeatIntervalMs <= 0.8 * this.opts.lostAfterMs) return;
          channel.send('ack', ack);
        },
        (err: unknown) => {
          // One bad frame costs this session, never the process: the agent reconnects and
          // its hello re-synchronises what it runs.
          log.error({ err, agent: current.name, type: decoded.frame.type }, 'handling a frame failed; closing the session');
          sendError('E_INTERNAL', `coordinator failed to handle ${decoded.frame.type}: ${coerceError(err).message}`, decoded.frame.id);
          ws.close(1011, closeReason(`internal error handling ${decoded.frame.type}`));
        },
      );
    });

    ws.on('close', () => {
      clearTimeout(helloTimer);
      this.sockets.delete(ws);
      if (entry) this.opts.engine.disconnected(entry, channel);
    });
    ws.on('error', (err) => log.warn({ err: err.message }, 'agent socket error'));
  }
}
