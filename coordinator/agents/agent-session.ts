/**
 * The coordinator's side of one agent connection, apart from the HTTP upgrade and the
 * socket (agent-hub.ts): the hello deadline, version negotiation, hello → `engine.hello`
 * → welcome → `engine.welcomed`, every later frame decoded and validated (codec.ts) and
 * handed to `engine.frame` with its ack sent back, `error` frames for what is invalid,
 * heartbeat-ack thinning, and `engine.disconnected` when the connection ends (a clean
 * AGENT_SHUTDOWN close from the agent is a departure, not a loss).
 *
 * Pure of I/O: it takes a `CoordinatorLink` (send encoded frames, close), a clock and
 * timers, so the deterministic simulation (test/sim/) drives this same code over its
 * simulated network and event queue.
 *
 * Heartbeats are acked only as often as the agent needs to hear from the coordinator
 * within its lost timeout (about every other one with the defaults), which halves the
 * cost of an idle fleet.
 */
import {
  CLOSE_CODES,
  KILN_VERSION,
  MAX_LOG_CHUNK_BYTES,
  PROTOCOL_VERSIONS,
  coerceError,
  decodeFrame,
  encodeFrame,
  type Payload,
  type Timer,
  type Timers,
  type ToAgentType,
} from '../../shared/index.js';
import type { Engine } from '../builds/engine.js';
import type { AgentChannel, AgentEntry } from '../placement/agent-registry.js';

/** What a session needs of the engine. */
export type SessionEngine = Pick<Engine, 'hello' | 'welcomed' | 'frame' | 'disconnected'>;

/** One connection's socket, as the session sees it. */
export interface CoordinatorLink {
  /** Sends one encoded frame. */
  send(bytes: Buffer): void;
  /** Whether the socket is still open for sending. */
  isOpen(): boolean;
  /** Starts a closing handshake. */
  close(code: number, reason: string): void;
}

export interface SessionLog {
  warn(o: object, msg: string): void;
  error(o: object, msg: string): void;
}

/** Settings shared by every connection's session (one object for the whole hub). */
export interface AgentSessionOptions {
  engine: SessionEngine;
  heartbeatIntervalMs: number;
  lostAfterMs: number;
  /** Sent in the welcome: cut off this long, the agent cancels its running builds. */
  cutoffCancelMs: number;
  /** @default 10 s */
  helloTimeoutMs?: number;
  /** Adds the registry credentials an assignment needs (coordinator/registry/credentials.ts). */
  withRegistryAuth?: (assign: Payload<'assign'>) => Payload<'assign'>;
  timers: Timers;
  /** A monotonic clock in ms (heartbeat-ack thinning). */
  now: () => number;
  /** @default KILN_VERSION */
  coordinatorVersion?: string;
}

/** WebSocket close reasons are limited to 123 bytes. */
export function closeReason(text: string): string {
  const b = Buffer.from(text);
  return b.length <= 123 ? text : b.subarray(0, 120).toString('utf8').replace(/\uFFFD*$/, '') + '...';
}

export class AgentConnectionSession {
  /** The registry's entry once the hello was accepted. */
  entry: AgentEntry | null = null;
  readonly channel: AgentChannel;
  private version = 0;
  private nextId = 0;
  private lastSentAt = 0;
  private helloStarted = false;
  /** This end started the close (a close code coming back is its echo, not the agent's word). */
  private closing = false;
  private ended = false;
  private readonly helloTimer: Timer;

  constructor(
    private readonly link: CoordinatorLink,
    private readonly opts: AgentSessionOptions,
    /** This connection's log (its lines carry the remote address). */
    private readonly log: SessionLog,
  ) {
    this.channel = {
      send: <T extends ToAgentType>(type: T, payload: Payload<T>) => {
        if (!link.isOpen()) return;
        // Registry credentials join an assignment only on its way out (never stored).
        const out = type === 'assign' && opts.withRegistryAuth ? (opts.withRegistryAuth(payload as Payload<'assign'>) as Payload<T>) : payload;
        link.send(encodeFrame(type, ++this.nextId, out, this.version || PROTOCOL_VERSIONS[0]));
        this.lastSentAt = opts.now();
      },
      close: (code, reason) => this.close(code, reason),
    };
    this.helloTimer = opts.timers.after(opts.helloTimeoutMs ?? 10_000, () => {
      if (!this.entry) this.close(CLOSE_CODES.HELLO_TIMEOUT, 'no hello received');
    });
  }

  /** Closes the connection from this end. */
  close(code: number, reason: string): void {
    this.closing = true;
    this.link.close(code, closeReason(reason));
  }

  private sendError(code: string, message: string, ref?: number): void {
    this.channel.send('error', { code, message, ...(ref !== undefined ? { ref } : {}) });
  }

