/**
 * The agent: one persistent WebSocket to the coordinator, heartbeats, and the jobs it
 * was assigned.
 *
 * Loops: `run()` keeps a connection open (reconnecting with capped exponential backoff
 * and jitter); each connection sends `hello`, waits for `welcome`, then heartbeats on
 * the interval the coordinator chose and handles assign / cancel / ack frames. Jobs run
 * independently of the connection: a dropped socket does not stop a build. Every log
 * chunk and the `finished` report stay in memory until the coordinator acks them, and
 * are resent after a reconnect from the offset the coordinator says it has, so the log
 * has no gaps and no duplicates and no result is lost.
 *
 * Stopping is not cancelling: `drain()` takes no new work and lets running builds
 * finish; `cancelAll()` aborts them and reports them cancelled.
 *
 * Heartbeats carry the host's load, GPU use and health (health.ts); a change of health is
 * sent at once, and while the agent is not accepting (Docker Engine unreachable, disk
 * full, draining) it rejects assignments with the reason. Self-fencing: an agent that has
 * heard nothing from the coordinator for S (`welcome.cutoff_cancel_ms`, 5 min before the
 * first welcome) cancels its builds and forgets them, since by then the coordinator has
 * given their nodes to other agents.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import {
  Backoff,
  CLOSE_CODES,
  KILN_VERSION,
  KilnError,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSIONS,
  decodeFrame,
  encodeFrame,
  formatDuration,
  jitter,
  normalizePlatform,
  randomToken,
  sleep,
  type AssignPayload,
  type FinishedPayload,
  type Frame,
  type GpuInfoPayload,
  type HealthPayload,
  type HeartbeatPayload,
  type Payload,
  type PlatformCapPayload,
  type ToCoordinatorType,
  type WelcomePayload,
} from '../shared/index.js';
import type { CancelReason, Executor, ExecutorInfo, RunResult } from './executors/executor.js';
import { sampleLoad, type GpuSampler } from './host-metrics.js';
import { LogBatcher, type LogChunk } from './log-batcher.js';

export interface AgentOptions {
  /** ws(s)://host:port/api/v1/agent */
  url: string;
  token: string;
  name: string;
  labels: Record<string, string>;
  maxJobs: number;
  /** Platforms run under emulation, besides the native one. */
  extraPlatforms: string[];
  executor: Executor;
  gpus: GpuInfoPayload[];
  logger: Logger;
  /** Give up (and report) after this long without a welcome; 0 = retry forever. */
  connectTimeoutMs?: number;
  /** Whether the host can take work (health.ts); absent: always accepting. */
  health?: HealthSource;
  /** GPU use for heartbeats; absent: none reported. */
  gpuUse?: Pick<GpuSampler, 'latest' | 'poke'>;
  /** Load for heartbeats. @default sampleLoad (os counters) */
  load?: (diskFreeBytes: number | null) => Payload<'heartbeat'>['load'];
  now?: () => number;
}

/** What the agent needs of its health monitor (HealthMonitor implements it). */
export interface HealthSource {
  current(): HealthPayload;
  diskFreeBytes(): number | null;
  onChange(fn: (h: HealthPayload) => void): () => void;
  check(): Promise<HealthPayload>;
  engineFailed(error: string): void;
  diskFull(message: string, needBytes: number | null): void;
}

/** S before the coordinator has told its own (welcome.cutoff_cancel_ms). */
export const DEFAULT_CUTOFF_CANCEL_MS = 5 * 60_000;

/** How often the cut-off is checked: a tenth of S, within 50 ms .. 10 s. */
export function cutoffCheckInterval(cutoffMs: number): number {
  return Math.min(10_000, Math.max(50, Math.floor(cutoffMs / 10)));
}

/** The agent cannot work with this coordinator (auth, protocol): do not restart in a loop. */
export class FatalAgentError extends KilnError {}

interface Job {
  assign: AssignPayload;
  abort: AbortController;
  /** The `resolved` report sent while waiting for `proceed` (resent after a reconnect). */
  resolved: Payload<'resolved'> | null;
  proceed: (() => void) | null;
  batcher: LogBatcher;
  unacked: LogChunk[];
  finished: FinishedPayload | null;
  running: boolean;
  timer: NodeJS.Timeout | null;
}

