/**
 * The agent's side of the protocol, apart from its socket and its reconnect backoff: the
 * jobs it holds, the hello and the welcome's resume decisions, the frames from the
 * coordinator (assign checks, proceed, cancel, ack trimming), heartbeats, the liveness
 * check of a connection and the self-fencing cut-off.
 *
 * Pure of I/O: it takes the executor, a clock, timers and a random source as parameters,
 * and talks through an `AgentLink` per connection (`send` encoded frames, `terminate`).
 * agent/agent.ts wires it to a WebSocket; the deterministic simulation (test/sim/) wires
 * it to its simulated network and event queue.
 *
 * Jobs run independently of the connection: a dropped socket does not stop a build. Every
 * log chunk and the `finished` report stay in memory until the coordinator acks them, and
 * are resent after a reconnect from the offset the coordinator says it has. Self-fencing:
 * a session that has heard nothing from the coordinator for S (`welcome.cutoff_cancel_ms`,
 * 5 min before the first welcome) cancels its builds and forgets them, since by then the
 * coordinator has given their nodes to other agents.
 */
import type { Logger } from 'pino';
import {
  KILN_VERSION,
  PROTOCOL_VERSIONS,
  decodeFrame,
  encodeFrame,
  formatDuration,
  jitter,
  normalizePlatform,
  type AssignPayload,
  type DockerInfoPayload,
  type Frame,
  type GpuInfoPayload,
  type HealthPayload,
  type HeartbeatPayload,
  type Payload,
  type PlatformCapPayload,
  type Timer,
  type Timers,
  type ToCoordinatorType,
  type Tracer,
  type WelcomePayload,
} from '../shared/core.js';
import type { CancelReason, Executor } from './executors/executor.js';
import { runJob, type Job, type JobHost } from './session-job.js';
import { FrameBudget, LogBatcher, type LogChunk } from './log-batcher.js';

/** What the agent needs of its health monitor (HealthMonitor implements it). */
export interface HealthSource {
  current(): HealthPayload;
  diskFreeBytes(): number | null;
  onChange(fn: (h: HealthPayload) => void): () => void;
  check(): Promise<HealthPayload>;
  engineFailed(error: string): void;
  diskFull(message: string, needBytes: number | null): void;
}

/** One connection, as the session sees it. */
export interface AgentLink {
  /** Sends one encoded frame (dropped when the socket is no longer open). */
  send(bytes: Buffer): void;
  /** Drops the connection at once, without a closing handshake (the peer went silent). */
  terminate(why: string): void;
  /** The welcome arrived (the process resets its reconnect backoff). */
  welcomed(): void;
}

export interface AgentSessionOptions {
  /** This process's session id (a new one per process). */
  session: string;
  name: string;
  labels: Record<string, string>;
  maxJobs: number;
  /** The native platform first, then the emulated ones. */
  platforms: PlatformCapPayload[];
  executor: Pick<Executor, 'kind' | 'run'>;
  docker: DockerInfoPayload | null;
  gpus: GpuInfoPayload[];
  logger: Logger;
  /** Whether the host can take work (health.ts); absent: always accepting. */
  health?: HealthSource;
  /** GPU use for heartbeats; absent: none reported. */
  gpuUse?: { latest(): HeartbeatPayload['gpus']; poke(): void };
  /** Load for heartbeats; absent: none reported. */
  load?: (diskFreeBytes: number | null) => Payload<'heartbeat'>['load'];
  now: () => number;
  timers: Timers;
  /** For the heartbeat jitter. @default Math.random */
  random?: () => number;
  /** @default KILN_VERSION */
  agentVersion?: string;
  /** Spans of each job's phases, children of the attempt span the assign frame names; absent: tracing off. */
  tracer?: Tracer;
}

/** S before the coordinator has told its own (welcome.cutoff_cancel_ms). */
export const DEFAULT_CUTOFF_CANCEL_MS = 5 * 60_000;
/** How long a connection may be silent before the welcome (afterwards: welcome.lost_after_ms). */
const HELLO_SILENCE_MS = 30_000;
/** How often a connection's silence is checked. */
const LIVENESS_CHECK_MS = 1000;

