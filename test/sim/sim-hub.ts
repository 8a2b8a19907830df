/**
 * The coordinator's end of each simulated connection: the same steps as the real agent
 * hub (coordinator/agents/agent-hub.ts) — decode and validate every frame, hello ->
 * `engine.hello` -> welcome -> `engine.welcomed`, then every frame to `engine.frame` and
 * its ack back, `engine.disconnected` when the socket closes — minus the HTTP upgrade.
 * Frames are encoded and decoded with the real codec, so the engine only ever sees what
 * would have survived the wire.
 *
 * One difference, on purpose: the real hub does not wait for one frame's handler before
 * starting the next; here each frame is handled to the end before the simulation moves
 * on (so a run is deterministic). Interleavings *inside* the engine's async handlers are
 * therefore not explored.
 */
import {
  CLOSE_CODES,
  MAX_LOG_CHUNK_BYTES,
  decodeFrame,
  encodeFrame,
  type Frame,
  type Payload,
  type ToAgentType,
} from '../../shared/index.js';
import type { Engine, EngineTimings } from '../../coordinator/builds/engine.js';
import type { CoordSide, Net, SimConnection } from './sim-net.js';
import { scrub, type World } from './world.js';
import { describeFrame } from './describe.js';

/** Sees every frame the engine handles, before and after (the invariant checker). */
export interface FrameObserver {
  before(conn: SimConnection, frame: Frame): unknown;
  after(token: unknown, ack: Payload<'ack'> | null): void;
}

/** S, the agent-side cutoff the welcome announces (5 min default). */
const CUTOFF_CANCEL_MS = 300_000;

/** Heartbeats and their acks are left out of the trace (they would fill it). */
export function isHeartbeatAck(type: string, payload: unknown): boolean {
  return type === 'ack' && (payload as { attempt_id?: string }).attempt_id === undefined;
}

function closeReason(text: string): string {
  const b = Buffer.from(text);
  return b.length <= 123 ? text : b.subarray(0, 120).toString('utf8').replace(/\uFFFD*$/, '') + '...';
}

export class SimHub implements CoordSide {
  constructor(
    private readonly world: World,
    private readonly net: Net,
    private readonly engine: Engine,
    private readonly timings: EngineTimings,
    private readonly observer: FrameObserver,
  ) {}

  /** The channel the engine sends through for this connection. */
  attach(conn: SimConnection): void {
    const w = this.world;
    conn.channel = {
      send: <T extends ToAgentType>(type: T, payload: Payload<T>) => {
        if (conn.coordState !== 'open') return; // ws.readyState !== OPEN
        // encodeFrame throws on an invalid payload, as the real hub's send would.
        const bytes = encodeFrame(type, ++conn.coordFrameId, payload, 1);
        if (type === 'assign') {
          const a = payload as Payload<'assign'>;
          w.nameAttempt(a.attempt_id, a.build_id, a.node, a.attempt);
        }
        if (!isHeartbeatAck(type, payload)) w.log(`c→${conn.label} ${scrub(w, describeFrame(w, type, payload as Record<string, unknown>))}`);
        this.net.send(conn, 'toAgent', bytes, type);
      },
      close: (code: number, reason: string) => this.net.coordClose(conn, code, closeReason(scrub(w, reason))),
    };
  }

  async onFrame(conn: SimConnection, bytes: Buffer): Promise<void> {
    const w = this.world;
    const decoded = decodeFrame(bytes, 'coordinator');
    if (!decoded.ok) {
      w.violate('protocol', `the coordinator could not decode a frame from ${conn.label}: ${decoded.error}`);
      return;
    }
    const frame = decoded.frame;
    if (frame.type !== 'heartbeat') w.log(`${conn.label}→c ${describeFrame(w, frame.type, frame.payload as Record<string, unknown>)}`);
    if (!conn.entry) {
      if (conn.helloStarted) {
        w.log(`hub ${conn.label}: frame races the hello; dropped`);
        return;
      }
      if (frame.type !== 'hello') {
        conn.channel.send('error', { code: 'E_PROTOCOL', message: `expected hello, got ${frame.type}` });
        conn.channel.close(CLOSE_CODES.INVALID_FRAME, `invalid hello: expected hello, got ${frame.type}`);
        return;
      }
      conn.helloStarted = true;
      const outcome = await this.engine.hello(frame.payload, conn.channel);
      if (!outcome.ok) {
        w.log(`hub ${conn.label}: hello refused: ${outcome.reason}`);
        conn.channel.send('error', { code: 'E_CONFLICT', message: outcome.reason });
        conn.channel.close(outcome.closeCode, outcome.reason);
        return;
      }
      if (conn.coordState !== 'open') {
        this.engine.disconnected(outcome.entry, conn.channel);
        return;
      }
      conn.entry = outcome.entry;
      conn.channel.send('welcome', {
        protocol_version: 1,
        coordinator_version: 'sim',
        agent_name: frame.payload.name,
        heartbeat_interval_ms: this.timings.heartbeatIntervalMs,
        lost_after_ms: this.timings.lostAfterMs,
        max_log_chunk_bytes: MAX_LOG_CHUNK_BYTES,
        cutoff_cancel_ms: CUTOFF_CANCEL_MS,
        resume: outcome.resume,
      });
      this.engine.welcomed(outcome.entry, conn.channel);
      return;
    }
    const token = this.observer.before(conn, frame);
    const ack = await this.engine.frame(conn.entry, frame);
    this.observer.after(token, ack);
    if (ack) conn.channel.send('ack', ack);
  }

  onClose(conn: SimConnection): void {
    if (conn.entry) this.engine.disconnected(conn.entry, conn.channel);
  }
}
