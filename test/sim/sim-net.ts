/**
 * The simulated network between the agents and the coordinator: one `SimConnection` per
 * WebSocket, and one `Path` per agent host (latency, partitions, stalls).
 *
 * Fault model (what a real TCP/WebSocket path can do, and nothing else):
 * - Within one connection frames arrive in order and exactly once, or not at all: a
 *   connection never reorders, duplicates or drops a single frame while it lives.
 * - Latency: every frame takes base + jitter; during the fault window some frames take a
 *   spike of up to a few seconds, and because delivery is FIFO the frames behind a slow one
 *   wait for it (head-of-line blocking).
 * - Stall (one direction) and partition (both): frames are held (TCP retransmits them) and
 *   arrive together, in order, when the path heals. During a partition new connections
 *   fail after a connect timeout.
 * - When a connection dies (an end terminates it, the agent process crashes, its host goes
 *   down, a middlebox resets or blackholes it) the frames in flight are cut: a random prefix
 *   of them (in order) still arrives, the rest is lost, and so is everything sent later.
 *   The other end learns of it from a reset that travels behind the surviving frames, or,
 *   for a dead host or a blackhole, never: it must notice the silence itself (the agent's
 *   liveness timer, the coordinator's sweep).
 * - A close the coordinator starts (`channel.close`) is a WebSocket closing handshake: the
 *   coordinator stops sending at once but keeps receiving until the agent's close reply
 *   arrives, or 30 s pass (ws's closeTimeout). Frames still travelling from the agent are
 *   handled meanwhile, with the old connection's agent entry.
 * Across connections nothing is ordered: frames of an old connection can arrive after a
 * newer connection of the same agent (same or new process) said hello. That is the
 * realistic form of "reordered", "duplicated" (the agent resends after a reconnect) and
 * "stale" frames.
 */
import type { AgentConnectionSession } from '../../coordinator/agents/agent-session.js';
import { CLOSE_CODES } from '../../shared/index.js';
import type { Rng } from './rng.js';
import type { World } from './world.js';

export type Dir = 'toCoord' | 'toAgent';

/** ws's closeTimeout: how long a closing handshake waits for the peer. */
export const CLOSE_HANDSHAKE_TIMEOUT_MS = 30_000;

interface Packet {
  at: number;
  dropped: boolean;
  kind: 'data' | 'close';
  what: string;
  bytes?: Buffer;
  code?: number;
  reason?: string;
}

export interface PathTuning {
  baseLatencyMs: number;
  jitterMs: number;
  /** Probability that a frame sent during the fault window is delayed by a spike. */
  spikeChance: number;
  spikeMaxMs: number;
}

/** The network between one agent host and the coordinator. */
export class Path {
  partitionUntil = 0;
  readonly stallUntil: Record<Dir, number> = { toCoord: 0, toAgent: 0 };
  readonly conns: SimConnection[] = [];

  constructor(
    readonly agent: string,
    private readonly rng: Rng,
    readonly tuning: PathTuning,
  ) {}

  latency(world: World): number {
    let l = this.tuning.baseLatencyMs + this.rng.next() * this.tuning.jitterMs;
    if (world.faultsActive && this.rng.chance(this.tuning.spikeChance)) l += this.rng.range(100, this.tuning.spikeMaxMs);
    return Math.max(1, Math.round(l));
  }

  partitioned(now: number): boolean {
    return now < this.partitionUntil;
  }

  blockedUntil(dir: Dir): number {
    return Math.max(this.partitionUntil, this.stallUntil[dir]);
  }
}

/** What the agent process does with its end of a connection. */
export interface AgentSide {
  /** The connection is open; false when the process that asked for it is gone. */
  onOpen(conn: SimConnection): boolean;
  onFrame(conn: SimConnection, bytes: Buffer): void | Promise<void>;
  onClose(conn: SimConnection, code: number, reason: string): void;
  onConnectFailed(reason: string): void;
}

/** What the coordinator (the hub) does with its end. */
export interface CoordSide {
  /** The connection was accepted (the real hub's upgrade). */
  onOpen(conn: SimConnection): void;
  onFrame(conn: SimConnection, bytes: Buffer): Promise<void>;
  /** The coordinator's end closed: the agent's close code, or ABNORMAL for a reset or timeout. */
  onClose(conn: SimConnection, code: number): void;
}

export class SimConnection {
  agentOpen = true;
  coordState: 'open' | 'closing' | 'closed' = 'open';
  /** The path is gone for good: nothing sent from now on arrives. */
  dead = false;
  readonly inflight: Record<Dir, Packet[]> = { toCoord: [], toAgent: [] };
  readonly lastAt: Record<Dir, number> = { toCoord: 0, toAgent: 0 };
  private readonly resetSent: Record<Dir, boolean> = { toCoord: false, toAgent: false };
  /** The coordinator's session for this connection (the real one, coordinator/agents/agent-session.ts). */
  coordSession: AgentConnectionSession | null = null;

