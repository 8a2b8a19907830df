/**
 * A simulated agent process: the protocol behaviour of agent/agent.ts (and the docker
 * executor's phases) in memory, on simulated time, with a simulated build instead of
 * BuildKit.
 *
 * Kept the same as the real agent, step by step:
 * - one connection at a time; `hello` (session, running attempts with their log bytes,
 *   health), then nothing but the welcome until it arrives; heartbeats with health on the
 *   welcome's interval (±10 %), and one at once when it starts draining; a liveness timer that drops a connection silent for `lost_after_ms` (30 s
 *   before the welcome); reconnects with capped exponential backoff and full jitter
 *   (cap 5 s here instead of 30 s, so runs stay short);
 * - the welcome's resume decisions: `cancel` drops the job, `continue` resends the log
 *   chunks after `log_offset`, a pending `resolved` and the `finished` report;
 * - `assign`: duplicates ignored, `reject` without a free slot or platform, else `accept`,
 *   a timeout timer, and the job: log header, fetch, `resolved` and wait for `proceed`
 *   when asked, `started`, log lines batched 50 ms into chunks with seq/offset, outputs
 *   uploaded to the CAS, the result line, `finished` (kept until acked);
 * - `cancel` aborts a running job (it reports `cancelled`; a timeout reports `failed`) and
 *   drops a finished one; `ack` with `log_offset` trims the unacked chunks, without it
 *   (for a finished job) forgets the job.
 * A health problem (`unhealthyFor`) is reported at once and makes it reject assignments.
 * Not modelled: host load/GPU reports, the self-fencing
 * cut-off S (5 min; partitions here last seconds).
 * A killed process loses its jobs, timers and connection; `start()` again is a new process
 * with a new session and no running attempts.
 *
 * Every chunk a job produces is recorded in `produced` (by attempt id): the ground truth
 * the invariant checker compares the coordinator's stored logs with.
 */
import { createHash } from 'node:crypto';
import type { Cas } from '../../coordinator/cas/cas.js';
import {
  ARTIFACT_MEDIA_TYPE,
  Backoff,
  decodeFrame,
  encodeFrame,
  formatDuration,
  jitter,
  normalizePlatform,
  type AssignPayload,
  type Digest,
  type FinishedPayload,
  type Frame,
  type Payload,
  type PlatformCapPayload,
  type ToCoordinatorType,
  type WelcomePayload,
} from '../../shared/index.js';
import type { Rng } from './rng.js';
import type { AgentSide, Net, Path, SimConnection } from './sim-net.js';
import { describeFrame } from './describe.js';
import { isHeartbeatAck } from './sim-hub.js';
import { scrub, type World } from './world.js';

export interface SimAgentConfig {
  name: string;
  maxJobs: number;
  platforms: PlatformCapPayload[];
  executor: 'docker' | 'noop';
  /** The agent host's clock minus the coordinator's (timestamps it reports). */
  clockSkewMs: number;
}

export interface JobOdds {
  /** The build fails (a RUN exits non-zero). */
  fail: number;
  /** The build fails for infrastructure reasons (Docker Engine gone, disk full). */
  infra: number;
  /** The build hangs past its timeout. */
  hang: number;
}

export interface AgentEnv {
  world: World;
  net: Net;
  cas: Cas;
  /** attempt id -> the log chunks the agent produced for it, in order. */
  produced: Map<string, Buffer[]>;
  odds: () => JobOdds;
}

interface LogChunk {
  seq: number;
  offset: number;
  data: Buffer;
}

type CancelReason = { kind: 'cancel' | 'timeout' | 'shutdown'; message: string };

interface RunResult {
  status: 'success' | 'failed' | 'cancelled';
  exitCode: number | null;
  error: string | null;
  failedStep: string | null;
  infra: boolean;
  imageId: string | null;
  outputs: FinishedPayload['outputs'];
}

interface Plan {
  fetchMs: number;
  buildMs: number;
  /** Times (ms after the build starts) and lengths of the log lines the build writes. */
  lines: Array<{ at: number; len: number }>;
  outcome: 'success' | 'fail' | 'infra' | 'hang';
}

