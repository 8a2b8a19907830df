/**
 * The coordinator's end of each simulated connection: the real per-agent session
 * (coordinator/agents/agent-session.ts) on the simulated network, with the simulated
 * clock and timers, minus the HTTP upgrade. Frames are encoded and decoded with the real
 * codec, so the engine only ever sees what would have survived the wire.
 *
 * What the simulation adds around the session: the trace of every frame, the invariant
 * checker around every frame the engine handles (`FrameObserver`), and a violation when
 * the session logs an error (the engine threw) or a frame from an agent does not decode.
 *
 * One difference, on purpose: the real hub does not wait for one frame's handler before
 * starting the next; here each frame is handled to the end before the simulation moves
 * on (so a run is deterministic). Interleavings *inside* the engine's async handlers are
 * therefore not explored.
 */
import { AgentConnectionSession, type SessionEngine } from '../../coordinator/agents/agent-session.js';
import type { Engine, EngineTimings } from '../../coordinator/builds/engine.js';
import { decodeFrame, type Frame, type Payload, type Timers } from '../../shared/index.js';
import { describeFrame } from './describe.js';
import type { CoordSide, Net, SimConnection } from './sim-net.js';
import { scrub, type World } from './world.js';

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

/** Timers on the simulation's event queue; a cleared timer's event runs as a no-op. */
export function worldTimers(world: World, label: string, alive: () => boolean = () => true): Timers {
  return {
    after(ms, fn) {
      let live = true;
      world.after(ms, label, () => {
        if (live && alive()) fn();
      });
      return { clear: () => (live = false) };
    },
  };
}

export class SimHub implements CoordSide {
  constructor(
    private readonly world: World,
    private readonly net: Net,
    private readonly engine: Engine,
    private readonly timings: EngineTimings,
    private readonly observer: FrameObserver,
  ) {}

  /** A new connection gets the real session, talking through the simulated network. */
  onOpen(conn: SimConnection): void {
    const w = this.world;
    const engine = this.engine;
    const observer = this.observer;
    const observed: SessionEngine = {
      hello: (hello, channel) => engine.hello(hello, channel),
      welcomed: (entry, channel) => engine.welcomed(entry, channel),
      disconnected: (entry, channel, how) => engine.disconnected(entry, channel, how),
      frame: async (entry, frame) => {
        const token = observer.before(conn, frame);
        const ack = await engine.frame(entry, frame);
        observer.after(token, ack);
        return ack;
      },
    };
    conn.coordSession = new AgentConnectionSession(
      {
        send: (bytes) => {
          const d = decodeFrame(bytes, 'agent');
          if (!d.ok) throw new Error(`the coordinator sent a frame the agent cannot decode: ${d.error}`);
          const { type, payload } = d.frame;
          if (type === 'assign') w.nameAttempt(payload.attempt_id, payload.build_id, payload.node, payload.attempt);
          if (!isHeartbeatAck(type, payload)) w.log(`c→${conn.label} ${scrub(w, describeFrame(w, type, payload as Record<string, unknown>))}`);
          this.net.send(conn, 'toAgent', bytes, type);
        },
        isOpen: () => conn.coordState === 'open',
        close: (code, reason) => this.net.coordClose(conn, code, scrub(w, reason)),
      },
      {
        engine: observed,
        heartbeatIntervalMs: this.timings.heartbeatIntervalMs,
        lostAfterMs: this.timings.lostAfterMs,
        cutoffCancelMs: CUTOFF_CANCEL_MS,
        timers: worldTimers(w, `hub ${conn.label}`),
        now: () => w.now,
        coordinatorVersion: 'sim',
      },
      {
        warn: (_o, msg) => w.log(`hub ${conn.label}: ${scrub(w, msg)}`),
        error: (o, msg) => {
          const err = (o as { err?: unknown }).err;
          w.violate('engine-error', `${conn.label}: ${msg}: ${scrub(w, err instanceof Error ? (err.stack ?? err.message) : String(err))}`);
        },
      },
    );
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
    await conn.coordSession?.received(bytes);
  }

  onClose(conn: SimConnection, code: number): void {
    conn.coordSession?.closed(code);
  }
}