  constructor(
    readonly id: number,
    readonly agent: string,
    /** The agent process (session) that opened it. */
    readonly session: string,
    readonly path: Path,
    readonly agentSide: AgentSide,
  ) {}

  get label(): string {
    return `${this.agent}/c${this.id}`;
  }

  /** Marks that a reset toward `dir` was sent (once per direction). */
  takeReset(dir: Dir): boolean {
    if (this.resetSent[dir]) return false;
    this.resetSent[dir] = true;
    return true;
  }
}

export class Net {
  private nextConn = 0;
  coord!: CoordSide;
  /** false while the coordinator process is down: connects are refused. */
  coordinatorUp = false;

  constructor(
    private readonly world: World,
    private readonly rng: Rng,
  ) {}

  /** Opens a connection for an agent process; its side hears onOpen or onConnectFailed. */
  connect(agent: string, session: string, path: Path, side: AgentSide): void {
    const w = this.world;
    if (path.partitioned(w.now)) {
      const after = this.rng.int(1000, 3000);
      w.log(`net ${agent} connect: no route (partition); fails in ${after} ms`);
      w.after(after, `connect-fail ${agent}`, () => side.onConnectFailed('connect timed out'));
      return;
    }
    const conn = new SimConnection(++this.nextConn, agent, session, path, side);
    w.after(2 * path.latency(w), `open ${conn.label}`, () => {
      if (path.partitioned(w.now)) {
        w.log(`net ${conn.label} handshake lost (partition)`);
        side.onConnectFailed('connect timed out');
        return;
      }
      if (!this.coordinatorUp) {
        w.log(`net ${agent} connect: refused (the coordinator is down)`);
        side.onConnectFailed('connection refused');
        return;
      }
      if (!side.onOpen(conn)) return;
      path.conns.push(conn);
      w.log(`net ${conn.label} open (session ${session})`);
      this.coord.onOpen(conn);
    });
  }

  /** Sends from one end; false when that end is not open (the frame is not sent). */
  send(conn: SimConnection, dir: Dir, bytes: Buffer, what: string): boolean {
    const open = dir === 'toCoord' ? conn.agentOpen : conn.coordState === 'open';
    if (!open) return false;
    if (conn.dead) {
      this.world.log(`net ${conn.label} ${arrow(dir)} lost ${what} (connection dead)`);
      return true;
    }
    this.schedule(conn, dir, { at: 0, dropped: false, kind: 'data', what, bytes });
    return true;
  }

  /** The coordinator closes its end (a WebSocket closing handshake). */
  coordClose(conn: SimConnection, code: number, reason: string): void {
    if (conn.coordState !== 'open') return;
    conn.coordState = 'closing';
    this.world.log(`net ${conn.label} coordinator closes ${code} '${reason}'`);
    if (!conn.dead) this.schedule(conn, 'toAgent', { at: 0, dropped: false, kind: 'close', what: `close ${code}`, code, reason });
    this.world.after(CLOSE_HANDSHAKE_TIMEOUT_MS, `close-timeout ${conn.label}`, () => {
      if (conn.coordState === 'closed') return;
      conn.coordState = 'closed';
      this.world.log(`net ${conn.label} closing handshake timed out; coordinator end closed`);
      this.coord.onClose(conn, CLOSE_CODES.ABNORMAL);
    });
  }

  /** The agent closes its end cleanly (ws.close): a close frame travels behind its last frames. */
  agentClose(conn: SimConnection, code: number, reason: string): void {
    if (!conn.agentOpen) return;
    conn.agentOpen = false;
    this.world.log(`net ${conn.label} agent closes ${code} '${reason}'`);
    if (!conn.dead && conn.coordState !== 'closed' && conn.takeReset('toCoord')) this.schedule(conn, 'toCoord', { at: 0, dropped: false, kind: 'close', what: `close ${code}`, code, reason });
  }

  /**
   * The connection dies. `by: 'agent'` closes the agent end at once (the caller handles
   * the agent's side). A random prefix of the frames in flight survives (none while
   * partitioned: they sit in a sender's buffer that is gone); each end in `notify` then
   * hears a reset behind the survivors.
   */
  abort(conn: SimConnection, by: 'agent' | 'network', notify: { coord: boolean; agent: boolean }, why: string): void {
    const w = this.world;
    for (const dir of ['toCoord', 'toAgent'] as const) {
      const live = conn.inflight[dir].filter((p) => !p.dropped);
      const keep = conn.path.partitioned(w.now) || (by === 'agent' && dir === 'toAgent') ? 0 : this.rng.int(0, live.length);
      live.forEach((p, i) => {
        if (i >= keep) p.dropped = true;
      });
      conn.lastAt[dir] = keep > 0 ? live[keep - 1]!.at : w.now;
      if (live.length > 0) w.log(`net ${conn.label} ${arrow(dir)} ${keep}/${live.length} frames in flight survive`);
    }
    if (by === 'agent') conn.agentOpen = false;
    conn.dead = true;
    w.log(`net ${conn.label} dies: ${why}`);
    if (notify.coord && conn.coordState !== 'closed' && conn.takeReset('toCoord')) this.schedule(conn, 'toCoord', { at: 0, dropped: false, kind: 'close', what: 'reset' });
    if (notify.agent && conn.agentOpen && conn.takeReset('toAgent')) this.schedule(conn, 'toAgent', { at: 0, dropped: false, kind: 'close', what: 'reset', code: CLOSE_CODES.ABNORMAL, reason: 'connection reset' });
  }