interface Job {
  assign: AssignPayload;
  alias: string;
  emulated: boolean;
  plan: Plan;
  phase: 'fetch' | 'resolve' | 'build' | 'done';
  running: boolean;
  abortReason: CancelReason | null;
  completing: boolean;
  timerCleared: boolean;
  resolved: Payload<'resolved'> | null;
  proceed: (() => void) | null;
  meta: { baseImages: Payload<'resolved'>['base_images']; dockerfileDigest: string | null } | null;
  unacked: LogChunk[];
  finished: FinishedPayload | null;
  acceptedAt: number;
  startedAt: number | null;
  fetchMs: number;
  buildStartedAt: number | null;
  // the log batcher (agent/log-batcher.ts: 50 ms after the first byte)
  pending: Buffer[];
  flushQueued: boolean;
  seq: number;
  offset: number;
}

const BASE_IMAGE_DIGEST = `sha256:${'b'.repeat(64)}`;

function sha256(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export class SimAgent {
  alive = false;
  session = '';
  private incarnation = 0;
  private jobs = new Map<string, Job>();
  private conn: SimConnection | null = null;
  private welcome: WelcomePayload | null = null;
  private welcomed = false;
  private lastFrameAt = 0;
  private nextId = 0;
  private backoff: Backoff;
  /** Takes no new work (a SIGTERM: drain, or cancel everything and stop). */
  private draining = false;
  /** A host problem (disk full, Docker Engine gone) until then: the agent takes no work. */
  private unhealthyUntil = 0;
  private idleWaiter: (() => void) | null = null;

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
    return this.jobs.size;
  }

  /** The current connection, if any. */
  connection(): SimConnection | null {
    return this.conn;
  }

  /** Connected and welcomed. */
  get online(): boolean {
    return this.alive && this.welcomed && this.conn !== null;
  }

  /** As agent.ts health(): draining counts as not accepting. */
  private health(): { accepting: boolean; problem: string | null } {
    if (this.draining) return { accepting: false, problem: 'the agent is draining (shutting down)' };
    if (this.w.now < this.unhealthyUntil) return { accepting: false, problem: 'disk full: 12 MiB free on /var/lib/kiln' };
    return { accepting: true, problem: null };
  }

  /** The host has a problem for `ms` (health.ts): reported at once, and again when it clears. */
  unhealthyFor(ms: number): void {
    if (!this.alive) return;
    this.unhealthyUntil = this.w.now + ms;
    this.w.log(`agent ${this.name} unhealthy for ${ms} ms`);
    this.sendHeartbeat();
    this.later(ms, 'healthy again', () => {
      if (this.w.now >= this.unhealthyUntil) this.sendHeartbeat();
    });
  }

  private sendHeartbeat(): void {
    this.send('heartbeat', { running: [...this.jobs.keys()], health: this.health() });
  }

  private get w(): World {
    return this.env.world;
  }

  private agentNow(): number {
    return Math.max(0, this.w.now + this.cfg.clockSkewMs);
  }

  /** Starts a new process (new session, no jobs). */
  start(): void {
    if (this.alive) return;
    this.alive = true;
    this.incarnation++;
    this.session = `${this.cfg.name}-proc${this.incarnation}`;
    this.jobs = new Map();
    this.nextId = 0;
    this.draining = false;
    this.unhealthyUntil = 0;
    this.idleWaiter = null;
    this.backoff = new Backoff({ baseMs: 500, capMs: 5000, random: this.rng.fn() });
    this.w.log(`agent ${this.name} starts (session ${this.session})`);
    this.connect();
  }

  /** The process dies: `crash` (the kernel resets its sockets) or `host-down` (silence). */
  kill(mode: 'crash' | 'host-down'): void {
    if (!this.alive) return;
    this.alive = false;
    this.w.log(`agent ${this.name} ${mode === 'crash' ? 'crashes' : 'host goes down'} with ${this.jobs.size} jobs`);
    const c = this.conn;
    this.conn = null;
    this.welcome = null;
    this.welcomed = false;
    if (c && c.agentOpen) this.env.net.abort(c, 'agent', { coord: mode === 'crash', agent: false }, `agent process ${mode}`);
    this.jobs.clear();
  }

  /**
   * A graceful stop (agent/main.ts signal ladder): `drain` takes no new work and stops once
   * every job finished and was acked; `cancel` also aborts the running builds (they report
   * `cancelled`) and stops when they are acked or after 10 s. `then` runs after the stop.
   */
  stopGracefully(how: 'drain' | 'cancel', then: () => void): void {
    if (!this.alive || this.draining) return;
    this.draining = true;
    this.sendHeartbeat(); // the coordinator stops sending work at once
    const session = this.session;
    this.w.log(`agent ${this.name} ${how === 'drain' ? 'drains' : 'cancels its builds and stops'} (${this.jobs.size} jobs)`);
    const stop = () => {
      if (!this.alive || this.session !== session) return;
      this.idleWaiter = null;
      this.w.log(`agent ${this.name} stops`);
      const c = this.conn;
      this.alive = false;
      this.conn = null;
      this.welcome = null;
      this.welcomed = false;
      if (c) this.env.net.agentClose(c, 1000, 'agent stopping');
      this.jobs.clear();
      then();
    };
    if (how === 'cancel') {
      for (const job of this.jobs.values()) if (job.running) this.abort(job, { kind: 'shutdown', message: 'the agent is shutting down' });
      this.later(10_000, 'stop (grace over)', stop);
    }
    if (this.jobs.size === 0) stop();
    else this.idleWaiter = stop;
  }

  private checkIdle(): void {
    if (this.jobs.size === 0 && this.idleWaiter) this.idleWaiter();
  }

  /** The agent drops its connection itself (as its liveness timer would). */
  dropConnection(why: string): void {
    const c = this.conn;
    if (c) this.terminate(c, why);
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
    if (this.conn) return false;
    this.conn = conn;
    this.welcome = null;
    this.welcomed = false;
    this.lastFrameAt = this.w.now;
    const running = [...this.jobs.entries()].map(([id, j]) => ({ attempt_id: id, log_bytes: j.offset }));
    this.sendRaw(conn, 'hello', {
      protocol_versions: [1],
      agent_version: 'sim',
      name: this.name,
      session: this.session,
      platforms: this.cfg.platforms,
      labels: {},
      max_jobs: this.cfg.maxJobs,
      executor: this.cfg.executor,
      docker: this.cfg.executor === 'docker' ? { version: 'sim', api_version: '1.47', os: 'linux', arch: 'amd64', buildkit_version: null } : null,
      gpus: [],
      running,
      health: this.health(),
    });
    const liveness = () => {
      if (this.conn !== conn) return;
      const limit = this.welcome ? this.welcome.lost_after_ms : 30_000;
      if (this.w.now - this.lastFrameAt > limit) {
        this.terminate(conn, `no frame from the coordinator for ${this.w.now - this.lastFrameAt} ms`);
        return;
      }
      this.later(1000, 'liveness', liveness);
    };
    this.later(1000, 'liveness', liveness);
    return true;
  }

  private terminate(conn: SimConnection, why: string): void {
    this.env.net.abort(conn, 'agent', { coord: true, agent: false }, `agent ${this.name} terminates it: ${why}`);
    this.closed(conn, why);
  }

  private onClose(conn: SimConnection, code: number, reason: string): void {
    if (code === 4002 || code === 4003) this.w.violate('protocol', `the coordinator closed ${conn.label} with ${code} (${reason}); a real agent would stop for good`);
    this.closed(conn, `closed ${code} ${reason}`);
  }

  private closed(conn: SimConnection, reason: string): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.welcome = null;
    this.welcomed = false;
    this.retryLater(reason);
  }

  private sendRaw<T extends ToCoordinatorType>(conn: SimConnection, type: T, payload: Payload<T>): void {
    this.env.net.send(conn, 'toCoord', encodeFrame(type, ++this.nextId, payload, 1), type);
  }

  private send<T extends ToCoordinatorType>(type: T, payload: Payload<T>): boolean {
    const c = this.conn;
    if (!c || !c.agentOpen || (!this.welcomed && type !== 'hello')) return false;
    this.sendRaw(c, type, payload);
    return true;
  }

  private onFrame(conn: SimConnection, bytes: Buffer): void {
    if (this.conn !== conn) return;
    this.lastFrameAt = this.w.now;
    const decoded = decodeFrame(bytes, 'agent');
    if (!decoded.ok) {
      this.w.violate('protocol', `agent ${this.name} could not decode a frame from the coordinator: ${decoded.error}`);
      return;
    }
    const frame = decoded.frame;
    if (!isHeartbeatAck(frame.type, frame.payload)) this.w.log(`c→${conn.label} arrives: ${scrub(this.w, describeFrame(this.w, frame.type, frame.payload as Record<string, unknown>))}`);
    if (!this.welcome) {
      if (frame.type === 'welcome') {
        this.welcome = frame.payload;
        this.welcomed = true;
        this.backoff.reset();
        this.resume(frame.payload);
        this.scheduleHeartbeat(conn);
      }
      return;
    }
    this.handle(frame);
  }

  private scheduleHeartbeat(conn: SimConnection): void {
    const welcome = this.welcome;
    if (!welcome) return;
    this.later(jitter(welcome.heartbeat_interval_ms, 0.1, this.rng.fn()), 'heartbeat', () => {
      if (this.conn !== conn || this.welcome !== welcome) return;
      this.sendHeartbeat();
      this.scheduleHeartbeat(conn);
    });
  }

  private resume(welcome: WelcomePayload): void {
    for (const d of welcome.resume) {
      const job = this.jobs.get(d.attempt_id);
      if (!job) continue;
      if (d.action === 'cancel') {
        this.dropJob(d.attempt_id, 'the coordinator no longer wants this attempt');
        continue;
      }
      job.unacked = job.unacked.filter((c) => c.offset + c.data.length > d.log_offset);
      for (const c of job.unacked) this.sendChunk(d.attempt_id, c);
      if (job.resolved && job.proceed) this.send('resolved', job.resolved);
      if (job.finished) this.send('finished', job.finished);
    }
  }

  private handle(frame: Frame): void {
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
        if (job.running) this.abort(job, { kind: 'cancel', message: `cancelled: ${frame.payload.reason}` });
        else this.dropJob(frame.payload.attempt_id, frame.payload.reason);
        break;
      }
      case 'ack': {
        const { attempt_id, log_offset } = frame.payload;
        if (!attempt_id) return;
        const job = this.jobs.get(attempt_id);
        if (!job) return;
        if (log_offset !== undefined) job.unacked = job.unacked.filter((c) => c.offset + c.data.length > log_offset);
        else if (job.finished) {
          this.jobs.delete(attempt_id);
          this.checkIdle();
        }
        break;
      }
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ jobs

  private runningJobs(): number {
    let n = 0;
    for (const j of this.jobs.values()) if (j.running) n++;
    return n;
  }

  private onAssign(a: AssignPayload): void {
    const reject = (reason: string) => this.send('reject', { attempt_id: a.attempt_id, reason });
    if (this.jobs.has(a.attempt_id)) return;
    if (this.draining) return void reject('the agent is draining');
    const health = this.health();
    if (!health.accepting) return void reject(`the agent is not taking work: ${health.problem ?? 'unhealthy'}`);
    if (this.runningJobs() >= this.cfg.maxJobs) return void reject(`no free slot (${this.cfg.maxJobs} jobs running)`);
    const platform = this.cfg.platforms.find((p) => normalizePlatform(p.platform) === normalizePlatform(a.platform));
    if (!platform) return void reject(`platform ${a.platform} is not supported here (${this.cfg.platforms.map((p) => p.platform).join(', ')})`);
    const job: Job = {
      assign: a,
      alias: this.w.attempt(a.attempt_id),
      emulated: platform.emulated,
      plan: this.plan(a),
      phase: 'fetch',
      running: true,
      abortReason: null,
      completing: false,
      timerCleared: false,
      resolved: null,
      proceed: null,
      meta: null,
      unacked: [],
      finished: null,
      acceptedAt: this.agentNow(),
      startedAt: null,
      fetchMs: 0,
      buildStartedAt: null,
      pending: [],
      flushQueued: false,
      seq: 0,
      offset: 0,
    };
    this.jobs.set(a.attempt_id, job);
    this.send('accept', { attempt_id: a.attempt_id });
    this.later(a.timeout_ms, `timeout ${job.alias}`, () => {
      if (!job.timerCleared) this.abort(job, { kind: 'timeout', message: `timed out after ${formatDuration(a.timeout_ms)}` });
    });
    this.runJob(job);
  }

  private plan(a: AssignPayload): Plan {
    const odds = this.env.odds();
    const r = this.rng.next();
    const outcome = r < odds.hang ? 'hang' : r < odds.hang + odds.infra ? 'infra' : r < odds.hang + odds.infra + odds.fail ? 'fail' : 'success';
    const buildMs = outcome === 'hang' ? a.timeout_ms + 5000 : this.rng.int(200, 4000);
    const lines: Plan['lines'] = [];
    const n = this.rng.int(0, 8);
    for (let i = 0; i < n; i++) lines.push({ at: this.rng.int(0, Math.min(buildMs, 4000)), len: this.rng.int(5, 200) });
    lines.sort((x, y) => x.at - y.at);
    return { fetchMs: this.rng.int(5, 300), buildMs, lines, outcome };
  }

  private write(job: Job, text: string): void {
    job.pending.push(Buffer.from(text));
    if (job.flushQueued) return;
    job.flushQueued = true;
    this.later(50, `flush ${job.alias}`, () => {
      job.flushQueued = false;
      this.flush(job);
    });
  }

  private flush(job: Job): void {
    if (job.pending.length === 0) return;
    const data = Buffer.concat(job.pending);
    job.pending = [];
    const chunk: LogChunk = { seq: job.seq++, offset: job.offset, data };
    job.offset += data.length;
    const id = job.assign.attempt_id;
    let list = this.env.produced.get(id);
    if (!list) this.env.produced.set(id, (list = []));
    list.push(data);
    if (this.jobs.get(id) !== job) return; // dropped: the chunk goes nowhere
    job.unacked.push(chunk);
    this.sendChunk(id, chunk);
  }

  private sendChunk(id: string, c: LogChunk): void {
    this.send('log', { attempt_id: id, seq: c.seq, offset: c.offset, data: c.data });
  }

  private runJob(job: Job): void {
    const a = job.assign;
    this.write(job, `[kiln] agent ${this.name}: node '${a.node}' attempt ${a.attempt} for ${a.platform}${job.emulated ? ' (emulated)' : ''}\n`);
    this.later(job.plan.fetchMs, `fetched ${job.alias}`, () => {
      if (job.phase !== 'fetch' || job.completing) return;
      job.fetchMs = job.plan.fetchMs;
      job.meta = { baseImages: [{ ref: 'kiln/busybox:1', digest: BASE_IMAGE_DIGEST }], dockerfileDigest: a.dockerfile_inline ? sha256(a.dockerfile_inline) : null };
      if (job.abortReason) return void this.complete(job, this.aborted(job));
      if (!a.resolve) return void this.startBuild(job);
      job.phase = 'resolve';
      job.resolved = { attempt_id: a.attempt_id, base_images: job.meta.baseImages, dockerfile_digest: job.meta.dockerfileDigest };
      job.proceed = () => {
        job.proceed = null;
        job.resolved = null;
        this.startBuild(job);
      };
      this.send('resolved', job.resolved);
    });
  }

  private startBuild(job: Job): void {
    if (job.completing) return;
    job.phase = 'build';
    job.startedAt = this.agentNow();
    job.buildStartedAt = this.w.now;
    this.send('started', { attempt_id: job.assign.attempt_id, at: job.startedAt });
    for (const line of job.plan.lines) {
      this.later(line.at, `output ${job.alias}`, () => {
        if (job.phase !== 'build' || job.completing) return;
        this.write(job, `#${line.at} ${'x'.repeat(line.len)}\n`);
      });
    }
    this.later(job.plan.buildMs, `built ${job.alias}`, async () => {
      if (job.phase !== 'build' || job.completing) return;
      const o = job.plan.outcome;
      if (o === 'success') {
        const outputs: FinishedPayload['outputs'] = [];
        for (const out of job.assign.outputs) {
          const bytes = Buffer.from(`artifact ${job.alias} ${out.name} ${out.path}`);
          const digest = sha256(bytes);
          await this.env.cas.putBuffer(digest as Digest, bytes);
          outputs.push({ name: out.name, digest, size: bytes.length, media_type: ARTIFACT_MEDIA_TYPE });
        }
        this.complete(job, { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId: sha256(`image ${job.alias}`), outputs });
      } else if (o === 'fail') {
        this.complete(job, { status: 'failed', exitCode: 1, error: 'process "/bin/sh -c make" did not complete successfully: exit code: 1', failedStep: '[2/2] RUN make', infra: false, imageId: null, outputs: [] });
      } else if (o === 'infra') {
        this.complete(job, { status: 'failed', exitCode: null, error: 'the Docker Engine is unreachable (connect ENOENT /var/run/docker.sock)', failedStep: null, infra: true, imageId: null, outputs: [] });
      }
      // 'hang': never finishes by itself; the timeout aborts it
    });
  }

  private abort(job: Job, reason: CancelReason): void {
    if (job.abortReason || !job.running) return;
    job.abortReason = reason;
    if (job.phase === 'resolve') {
      job.proceed = null;
      this.complete(job, this.aborted(job));
    } else if (job.phase === 'fetch' || job.phase === 'build') {
      // the executor notices the abort (fetch aborted, BuildKit cancelled) a little later
      this.later(this.rng.int(5, job.phase === 'build' ? 300 : 50), `aborted ${job.alias}`, () => {
        if (!job.completing) this.complete(job, this.aborted(job));
      });
    }
  }

  private aborted(job: Job): RunResult {
    const r = job.abortReason;
    const base = { exitCode: null, failedStep: null, imageId: null, infra: false, outputs: [] };
    if (r?.kind === 'timeout') return { ...base, status: 'failed', error: r.message };
    return { ...base, status: 'cancelled', error: r?.message ?? 'cancelled' };
  }

  /** The end of runJob: result line, flush, `finished` (unless the job was dropped meanwhile). */
  private complete(job: Job, r: RunResult): void {
    if (job.completing) return;
    job.completing = true;
    job.phase = 'done';
    const a = job.assign;
    if (r.status === 'success') {
      this.write(job, `[kiln] success: ${r.imageId ?? ''}\n`);
      for (const o of r.outputs) this.write(job, `[kiln] output ${o.name}: ${o.digest} (${o.size} bytes)\n`);
    } else {
      this.write(job, `[kiln] ${r.status}${r.error ? `: ${r.error}` : ''}\n`);
    }
    job.proceed = null;
    job.timerCleared = true;
    job.running = false;
    this.flush(job);
    if (!this.jobs.has(a.attempt_id)) return;
    const now = this.agentNow();
    job.finished = {
      attempt_id: a.attempt_id,
      status: r.status,
      exit_code: r.exitCode,
      error: r.error,
      failed_step: r.failedStep,
      infra: r.infra,
      image_id: r.imageId,
      timings: {
        accepted_at: job.acceptedAt,
        started_at: job.startedAt,
        finished_at: now,
        fetch_ms: job.fetchMs,
        build_ms: job.buildStartedAt === null ? 0 : this.w.now - job.buildStartedAt,
      },
      log_bytes: job.offset,
      outputs: r.status === 'success' ? r.outputs : [],
      base_images: job.meta?.baseImages ?? [],
      dockerfile_digest: job.meta?.dockerfileDigest ?? null,
    };
    this.send('finished', job.finished);
  }

  private dropJob(id: string, reason: string): void {
    const job = this.jobs.get(id);
    if (!job) return;
    if (job.running) this.abort(job, { kind: 'cancel', message: reason });
    job.timerCleared = true;
    this.jobs.delete(id);
    this.checkIdle();
  }
}