export class Agent {
  readonly session = randomToken(12);
  private readonly jobs = new Map<string, Job>();
  private ws: WebSocket | null = null;
  private welcomed = false;
  private nextId = 0;
  private version: number = PROTOCOL_VERSIONS[0];
  private stopping = false;
  private draining = false;
  private info: ExecutorInfo | null = null;
  private platforms: PlatformCapPayload[] = [];
  private readonly log: Logger;
  private readonly backoff = new Backoff({ baseMs: 500, capMs: 30_000 });
  private readonly stopController = new AbortController();
  /** Resolves when every job is done and acked (drain). */
  private idleWaiters: Array<() => void> = [];
  /** When the last frame from the coordinator arrived (any connection); null before the first. */
  private lastCoordinatorFrameAt: number | null = null;
  private cutoffMs = DEFAULT_CUTOFF_CANCEL_MS;
  private cutoffTimer: NodeJS.Timeout | null = null;
  private unsubscribeHealth: (() => void) | null = null;
  private readonly now: () => number;

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
  }

  /** Whether the agent takes work now, and why not (draining counts). */
  health(): HealthPayload {
    if (this.draining) return { accepting: false, problem: 'the agent is draining (shutting down)' };
    return this.opts.health?.current() ?? { accepting: true, problem: null };
  }

  /** What the next heartbeat says (load and GPU use are the last samples; nothing waits). */
  heartbeatPayload(): HeartbeatPayload {
    this.opts.gpuUse?.poke();
    const diskFree = this.opts.health?.diskFreeBytes() ?? null;
    const load = (this.opts.load ?? sampleLoad)(diskFree);
    return {
      running: [...this.jobs.keys()],
      ...(load ? { load } : {}),
      gpus: this.opts.gpuUse?.latest() ?? [],
      health: this.health(),
    };
  }

  /** Attempts this agent holds: running, or finished and waiting for the coordinator's ack. */
  attempts(): string[] {
    return [...this.jobs.keys()];
  }

  get name(): string {
    return this.opts.name;
  }

  runningJobs(): number {
    let n = 0;
    for (const j of this.jobs.values()) if (j.running) n++;
    return n;
  }

  /** Connects and serves until stop(); throws FatalAgentError when retrying cannot help. */
  async run(): Promise<void> {
    this.info = await this.opts.executor.info();
    const native = this.info.nativePlatform;
    this.platforms = [{ platform: native, emulated: false }];
    for (const p of this.opts.extraPlatforms) {
      if (normalizePlatform(p) !== normalizePlatform(native) && !this.platforms.some((x) => x.platform === p)) this.platforms.push({ platform: p, emulated: true });
    }
    this.log.info({ agent: this.opts.name, platforms: this.platforms, max_jobs: this.opts.maxJobs, docker: this.info.docker?.version ?? null }, 'agent starting');
    this.unsubscribeHealth = this.opts.health?.onChange((h) => {
      this.log.info({ accepting: h.accepting, problem: h.problem }, 'health changed');
      this.sendHeartbeat();
    }) ?? null;
    this.armCutoff();
    try {
      while (!this.stopping) {
        const outcome = await this.connectOnce();
        if (this.stopping) break;
        if (outcome.fatal) throw new FatalAgentError('E_CONFIG', outcome.reason);
        const delay = this.backoff.next();
        this.log.warn({ reason: outcome.reason, retry_in_ms: delay }, 'disconnected from coordinator');
        await sleep(delay, this.stopController.signal);
      }
    } finally {
      this.unsubscribeHealth?.();
      if (this.cutoffTimer) clearInterval(this.cutoffTimer);
      this.cutoffTimer = null;
    }
  }

  /** Stops taking work; resolves when running jobs finished and were acked. */
  async drain(): Promise<void> {
    this.startDraining();
    if (this.jobs.size > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
    await this.stop();
  }

  /** Aborts every running build (they report `cancelled`), waits briefly for the acks, stops. */
  async cancelAll(graceMs = 10_000): Promise<void> {
    this.startDraining();
    for (const job of this.jobs.values()) if (job.running) job.abort.abort({ kind: 'shutdown', message: 'the agent is shutting down' } satisfies CancelReason);
    if (this.jobs.size > 0) await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), sleep(graceMs)]);
    await this.stop();
  }

  private startDraining(): void {
    if (this.draining) return;
    this.draining = true;
    this.sendHeartbeat(); // the coordinator stops sending work at once
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.stopController.abort();
    this.ws?.close(1000, 'agent stopping');
  }

  // ------------------------------------------------------------------ connection

  private connectOnce(): Promise<{ fatal: boolean; reason: string }> {
    return new Promise((resolve) => {
      let settled = false;
      const done = (fatal: boolean, reason: string) => {
        if (settled) return;
        settled = true;
        clearInterval(liveness);
        clearTimeout(heartbeatTimer);
        this.ws = null;
        this.welcomed = false;
        resolve({ fatal, reason });
      };
      const ws = new WebSocket(this.opts.url, {
        headers: { authorization: `Bearer ${this.opts.token}` },
        maxPayload: MAX_FRAME_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
      });
      this.ws = ws;
      let lastFrameAt = Date.now();
      let welcome: WelcomePayload | null = null;
      let heartbeatTimer: NodeJS.Timeout | undefined;
      const liveness = setInterval(() => {
        const limit = welcome ? welcome.lost_after_ms : 30_000;
        if (Date.now() - lastFrameAt > limit) {
          this.log.warn({ silent_ms: Date.now() - lastFrameAt }, 'no frame from the coordinator; dropping the connection');
          ws.terminate();
        }
      }, 1000);
      const scheduleHeartbeat = () => {
        if (!welcome) return;
        heartbeatTimer = setTimeout(() => {
          this.sendHeartbeat();
          scheduleHeartbeat();
        }, jitter(welcome.heartbeat_interval_ms, 0.1));
      };

      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => {
          let detail = body;
          try {
            detail = (JSON.parse(body) as { detail?: string }).detail ?? body;
          } catch {
            /* not JSON */
          }
          ws.terminate();
          const fatal = res.statusCode === 401 || res.statusCode === 404;
          done(fatal, `coordinator refused the connection: HTTP ${res.statusCode} ${detail}`.trim());
        });
      });
      ws.on('open', () => {
        this.version = PROTOCOL_VERSIONS[PROTOCOL_VERSIONS.length - 1]!;
        const running = [...this.jobs.entries()].map(([id, j]) => ({ attempt_id: id, log_bytes: j.batcher.offset }));
        ws.send(
          encodeFrame(
            'hello',
            ++this.nextId,
            {
              protocol_versions: [...PROTOCOL_VERSIONS],
              agent_version: KILN_VERSION,
              name: this.opts.name,
              session: this.session,
              platforms: this.platforms,
              labels: this.opts.labels,
              max_jobs: this.opts.maxJobs,
              executor: this.opts.executor.kind,
              docker: this.info?.docker ?? null,
              gpus: this.opts.gpus,
              running,
              health: this.health(),
            },
            this.version,
          ),
        );
      });
      ws.on('message', (data, isBinary) => {
        lastFrameAt = Date.now();
        this.lastCoordinatorFrameAt = this.now();
        if (!isBinary) return;
        const decoded = decodeFrame(Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer), 'agent');
        if (!decoded.ok) {
          this.log.warn({ error: decoded.error }, 'invalid frame from the coordinator');
          this.send('error', { code: 'E_PROTOCOL', message: decoded.error, ...(decoded.id !== undefined ? { ref: decoded.id } : {}) });
          return;
        }
        const frame = decoded.frame;
        if (!welcome) {
          if (frame.type === 'welcome') {
            welcome = frame.payload;
            this.version = frame.payload.protocol_version;
            this.welcomed = true;
            this.backoff.reset();
            if (frame.payload.cutoff_cancel_ms !== this.cutoffMs) {
              this.cutoffMs = frame.payload.cutoff_cancel_ms;
              this.armCutoff();
            }
            this.log.info({ coordinator: frame.payload.coordinator_version, heartbeat_ms: frame.payload.heartbeat_interval_ms, resume: frame.payload.resume.length }, 'connected to coordinator');
            this.resume(frame.payload);
            scheduleHeartbeat();
            // At once, not an interval later: the coordinator gets load and metrics now, and any
            // health change since the hello (nothing goes out before the welcome).
            this.sendHeartbeat();
          } else if (frame.type === 'error') {
            this.log.error({ ...frame.payload }, 'coordinator refused the hello');
          }
          return;
        }
        this.onFrame(frame);
      });
      ws.on('close', (code, reasonBuf) => {
        const reason = reasonBuf.toString() || `close code ${code}`;
        const fatal = code === CLOSE_CODES.PROTOCOL_VERSION || code === CLOSE_CODES.INVALID_FRAME;
        done(fatal, reason);
      });
      ws.on('error', (err) => {
        this.log.debug({ err: err.message }, 'websocket error');
        if (ws.readyState === WebSocket.CLOSED) done(false, err.message);
      });
    });
  }

  private sendHeartbeat(): void {
    if (!this.welcomed) return;
    this.send('heartbeat', this.heartbeatPayload());
  }

  // ------------------------------------------------------------------ self-fencing

  private armCutoff(): void {
    if (this.cutoffTimer) clearInterval(this.cutoffTimer);
    if (this.stopping) return;
    this.cutoffTimer = setInterval(() => this.checkCutoff(), cutoffCheckInterval(this.cutoffMs));
    this.cutoffTimer.unref();
  }

  /** Cancels and forgets every job once nothing came from the coordinator for S. */
  checkCutoff(): void {
    if (this.lastCoordinatorFrameAt === null || this.jobs.size === 0) return;
    const silentMs = this.now() - this.lastCoordinatorFrameAt;
    if (silentMs <= this.cutoffMs) return;
    const message = `cut off from the coordinator for ${formatDuration(this.cutoffMs)}`;
    this.log.warn({ silent_ms: silentMs, attempts: [...this.jobs.keys()] }, `${message}: cancelling running builds; their results are no longer wanted`);
    for (const [id, job] of [...this.jobs]) {
      if (job.running) job.abort.abort({ kind: 'cutoff', message } satisfies CancelReason);
      if (job.timer) clearTimeout(job.timer);
      this.jobs.delete(id);
    }
    this.checkIdle();
  }

  private send<T extends ToCoordinatorType>(type: T, payload: Payload<T>): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || (!this.welcomed && type !== 'hello')) return false;
    ws.send(encodeFrame(type, ++this.nextId, payload, this.version));
    return true;
  }

  /** After a (re)connect: continue or drop each job the coordinator was told about. */
  private resume(welcome: WelcomePayload): void {
    for (const d of welcome.resume) {
      const job = this.jobs.get(d.attempt_id);
      if (!job) continue;
      if (d.action === 'cancel') {
        if (job.finished) this.log.warn({ attempt: d.attempt_id }, 'coordinator does not take the result of this finished attempt; dropping it');
        else this.log.warn({ attempt: d.attempt_id }, 'coordinator no longer wants this attempt; cancelling it');
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
      case 'proceed': {
        const job = this.jobs.get(frame.payload.attempt_id);
        job?.proceed?.();
        break;
      }
      case 'cancel': {
        const job = this.jobs.get(frame.payload.attempt_id);
        if (!job) return;
        if (job.running) {
          this.log.info({ attempt: frame.payload.attempt_id, reason: frame.payload.reason }, 'cancelling build');
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

  private onAssign(a: AssignPayload): void {
    const reject = (reason: string) => {
      this.log.warn({ attempt: a.attempt_id, node: a.node, reason }, 'rejecting assignment');
      this.send('reject', { attempt_id: a.attempt_id, reason });
    };
    if (this.jobs.has(a.attempt_id)) return; // duplicate
    if (this.draining) return reject('the agent is draining');
    const health = this.health();
    if (!health.accepting) return reject(`the agent is not taking work: ${health.problem ?? 'unhealthy'}`);
    // A job being cancelled no longer holds its slot as the coordinator counts it (it freed the
    // slot when it sent the cancel), so it does not count here either.
    let busy = 0;
    for (const j of this.jobs.values()) if (j.running && !j.abort.signal.aborted) busy++;
    if (busy >= this.opts.maxJobs) return reject(`no free slot (${this.opts.maxJobs} jobs running)`);
    const platform = this.platforms.find((p) => normalizePlatform(p.platform) === normalizePlatform(a.platform));
    if (!platform) return reject(`platform ${a.platform} is not supported here (${this.platforms.map((p) => p.platform).join(', ')})`);
    const gpuProblem = this.gpuProblem(a.gpus);
    if (gpuProblem) return reject(gpuProblem);
    const job: Job = {
      assign: a,
      abort: new AbortController(),
      batcher: new LogBatcher({ onChunk: (c) => this.onChunk(a.attempt_id, c) }),
      resolved: null,
      proceed: null,
      unacked: [],
      finished: null,
      running: true,
      timer: null,
    };
    this.jobs.set(a.attempt_id, job);
    this.send('accept', { attempt_id: a.attempt_id });
    job.timer = setTimeout(() => job.abort.abort({ kind: 'timeout', message: `timed out after ${formatDuration(a.timeout_ms)}` } satisfies CancelReason), a.timeout_ms);
    job.timer.unref();
    this.log.info({ attempt: a.attempt_id, build: a.build_id, node: a.node, platform: a.platform }, 'building');
    void this.runJob(job, platform.emulated);
  }

  private async runJob(job: Job, emulated: boolean): Promise<void> {
    const a = job.assign;
    const acceptedAt = Date.now();
    let startedAt: number | null = null;
    let result: RunResult;
    try {
      result = await this.opts.executor.run(a, {
        log: (text) => job.batcher.write(text),
        started: () => {
          startedAt = Date.now();
          this.send('started', { attempt_id: a.attempt_id, at: startedAt });
        },
        resolved: (info) => this.waitForProceed(job, info),
        testStarting: () => {
          // The build's limit no longer applies; the executor enforces the test's. This
          // timer is only the guard against an engine that does not stop the container.
          if (job.timer) clearTimeout(job.timer);
          const limit = (a.test?.timeout_ms ?? 0) + TEST_KILL_GRACE_MS;
          job.timer = setTimeout(() => job.abort.abort({ kind: 'timeout', message: `the test did not end within ${formatDuration(limit)}` } satisfies CancelReason), limit);
          job.timer.unref();
        },
        signal: job.abort.signal,
        agentName: this.opts.name,
        emulated,
      });
    } catch (err) {
      result = { status: 'failed', exitCode: null, error: `agent error: ${(err as Error).message}`, failedStep: null, infra: true, imageId: null, fetchMs: 0, buildMs: 0 };
    }
    job.proceed = null;
    if (job.timer) clearTimeout(job.timer);
    job.running = false;
    job.batcher.flush();
    if (result.trouble?.kind === 'disk_full') this.opts.health?.diskFull(result.trouble.error, result.trouble.needBytes);
    else if (result.trouble?.kind === 'engine_unreachable') this.opts.health?.engineFailed(result.trouble.error);
    else void this.opts.health?.check();
    if (!this.jobs.has(a.attempt_id)) return; // dropped by the coordinator (or cut off) meanwhile
    job.finished = {
      attempt_id: a.attempt_id,
      status: result.status,
      exit_code: result.exitCode,
      error: result.error ? result.error.slice(0, 16_000) : null,
      failed_step: result.failedStep ? result.failedStep.slice(0, 4000) : null,
      infra: result.infra,
      ...(result.testExitCode !== undefined ? { test_exit_code: result.testExitCode } : {}),
      image_id: result.imageId,
      timings: { accepted_at: acceptedAt, started_at: startedAt, finished_at: Date.now(), fetch_ms: result.fetchMs, build_ms: result.buildMs },
      log_bytes: job.batcher.offset,
      outputs: result.status === 'success' ? (result.outputs ?? []) : [],
      base_images: result.baseImages ?? [],
      dockerfile_digest: result.dockerfileDigest ?? null,
    };
    this.log.info({ attempt: a.attempt_id, node: a.node, status: result.status, exit_code: result.exitCode }, 'build finished');
    this.send('finished', job.finished);
  }

  /** Sends `resolved` and waits for `proceed` (or the abort signal) when the assignment asks for it. */
  private waitForProceed(job: Job, info: { baseImages: Payload<'resolved'>['base_images']; dockerfileDigest: string | null }): Promise<void> {
    if (!job.assign.resolve) return Promise.resolve();
    const signal = job.abort.signal;
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(new Error('aborted'));
      const onAbort = () => {
        job.proceed = null;
        reject(new Error('aborted'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      job.proceed = () => {
        job.proceed = null;
        job.resolved = null;
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      job.resolved = { attempt_id: job.assign.attempt_id, base_images: info.baseImages, dockerfile_digest: info.dockerfileDigest };
      this.send('resolved', job.resolved);
    });
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
    if (job.timer) clearTimeout(job.timer);
    this.jobs.delete(attemptId);
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.jobs.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }
}

/** How long past its limit a test may take before the agent gives up on the engine killing it. */
const TEST_KILL_GRACE_MS = 30_000;

export function defaultAgentName(): string {
  return hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 63) || 'agent';
}