  /** Both directions of every connection of the path hold their frames until `until`. */
  partition(path: Path, until: number): void {
    path.partitionUntil = Math.max(path.partitionUntil, until);
    for (const c of path.conns) for (const dir of ['toCoord', 'toAgent'] as const) this.retime(c, dir);
  }

  /** One direction holds its frames until `until` (a stuck middlebox queue). */
  stall(path: Path, dir: Dir, until: number): void {
    path.stallUntil[dir] = Math.max(path.stallUntil[dir], until);
    for (const c of path.conns) this.retime(c, dir);
  }

  private retime(conn: SimConnection, dir: Dir): void {
    const blocked = conn.path.blockedUntil(dir);
    let prev = this.world.now;
    for (const p of conn.inflight[dir]) {
      p.at = Math.max(p.at, blocked + conn.path.latency(this.world), prev);
      prev = p.at;
    }
    conn.lastAt[dir] = Math.max(conn.lastAt[dir], prev);
  }

  private schedule(conn: SimConnection, dir: Dir, p: Packet): void {
    const w = this.world;
    const lat = conn.path.latency(w);
    p.at = Math.max(w.now + lat, conn.lastAt[dir], conn.path.blockedUntil(dir) + lat);
    conn.lastAt[dir] = p.at;
    conn.inflight[dir].push(p);
    w.at(p.at, `deliver ${conn.label} ${p.what}`, () => this.pump(conn, dir));
  }

  /**
   * Delivers the packet at the head of one direction if it is due. Every packet schedules
   * one pump at its time; a pump that finds the head re-timed to later schedules one pump
   * for then. So packets leave strictly in order, one per pump.
   */
  private async pump(conn: SimConnection, dir: Dir): Promise<void> {
    const w = this.world;
    const q = conn.inflight[dir];
    const p = q[0];
    if (!p) return;
    if (p.at > w.now) {
      w.at(p.at, `deliver ${conn.label} ${p.what}`, () => this.pump(conn, dir));
      return;
    }
    q.shift();
    if (p.dropped) {
      w.log(`net ${conn.label} ${arrow(dir)} lost ${p.what} (cut with the connection)`);
      return;
    }
    if (dir === 'toCoord') {
      if (conn.coordState === 'closed') {
        w.log(`net ${conn.label} ${arrow(dir)} ${p.what} hits a closed coordinator end`);
        if (p.kind === 'data' && conn.agentOpen && !conn.dead && conn.takeReset('toAgent')) this.schedule(conn, 'toAgent', { at: 0, dropped: false, kind: 'close', what: 'reset', code: CLOSE_CODES.ABNORMAL, reason: 'connection reset' });
        return;
      }
      if (p.kind === 'close') {
        conn.coordState = 'closed';
        w.log(`net ${conn.label} coordinator end closed (${p.what})`);
        this.coord.onClose(conn, p.code ?? CLOSE_CODES.ABNORMAL);
        return;
      }
      await this.coord.onFrame(conn, p.bytes!);
      return;
    }
    if (!conn.agentOpen) {
      w.log(`net ${conn.label} ${arrow(dir)} ${p.what} hits a closed agent end`);
      if (p.kind === 'data' && conn.coordState !== 'closed' && !conn.dead && conn.takeReset('toCoord')) this.schedule(conn, 'toCoord', { at: 0, dropped: false, kind: 'close', what: 'reset' });
      return;
    }
    if (p.kind === 'close') {
      conn.agentOpen = false;
      w.log(`net ${conn.label} agent end closed (${p.what}${p.reason ? ` '${p.reason}'` : ''})`);
      // the close reply (or the RST of the now closed socket) goes back behind the agent's frames
      if (!conn.dead && conn.coordState !== 'closed' && conn.takeReset('toCoord')) this.schedule(conn, 'toCoord', { at: 0, dropped: false, kind: 'close', what: 'close reply', ...(p.code !== undefined ? { code: p.code } : {}) });
      conn.agentSide.onClose(conn, p.code ?? CLOSE_CODES.ABNORMAL, p.reason ?? '');
      return;
    }
    await conn.agentSide.onFrame(conn, p.bytes!);
  }
}

function arrow(dir: Dir): string {
  return dir === 'toCoord' ? 'a→c' : 'c→a';
}