/** How often the cut-off is checked: a tenth of S, within 50 ms .. 10 s. */
export function cutoffCheckInterval(cutoffMs: number): number {
  return Math.min(10_000, Math.max(50, Math.floor(cutoffMs / 10)));
}

interface Connection {
  link: AgentLink;
  welcome: WelcomePayload | null;
  lastFrameAt: number;
  liveness: Timer | null;
  heartbeat: Timer | null;
}

export class AgentSession {
  readonly jobs = new Map<string, Job>();
  /** The frame rate all of this agent's log streams share (log-batcher.ts). */
  private readonly frameBudget = new FrameBudget();
  private conn: Connection | null = null;
  private nextId = 0;
  private version: number = PROTOCOL_VERSIONS[0];
  private draining = false;
  private stopped = false;
  private idleWaiters: Array<() => void> = [];
  /** When the last frame from the coordinator arrived (any connection); null before the first. */
  private lastCoordinatorFrameAt: number | null = null;
  private cutoffMs = DEFAULT_CUTOFF_CANCEL_MS;
  private cutoffTimer: Timer | null = null;
  private readonly log: Logger;
  private readonly host: JobHost;

  constructor(readonly opts: AgentSessionOptions) {
    this.log = opts.logger;
    const { executor, now, timers, logger, health } = opts;
    this.host = { name: opts.name, jobs: this.jobs, send: (type, payload) => this.send(type, payload), executor, now, timers, logger, health, tracer: opts.tracer ?? null };
    this.armCutoff();
  }

  get name(): string {
    return this.opts.name;
  }

  /** Connected and welcomed. */
  get welcomed(): boolean {
    return this.conn?.welcome != null;
  }

  /** Whether the agent takes work now, and why not (draining counts). */
  health(): HealthPayload {
    if (this.draining) return { accepting: false, problem: 'the agent is draining (shutting down)' };
    return this.opts.health?.current() ?? { accepting: true, problem: null };
  }

  /** What the next heartbeat says (load and GPU use are the last samples; nothing waits). */
  heartbeatPayload(): HeartbeatPayload {
    this.opts.gpuUse?.poke();
    const load = this.opts.load?.(this.opts.health?.diskFreeBytes() ?? null);
    return { running: [...this.jobs.keys()], ...(load ? { load } : {}), gpus: this.opts.gpuUse?.latest() ?? [], health: this.health() };
  }

  runningJobs(): number {
    let n = 0;
    for (const j of this.jobs.values()) if (j.running) n++;
    return n;
  }

  /** Sends a heartbeat now (health changed, draining started). */
  sendHeartbeat(): void {
    if (this.welcomed) this.send('heartbeat', this.heartbeatPayload());
  }

  // ------------------------------------------------------------------ stopping

  /** Takes no new work; resolves when every job is done and acked. */
  drain(): Promise<void> {
    this.startDraining();
    return this.idle();
  }

