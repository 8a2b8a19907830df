/**
 * A simulated agent process: the real agent session (agent/agent-session.ts) with the
 * simulated build (sim-executor.ts), on simulated time, over the simulated network.
 *
 * What stays here is the process around the session, as agent/agent.ts and
 * agent/main.ts are around it in a real process: one connection at a time, reconnects with
 * capped exponential backoff and full jitter (cap 5 s here instead of 30 s, so runs stay
 * short), reset by the welcome; the graceful stop of the signal ladder (drain, or cancel
 * and stop after at most 10 s), ending with an AGENT_SHUTDOWN close; a host problem
 * (`unhealthyFor`: disk full) that the health source reports; and death: a killed process
 * loses its jobs, timers and connection, and `start()` again is a new process with a new
 * session and no running attempts.
 */
import { AgentSession, type AgentLink, type HealthSource } from '../../agent/agent-session.js';
import { pino } from 'pino';
import type { Cas } from '../../coordinator/cas/cas.js';
import { Backoff, CLOSE_CODES, decodeFrame, type PlatformCapPayload } from '../../shared/index.js';
import { describeFrame } from './describe.js';
import type { Rng } from './rng.js';
import { SimExecutor, type JobOdds } from './sim-executor.js';
import { isHeartbeatAck, worldTimers } from './sim-hub.js';
import type { AgentSide, Net, Path, SimConnection } from './sim-net.js';
import { scrub, type World } from './world.js';

export type { JobOdds } from './sim-executor.js';

export interface SimAgentConfig {
  name: string;
  maxJobs: number;
  platforms: PlatformCapPayload[];
  executor: 'docker' | 'noop';
  /** The agent host's clock minus the coordinator's (timestamps it reports). */
  clockSkewMs: number;
}

export interface AgentEnv {
  world: World;
  net: Net;
  cas: Cas;
  /** attempt id -> the log bytes the agent's builds wrote, in order. */
  produced: Map<string, Buffer[]>;
  odds: () => JobOdds;
}

const silent = pino({ level: 'silent' });
const UNHEALTHY = { accepting: false, problem: 'disk full: 12 MiB free on /var/lib/kiln' };
const HEALTHY = { accepting: true, problem: null };

export class SimAgent {
  alive = false;
  session = '';
  private incarnation = 0;
  private core: AgentSession | null = null;
  private conn: SimConnection | null = null;
  private backoff: Backoff;
  /** A host problem (disk full, Docker Engine gone) until then: the agent takes no work. */
  private unhealthyUntil = 0;
  private stopping = false;
  private readonly links = new Map<SimConnection, AgentLink>();

  constructor(
    readonly cfg: SimAgentConfig,
    private readonly env: AgentEnv,
    readonly path: Path,
    private readonly rng: Rng,
  ) {
    this.backoff = new Backoff({ baseMs: 500, capMs: 5000, random: rng.fn() });
  }

  get name(): string {
    return this.cfg.name;
  }

  /** Jobs the process holds (running, or finished and not yet acked). */
  jobCount(): number {
    return this.core?.jobs.size ?? 0;
  }

  /** The current connection, if any. */
  connection(): SimConnection | null {
    return this.conn;
  }

  /** Connected and welcomed. */
  get online(): boolean {
    return this.alive && this.conn !== null && (this.core?.welcomed ?? false);
  }

  private get w(): World {
    return this.env.world;
  }

  /** The host has a problem for `ms` (health.ts): reported at once, and again when it clears. */
  unhealthyFor(ms: number): void {
    if (!this.alive) return;
    this.unhealthyUntil = this.w.now + ms;
    this.w.log(`agent ${this.name} unhealthy for ${ms} ms`);
    this.core?.sendHeartbeat();
    this.later(ms, 'healthy again', () => {
      if (this.w.now >= this.unhealthyUntil) this.core?.sendHeartbeat();
    });
  }

  /** Starts a new process (new session, no jobs). */
  start(): void {
    if (this.alive) return;
    this.alive = true;
    this.incarnation++;
    this.session = `${this.cfg.name}-proc${this.incarnation}`;
    this.unhealthyUntil = 0;
    this.stopping = false;
    this.backoff = new Backoff({ baseMs: 500, capMs: 5000, random: this.rng.fn() });
    const session = this.session;
    const alive = () => this.alive && this.session === session;
    const health: HealthSource = {
      current: () => (this.w.now < this.unhealthyUntil ? UNHEALTHY : HEALTHY),
      diskFreeBytes: () => null,
      onChange: () => () => {},
      check: () => Promise.resolve(health.current()),
      engineFailed: () => {},
      diskFull: () => {},
    };
    this.core = new AgentSession({
      session,
      name: this.name,
      labels: {},
      maxJobs: this.cfg.maxJobs,
      platforms: this.cfg.platforms,
      executor: new SimExecutor(this.cfg.executor, this.env, this.rng, (ms, label, fn) => this.later(ms, label, fn)),
      docker: this.cfg.executor === 'docker' ? { version: 'sim', api_version: '1.47', os: 'linux', arch: 'amd64', buildkit_version: null } : null,
      gpus: [],
      logger: silent,
      health,
      now: () => Math.max(0, this.w.now + this.cfg.clockSkewMs),
      timers: worldTimers(this.w, `${this.name} timer`, alive),
      random: this.rng.fn(),
      agentVersion: 'sim',
    });
    this.w.log(`agent ${this.name} starts (session ${this.session})`);
    this.connect();
  }