  /** A message from the agent; resolves once the engine handled it (the hub does not wait). */
  async received(data: Buffer, isBinary = true): Promise<void> {
    if (!isBinary) {
      this.sendError('E_PROTOCOL', 'text frames are not part of the kiln protocol; send msgpack binary frames');
      return;
    }
    const decoded = decodeFrame(data, 'coordinator');
    const entry = this.entry;
    if (!entry) {
      if (this.helloStarted) return; // frames racing the hello handshake are dropped
      if (!decoded.ok || decoded.frame.type !== 'hello') {
        const why = decoded.ok ? `expected hello, got ${decoded.frame.type}` : decoded.error;
        this.sendError('E_PROTOCOL', why);
        this.close(CLOSE_CODES.INVALID_FRAME, `invalid hello: ${why}`);
        return;
      }
      return this.hello(decoded.frame.payload);
    }
    if (!decoded.ok) {
      this.log.warn({ agent: entry.name, error: decoded.error }, 'invalid frame from agent');
      this.sendError('E_PROTOCOL', decoded.error, decoded.id);
      return;
    }
    const frame = decoded.frame;
    if (frame.v !== this.version) {
      this.sendError('E_PROTOCOL_VERSION', `frame has protocol version ${frame.v}; this connection speaks ${this.version}`, frame.id);
      return;
    }
    let ack: Payload<'ack'> | null;
    try {
      ack = await this.opts.engine.frame(entry, frame);
    } catch (err) {
      // One bad frame costs this session, never the process: the agent reconnects and
      // its hello re-synchronises what it runs.
      this.log.error({ err, agent: entry.name, type: frame.type }, 'handling a frame failed; closing the session');
      this.sendError('E_INTERNAL', `coordinator failed to handle ${frame.type}: ${coerceError(err).message}`, frame.id);
      this.close(CLOSE_CODES.INTERNAL_ERROR, `internal error handling ${frame.type}`);
      return;
    }
    if (!ack) return;
    // A heartbeat ack only proves the link to the agent. Skip it while the agent will
    // still hear from us in time: its next heartbeat (within 1.1 intervals) gets one.
    const { heartbeatIntervalMs, lostAfterMs } = this.opts;
    if (frame.type === 'heartbeat' && this.opts.now() - this.lastSentAt + 1.1 * heartbeatIntervalMs <= 0.8 * lostAfterMs) return;
    this.channel.send('ack', ack);
  }

  private async hello(hello: Payload<'hello'>): Promise<void> {
    const common = PROTOCOL_VERSIONS.filter((v) => hello.protocol_versions.includes(v));
    const coordinatorVersion = this.opts.coordinatorVersion ?? KILN_VERSION;
    if (common.length === 0) {
      const msg = `incompatible protocol: agent speaks ${hello.protocol_versions.join(',')}, coordinator speaks ${PROTOCOL_VERSIONS.join(',')}`;
      this.log.warn({ agent: hello.name, agent_version: hello.agent_version }, msg);
      this.sendError('E_PROTOCOL_VERSION', `${msg}; upgrade the agent or the coordinator (coordinator ${coordinatorVersion}, agent ${hello.agent_version})`);
      this.close(CLOSE_CODES.PROTOCOL_VERSION, msg);
      return;
    }
    this.version = Math.max(...common);
    this.helloStarted = true;
    const engine = this.opts.engine;
    let outcome: Awaited<ReturnType<SessionEngine['hello']>>;
    try {
      outcome = await engine.hello(hello, this.channel);
    } catch (err) {
      this.log.error({ err }, 'handling hello failed');
      this.close(CLOSE_CODES.INTERNAL_ERROR, 'internal error');
      return;
    }
    this.helloTimer.clear();
    if (!outcome.ok) {
      this.sendError('E_CONFLICT', outcome.reason);
      this.close(outcome.closeCode, outcome.reason);
      return;
    }
    if (!this.link.isOpen() || this.ended) {
      engine.disconnected(outcome.entry, this.channel);
      return;
    }
    this.entry = outcome.entry;
    this.channel.send('welcome', {
      protocol_version: this.version,
      coordinator_version: coordinatorVersion,
      agent_name: hello.name,
      heartbeat_interval_ms: this.opts.heartbeatIntervalMs,
      lost_after_ms: this.opts.lostAfterMs,
      max_log_chunk_bytes: MAX_LOG_CHUNK_BYTES,
      cutoff_cancel_ms: this.opts.cutoffCancelMs,
      resume: outcome.resume,
    });
    engine.welcomed(outcome.entry, this.channel);
  }

  /**
   * The connection ended with this close code (ABNORMAL for a reset). The agent's own
   * AGENT_SHUTDOWN close is a departure (it shut down cleanly); anything else, GOING_AWAY
   * included (a proxy restarting sends it too), leaves its attempts waiting for it to come back.
   */
  closed(code: number = CLOSE_CODES.ABNORMAL): void {
    if (this.ended) return;
    this.ended = true;
    this.helloTimer.clear();
    const departed = code === CLOSE_CODES.AGENT_SHUTDOWN && !this.closing;
    if (this.entry) this.opts.engine.disconnected(this.entry, this.channel, departed ? 'shutdown' : 'dropped');
  }
}