  /** Aborts every running build (they report `cancelled`); resolves once they are acked, or after `graceMs`. */
  cancelAll(graceMs: number): Promise<void> {
    this.startDraining();
    for (const job of this.jobs.values()) if (job.running) job.abort.abort({ kind: 'shutdown', message: 'the agent is shutting down' } satisfies CancelReason);
    if (this.jobs.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const grace = this.opts.timers.after(graceMs, resolve);
      this.idleWaiters.push(() => {
        grace.clear();
        resolve();
      });
    });
  }

  /** Stops the session's own timers (the process is stopping). */
  stop(): void {
    this.stopped = true;
    this.cutoffTimer?.clear();
    this.cutoffTimer = null;
    if (this.conn) this.closed();
  }

  private startDraining(): void {
    if (this.draining) return;
    this.draining = true;
    this.sendHeartbeat(); // the coordinator stops sending work at once
  }

  private idle(): Promise<void> {
    if (this.jobs.size === 0) return Promise.resolve();
    return new Promise<void>((r) => this.idleWaiters.push(r));
  }

  checkIdle(): void {
    if (this.jobs.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  // ------------------------------------------------------------------ connection

  /** A connection opened: says hello and starts watching the connection's silence. */
  opened(link: AgentLink): void {
    if (this.conn) this.closed();
    const conn: Connection = { link, welcome: null, lastFrameAt: this.opts.now(), liveness: null, heartbeat: null };
    this.conn = conn;
    this.version = PROTOCOL_VERSIONS[PROTOCOL_VERSIONS.length - 1]!;
    const running = [...this.jobs.entries()].map(([id, j]) => ({ attempt_id: id, log_bytes: j.batcher.offset }));
    this.send('hello', {
      protocol_versions: [...PROTOCOL_VERSIONS],
      agent_version: this.opts.agentVersion ?? KILN_VERSION,
      name: this.opts.name,
      session: this.opts.session,
      platforms: this.opts.platforms,
      labels: this.opts.labels,
      max_jobs: this.opts.maxJobs,
      executor: this.opts.executor.kind,
      docker: this.opts.docker,
      gpus: this.opts.gpus,
      running,
      health: this.health(),
    });
    const check = () => {
      if (this.conn !== conn) return;
      const limit = conn.welcome ? conn.welcome.lost_after_ms : HELLO_SILENCE_MS;
      const silent = this.opts.now() - conn.lastFrameAt;
      if (silent > limit) {
        this.log.warn({ silent_ms: silent }, 'no frame from the coordinator; dropping the connection');
        this.closed();
        conn.link.terminate(`no frame from the coordinator for ${silent} ms`);
        return;
      }
      conn.liveness = this.opts.timers.after(LIVENESS_CHECK_MS, check);
    };
    conn.liveness = this.opts.timers.after(LIVENESS_CHECK_MS, check);
  }

  /** The connection is gone (closed, reset or terminated); `link`: only if it is still that one. */
  closed(link?: AgentLink): void {
    const conn = this.conn;
    if (!conn || (link && conn.link !== link)) return;
    conn.liveness?.clear();
    conn.heartbeat?.clear();
    this.conn = null;
  }

  /** A message arrived on the current connection. */
  received(data: Buffer, isBinary = true): void {
    const conn = this.conn;
    if (!conn) return;
    conn.lastFrameAt = this.opts.now();
    this.lastCoordinatorFrameAt = conn.lastFrameAt;
    if (!isBinary) return;
    const decoded = decodeFrame(data, 'agent');
    if (!decoded.ok) {
      this.log.warn({ error: decoded.error }, 'invalid frame from the coordinator');
      this.send('error', { code: 'E_PROTOCOL', message: decoded.error, ...(decoded.id !== undefined ? { ref: decoded.id } : {}) });
      return;
    }
    const frame = decoded.frame;
    if (conn.welcome) return this.onFrame(frame);
    if (frame.type === 'welcome') this.onWelcome(conn, frame.payload);
    else if (frame.type === 'error') this.log.error({ ...frame.payload }, 'coordinator refused the hello');
  }

  private onWelcome(conn: Connection, welcome: WelcomePayload): void {
    conn.welcome = welcome;
    this.version = welcome.protocol_version;
    conn.link.welcomed();
    if (welcome.cutoff_cancel_ms !== this.cutoffMs) {
      this.cutoffMs = welcome.cutoff_cancel_ms;
      this.armCutoff();
    }
    this.log.info({ coordinator: welcome.coordinator_version, heartbeat_ms: welcome.heartbeat_interval_ms, resume: welcome.resume.length }, 'connected to coordinator');
    this.resume(welcome);
    const beat = () => {
      conn.heartbeat = this.opts.timers.after(jitter(welcome.heartbeat_interval_ms, 0.1, this.opts.random), () => {
        if (this.conn !== conn) return;
        this.sendHeartbeat();
        beat();
      });
    };
    beat();
    // At once, not an interval later: the coordinator gets load and metrics now, and any
    // health change since the hello (nothing goes out before the welcome).
    this.sendHeartbeat();
  }

  send<T extends ToCoordinatorType>(type: T, payload: Payload<T>): boolean {
    const conn = this.conn;
    if (!conn || (!conn.welcome && type !== 'hello')) return false;
    conn.link.send(encodeFrame(type, ++this.nextId, payload, this.version));
    return true;
  }

  /** After a (re)connect: continue or drop each job the coordinator was told about. */
  private resume(welcome: WelcomePayload): void {
    for (const d of welcome.resume) {
      const job = this.jobs.get(d.attempt_id);
      if (!job) continue;
      if (d.action === 'cancel') {
        if (job.finished) this.log.warn({ attempt: d.attempt_id, build: job.assign.build_id, node: job.assign.node }, 'coordinator does not take the result of this finished attempt; dropping it');
        else this.log.warn({ attempt: d.attempt_id, build: job.assign.build_id, node: job.assign.node }, 'coordinator no longer wants this attempt; cancelling it');
        this.dropJob(d.attempt_id, 'the coordinator no longer wants this attempt');
        continue;
      }
      job.unacked = job.unacked.filter((c) => c.offset + c.data.length > d.log_offset);
      for (const c of job.unacked) this.sendChunk(d.attempt_id, c);
      if (job.resolved && job.proceed) this.send('resolved', job.resolved);
      if (job.finished) this.send('finished', job.finished);
    }
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      case 'assign':
        this.onAssign(frame.payload);
        break;
      case 'proceed':
        this.jobs.get(frame.payload.attempt_id)?.proceed?.();
        break;
      case 'cancel': {
        const job = this.jobs.get(frame.payload.attempt_id);
        if (!job) return;
        if (job.running) {
          this.log.info({ attempt: frame.payload.attempt_id, build: job.assign.build_id, node: job.assign.node, reason: frame.payload.reason }, 'cancelling build');
          job.abort.abort({ kind: 'cancel', message: `cancelled: ${frame.payload.reason}` } satisfies CancelReason);
        } else {
          this.dropJob(frame.payload.attempt_id, frame.payload.reason);
        }
        break;
      }
      case 'ack': {
        const { attempt_id, log_offset } = frame.payload;
        if (!attempt_id) return; // heartbeat ack: liveness only
        const job = this.jobs.get(attempt_id);
        if (!job) return;
        if (log_offset !== undefined) {
          job.unacked = job.unacked.filter((c) => c.offset + c.data.length > log_offset);
        } else if (job.finished) {
          this.jobs.delete(attempt_id);
          this.checkIdle();
        }
        break;
      }
      case 'error':
        this.log.warn({ ...frame.payload }, 'coordinator reported an error');
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ assignments

  /** Why this assignment cannot run here, or null; with the platform it runs as. */
  private check(a: AssignPayload): { problem: string } | { platform: PlatformCapPayload } {
    if (this.draining) return { problem: 'the agent is draining' };
    const health = this.health();
    if (!health.accepting) return { problem: `the agent is not taking work: ${health.problem ?? 'unhealthy'}` };
    // A job being cancelled no longer holds its slot as the coordinator counts it (it freed the
    // slot when it sent the cancel), so it does not count here either.
    let busy = 0;
    for (const j of this.jobs.values()) if (j.running && !j.abort.signal.aborted) busy++;
    if (busy >= this.opts.maxJobs) return { problem: `no free slot (${this.opts.maxJobs} jobs running)` };
    const platforms = this.opts.platforms;
    const platform = platforms.find((p) => normalizePlatform(p.platform) === normalizePlatform(a.platform));
    if (!platform) return { problem: `platform ${a.platform} is not supported here (${platforms.map((p) => p.platform).join(', ')})` };
    const gpuProblem = this.gpuProblem(a.gpus);
    return gpuProblem ? { problem: gpuProblem } : { platform };
  }

  private onAssign(a: AssignPayload): void {
    if (this.jobs.has(a.attempt_id)) return; // duplicate
    const checked = this.check(a);
    if ('problem' in checked) {
      this.log.warn({ attempt: a.attempt_id, build: a.build_id, node: a.node, reason: checked.problem }, 'rejecting assignment');
      this.send('reject', { attempt_id: a.attempt_id, reason: checked.problem });
      return;
    }
    const job: Job = {
      assign: a,
      abort: new AbortController(),
      batcher: new LogBatcher({ onChunk: (c) => this.onChunk(a.attempt_id, c), timers: this.opts.timers, budget: this.frameBudget }),
      resolved: null,
      proceed: null,
      unacked: [],
      finished: null,
      running: true,
      timer: null,
    };
    this.jobs.set(a.attempt_id, job);
    this.send('accept', { attempt_id: a.attempt_id });
    job.timer = this.opts.timers.after(a.timeout_ms, () => job.abort.abort({ kind: 'timeout', message: `timed out after ${formatDuration(a.timeout_ms)}` } satisfies CancelReason), { unref: true });
    this.log.info({ attempt: a.attempt_id, build: a.build_id, node: a.node, platform: a.platform }, 'building');
    void runJob(this.host, job, checked.platform.emulated);
  }

  /** Why this agent cannot give the attempt these GPUs, or null. */
  private gpuProblem(gpus: readonly number[]): string | null {
    if (gpus.length === 0) return null;
    const have = new Set(this.opts.gpus.map((g) => g.index));
    const missing = [...new Set(gpus)].filter((i) => !have.has(i));
    if (missing.length > 0) {
      const list = [...have].sort((x, y) => x - y).join(', ');
      return `GPU ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not on this agent (${have.size ? `it has GPU ${list}` : 'it has no GPUs'})`;
    }
    for (const [id, job] of this.jobs) {
      if (!job.running || job.abort.signal.aborted) continue; // a cancelled job's GPUs are being given back
      const taken = job.assign.gpus.filter((i) => gpus.includes(i));
      if (taken.length > 0) return `GPU ${taken.join(', ')} ${taken.length > 1 ? 'are' : 'is'} in use by attempt ${id}`;
    }
    return null;
  }

  private onChunk(attemptId: string, chunk: LogChunk): void {
    const job = this.jobs.get(attemptId);
    if (!job) return;
    job.unacked.push(chunk);
    this.sendChunk(attemptId, chunk);
  }

  private sendChunk(attemptId: string, c: LogChunk): void {
    this.send('log', { attempt_id: attemptId, seq: c.seq, offset: c.offset, data: c.data });
  }

  private dropJob(attemptId: string, reason: string): void {
    const job = this.jobs.get(attemptId);
    if (!job) return;
    if (job.running) job.abort.abort({ kind: 'cancel', message: reason } satisfies CancelReason);
    job.timer?.clear();
    this.jobs.delete(attemptId);
    this.checkIdle();
  }

  // ------------------------------------------------------------------ self-fencing

  private armCutoff(): void {
    this.cutoffTimer?.clear();
    this.cutoffTimer = null;
    if (this.stopped) return;
    const tick = () => {
      this.checkCutoff();
      if (!this.stopped) this.cutoffTimer = this.opts.timers.after(cutoffCheckInterval(this.cutoffMs), tick, { unref: true });
    };
    this.cutoffTimer = this.opts.timers.after(cutoffCheckInterval(this.cutoffMs), tick, { unref: true });
  }

  /** Cancels and forgets every job once nothing came from the coordinator for S. */
  checkCutoff(): void {
    if (this.lastCoordinatorFrameAt === null || this.jobs.size === 0) return;
    const silentMs = this.opts.now() - this.lastCoordinatorFrameAt;
    if (silentMs <= this.cutoffMs) return;
    const message = `cut off from the coordinator for ${formatDuration(this.cutoffMs)}`;
    this.log.warn({ silent_ms: silentMs, attempts: [...this.jobs.keys()] }, `${message}: cancelling running builds; their results are no longer wanted`);
    for (const [id, job] of [...this.jobs]) {
      if (job.running) job.abort.abort({ kind: 'cutoff', message } satisfies CancelReason);
      job.timer?.clear();
      this.jobs.delete(id);
    }
    this.checkIdle();
  }
}