  /** The process dies: `crash` (the kernel resets its sockets) or `host-down` (silence). */
  kill(mode: 'crash' | 'host-down'): void {
    if (!this.alive) return;
    this.alive = false;
    this.w.log(`agent ${this.name} ${mode === 'crash' ? 'crashes' : 'host goes down'} with ${this.jobCount()} jobs`);
    const c = this.conn;
    this.conn = null;
    this.core = null;
    if (c && c.agentOpen) this.env.net.abort(c, 'agent', { coord: mode === 'crash', agent: false }, `agent process ${mode}`);
  }

  /**
   * A graceful stop (agent/main.ts signal ladder): `drain` takes no new work and stops once
   * every job finished and was acked; `cancel` also aborts the running builds (they report
   * `cancelled`) and stops when they are acked or after 10 s. `then` runs after the stop.
   */
  stopGracefully(how: 'drain' | 'cancel', then: () => void): void {
    const core = this.core;
    if (!this.alive || !core || this.stopping) return;
    this.stopping = true;
    const session = this.session;
    this.w.log(`agent ${this.name} ${how === 'drain' ? 'drains' : 'cancels its builds and stops'} (${core.jobs.size} jobs)`);
    const stop = () => {
      if (!this.alive || this.session !== session) return;
      this.w.log(`agent ${this.name} stops`);
      const c = this.conn;
      this.alive = false;
      this.conn = null;
      this.core = null;
      core.stop();
      if (c) this.env.net.agentClose(c, CLOSE_CODES.AGENT_SHUTDOWN, 'agent shutting down');
      then();
    };
    void (how === 'drain' ? core.drain() : core.cancelAll(10_000)).then(stop);
  }

  /** The agent drops its connection itself (as its liveness check would). */
  dropConnection(why: string): void {
    const c = this.conn;
    if (!c) return;
    this.core?.closed();
    this.terminate(c, why);
  }

  /** Runs `fn` later only if this process is still the one alive. */
  private later(ms: number, label: string, fn: () => void | Promise<void>): void {
    const session = this.session;
    this.w.after(ms, `${this.name} ${label}`, () => {
      if (!this.alive || this.session !== session) return;
      return fn();
    });
  }

  // ------------------------------------------------------------------ connection

  private connect(): void {
    if (!this.alive || this.conn) return;
    const session = this.session;
    const guard = () => this.alive && this.session === session;
    const side: AgentSide = {
      onOpen: (conn) => guard() && this.onOpen(conn),
      onFrame: (conn, bytes) => {
        if (guard()) this.onFrame(conn, bytes);
      },
      onClose: (conn, code, reason) => {
        if (guard()) this.onClose(conn, code, reason);
      },
      onConnectFailed: (reason) => {
        if (guard()) this.retryLater(reason);
      },
    };
    this.env.net.connect(this.name, session, this.path, side);
  }

  private retryLater(reason: string): void {
    const delay = this.backoff.next();
    this.w.log(`agent ${this.name} disconnected (${reason}); reconnecting in ${delay} ms`);
    this.later(delay, 'reconnect', () => this.connect());
  }

  private onOpen(conn: SimConnection): boolean {
    if (this.conn || !this.core) return false;
    this.conn = conn;
    const link: AgentLink = {
      send: (bytes) => {
        if (!conn.agentOpen) return;
        const d = decodeFrame(bytes, 'coordinator');
        if (!d.ok) throw new Error(`agent ${this.name} sent a frame the coordinator cannot decode: ${d.error}`);
        this.env.net.send(conn, 'toCoord', bytes, d.frame.type);
      },
      terminate: (why) => this.terminate(conn, why),
      welcomed: () => this.backoff.reset(),
    };
    this.links.set(conn, link);
    this.core.opened(link);
    return true;
  }

  private terminate(conn: SimConnection, why: string): void {
    this.env.net.abort(conn, 'agent', { coord: true, agent: false }, `agent ${this.name} terminates it: ${why}`);
    this.closed(conn, why);
  }

  private onClose(conn: SimConnection, code: number, reason: string): void {
    if (code === CLOSE_CODES.PROTOCOL_VERSION || code === CLOSE_CODES.INVALID_FRAME) this.w.violate('protocol', `the coordinator closed ${conn.label} with ${code} (${reason}); a real agent would stop for good`);
    this.closed(conn, `closed ${code} ${reason}`);
  }

  private closed(conn: SimConnection, reason: string): void {
    if (this.conn !== conn) return;
    this.conn = null;
    const link = this.links.get(conn);
    this.links.delete(conn);
    if (link) this.core?.closed(link);
    this.retryLater(reason);
  }

  private onFrame(conn: SimConnection, bytes: Buffer): void {
    if (this.conn !== conn) return;
    const d = decodeFrame(bytes, 'agent');
    if (!d.ok) {
      this.w.violate('protocol', `agent ${this.name} could not decode a frame from the coordinator: ${d.error}`);
      return;
    }
    if (!isHeartbeatAck(d.frame.type, d.frame.payload)) this.w.log(`c→${conn.label} arrives: ${scrub(this.w, describeFrame(this.w, d.frame.type, d.frame.payload as Record<string, unknown>))}`);
    this.core?.received(bytes);
  }
}
