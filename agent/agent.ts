/**
 * The agent process's connection: one persistent WebSocket to the coordinator, kept open
 * with capped exponential backoff and jitter, and the process wiring (executor info,
 * platforms, health subscription, stop). The protocol itself (hello and welcome, frames,
 * assignments, acks, heartbeats, liveness, self-fencing) is the session, agent-session.ts,
 * which this file feeds the socket's messages to.
 *
 * With several coordinators (issue 14) it follows the leader among them: which one it
 * connects to next is coordinator-ring.ts (a NOT_LEADER close naming a coordinator of the
 * list moves there at once; other ends move to the next one; the backoff is taken once the
 * whole list failed in a row). Resuming is the same on any of them: the hello names the
 * attempts the agent holds, so a new leader adopts them.
 *
 * Stopping is not cancelling: `drain()` takes no new work and lets running builds
 * finish; `cancelAll()` aborts them and reports them cancelled. Either ends by closing
 * the socket with AGENT_SHUTDOWN, which the coordinator logs as a departure, not a loss.
 */
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type WebSocketClass from 'ws';
import {
  Backoff,
  CLOSE_CODES,
  corkForTurn,
  KilnError,
  leaderFromReason,
  MAX_FRAME_BYTES,
  normalizePlatform,
  randomToken,
  sleep,
  systemTimers,
  tlsRefusalCode,
  tlsRefusalMessage,
  type GpuInfoPayload,
  type HealthPayload,
  type HeartbeatPayload,
  type Payload,
  type PlatformCapPayload,
  type Tracer,
} from '../shared/core.js';
import { AgentSession, type HealthSource } from './agent-session.js';
import type { CoordinatorEndpoint } from './config.js';
import { CoordinatorRing } from './coordinator-ring.js';

/** The longest wait between two rounds of the coordinator list while a standby says an election is under way. */
const ELECTION_RETRY_MS = 1_000;
import type { Executor } from './executors/executor.js';
import { sampleLoad, type GpuSampler } from './host-metrics.js';

// ws is CommonJS: `require` loads it as is. An ES `import` would make Node scan its
// sources for export names first (cjs-module-lexer, a loop hot enough that V8 optimizes
// it on a background thread at start-up, leaving megabytes in a malloc arena of an idle
// agent: see the README, "Idle agent memory").
const WebSocket = createRequire(import.meta.url)('ws') as typeof WebSocketClass;
type WebSocket = WebSocketClass;

export { DEFAULT_CUTOFF_CANCEL_MS, cutoffCheckInterval, type HealthSource } from './agent-session.js';

export interface AgentOptions {
  /** ws(s)://host:port/api/v1/agent (used when `coordinators` is absent) */
  url: string;
  /** The coordinator list, in order (issue 14); absent: `url` alone. */
  coordinators?: readonly CoordinatorEndpoint[];
  /** Called when a connection to a coordinator opens: CAS and credential calls go to the one the agent is connected to. */
  onCoordinator?: (endpoint: CoordinatorEndpoint) => void;
  /** wss://: the CA file the coordinator's certificate is verified with; absent: Node's built-in store. */
  ca?: { file: string; pem: string } | null;
  token: string;
  name: string;
  labels: Record<string, string>;
  maxJobs: number;
  /** Platforms run under emulation, besides the native one. */
  extraPlatforms: string[];
  executor: Executor;
  gpus: GpuInfoPayload[];
  logger: Logger;
  /** Gets (and stores) a new credential when the coordinator asks for a rotation; absent: a rotation request is refused (fatal). */
  rotateCredential?: (current: string) => Promise<string>;
  /** Appended to a refusal of the token or credential: where it is kept and what to do. */
  authHint?: string;
  /** Give up (and report) after this long without a welcome; 0 = retry forever. */
  connectTimeoutMs?: number;
  /** Whether the host can take work (health.ts); absent: always accepting. */
  health?: HealthSource;
  /** GPU use for heartbeats; absent: none reported. */
  gpuUse?: Pick<GpuSampler, 'latest' | 'poke'>;
  /** Load for heartbeats. @default sampleLoad (os counters) */
  load?: (diskFreeBytes: number | null) => Payload<'heartbeat'>['load'];
  now?: () => number;
  /** Spans of each job's phases (agent/tracing.ts); absent: tracing off. */
  tracer?: Tracer;
}

/** How one connection ended. */
interface ConnectOutcome {
  fatal: boolean;
  reason: string;
  /** The coordinator asked for a credential rotation (CREDENTIAL_ROTATE). */
  rotate: boolean;
  /** Closed with NOT_LEADER; `leader` is the coordinator its reason names (null: unknown). */
  notLeader: boolean;
  leader: string | null;
}

/** The agent cannot work with this coordinator (auth, protocol): do not restart in a loop. */
export class FatalAgentError extends KilnError {}

/** Why the agent closes its socket when it stops: the coordinator logs a departure. */
const SHUTDOWN_REASON = 'agent shutting down';

export class Agent {
  readonly session = randomToken(12);
  private core: AgentSession | null = null;
  private ws: WebSocket | null = null;
  private stopping = false;
  private readonly log: Logger;
  private readonly backoff = new Backoff({ baseMs: 500, capMs: 30_000 });
  private readonly stopController = new AbortController();
  /** The token the next connection sends (a rotation replaces it). */
  private token: string;
  /** The coordinator list and which one is next. */
  private readonly ring: CoordinatorRing;

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.logger;
    this.token = opts.token;
    this.ring = new CoordinatorRing(opts.coordinators?.length ? opts.coordinators : [{ wsUrl: opts.url, httpUrl: opts.url.replace(/^ws/, 'http').replace(/\/api\/v1\/agent$/, '') }]);
  }

  get name(): string {
    return this.opts.name;
  }

  /** Whether the agent takes work now, and why not (draining counts). */
  health(): HealthPayload {
    return this.core?.health() ?? this.opts.health?.current() ?? { accepting: true, problem: null };
  }

  /** What the next heartbeat says (load and GPU use are the last samples; nothing waits). */
  heartbeatPayload(): HeartbeatPayload {
    return this.sessionCore().heartbeatPayload();
  }

  /** Attempts this agent holds: running, or finished and waiting for the coordinator's ack. */
  attempts(): string[] {
    return [...(this.core?.jobs.keys() ?? [])];
  }

  runningJobs(): number {
    return this.core?.runningJobs() ?? 0;
  }

  /** Cancels and forgets every job once nothing came from the coordinator for S. */
  checkCutoff(): void {
    this.core?.checkCutoff();
  }

  private sessionCore(): AgentSession {
    if (!this.core) throw new KilnError('E_INTERNAL', 'the agent has not started');
    return this.core;
  }

  /** Connects and serves until stop(); throws FatalAgentError when retrying cannot help. */
  async run(): Promise<void> {
    const info = await this.opts.executor.info();
    const native = info.nativePlatform;
    const platforms: PlatformCapPayload[] = [{ platform: native, emulated: false }];
    for (const p of this.opts.extraPlatforms) {
      if (normalizePlatform(p) !== normalizePlatform(native) && !platforms.some((x) => x.platform === p)) platforms.push({ platform: p, emulated: true });
    }
    this.log.info({ agent: this.opts.name, platforms, max_jobs: this.opts.maxJobs, docker: info.docker?.version ?? null }, 'agent starting');
    const core = new AgentSession({
      session: this.session,
      name: this.opts.name,
      labels: this.opts.labels,
      maxJobs: this.opts.maxJobs,
      platforms,
      executor: this.opts.executor,
      docker: info.docker,
      gpus: this.opts.gpus,
      logger: this.log,
      ...(this.opts.health ? { health: this.opts.health } : {}),
      ...(this.opts.gpuUse ? { gpuUse: this.opts.gpuUse } : {}),
      ...(this.opts.tracer ? { tracer: this.opts.tracer } : {}),
      load: this.opts.load ?? sampleLoad,
      now: this.opts.now ?? Date.now,
      timers: systemTimers,
    });
    this.core = core;
    const unsubscribeHealth = this.opts.health?.onChange((h) => {
      this.log.info({ accepting: h.accepting, problem: h.problem }, 'health changed');
      core.sendHeartbeat();
    });
    try {
      while (!this.stopping) {
        const outcome = await this.connectOnce(core);
        if (this.stopping) break;
        if (outcome.fatal) throw new FatalAgentError('E_CONFIG', outcome.reason);
        if (outcome.rotate) {
          // Builds go on: the next connection (same session) resumes them.
          if (!this.opts.rotateCredential) throw new FatalAgentError('E_CONFIG', `the coordinator asked for a credential rotation, which this agent's token cannot do: ${outcome.reason}`);
          try {
            this.token = await this.opts.rotateCredential(this.token);
            continue;
          } catch (err) {
            if (err instanceof KilnError && err.code === 'E_CONFIG') throw new FatalAgentError('E_CONFIG', `${err.message}${this.hint()}`);
            this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'credential rotation failed');
          }
        }
        const from = this.ring.current.httpUrl;
        const step = this.ring.next(outcome.notLeader ? { leader: outcome.leader } : {});
        const several = this.ring.size > 1 ? { url: from, next_url: step.endpoint.httpUrl, why: step.why } : {};
        if (!step.backoff) {
          this.log.warn({ reason: outcome.reason, ...several }, 'disconnected from coordinator; trying the next one');
          continue;
        }
        // During an election (a standby answered NOT_LEADER) the new leader is seconds away: wait at most 1 s.
        const delay = step.election ? Math.min(this.backoff.next(), ELECTION_RETRY_MS) : this.backoff.next();
        this.log.warn({ reason: outcome.reason, retry_in_ms: delay, ...several }, 'disconnected from coordinator');
        await sleep(delay, this.stopController.signal);
      }
    } finally {
      unsubscribeHealth?.();
      core.stop();
    }
  }

  /** Stops taking work; resolves when running jobs finished and were acked. */
  async drain(): Promise<void> {
    if (this.core) await this.core.drain();
    await this.stop();
  }

  /** Aborts every running build (they report `cancelled`), waits briefly for the acks, stops. */
  async cancelAll(graceMs = 10_000): Promise<void> {
    if (this.core) await this.core.cancelAll(graceMs);
    await this.stop();
  }

  /** Stops: closes the socket as a departure (AGENT_SHUTDOWN) and does not reconnect. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.stopController.abort();
    this.ws?.close(CLOSE_CODES.AGENT_SHUTDOWN, SHUTDOWN_REASON);
  }

  // ------------------------------------------------------------------ connection

  private hint(): string {
    return this.opts.authHint ? ` (${this.opts.authHint})` : '';
  }

  private connectOnce(core: AgentSession): Promise<ConnectOutcome> {
    const endpoint = this.ring.current;
    return new Promise((resolve) => {
      let settled = false;
      const ws = new WebSocket(endpoint.wsUrl, {
        headers: { authorization: `Bearer ${this.token}` },
        maxPayload: MAX_FRAME_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        ...(this.opts.ca ? { ca: this.opts.ca.pem } : {}),
      });
      let failure: string | null = null;
      // The frames of one turn leave in one write (shared/cork-per-turn.ts).
      let socket: Duplex | null = null;
      ws.on('upgrade', (res) => (socket = res.socket));
      const link = {
        send: (bytes: Buffer) => {
          if (ws.readyState !== WebSocket.OPEN) return;
          if (socket) corkForTurn(socket);
          ws.send(bytes);
        },
        terminate: () => ws.terminate(),
        welcomed: () => {
          this.backoff.reset();
          this.ring.welcomed();
        },
      };
      const done = (fatal: boolean, reason: string, rotate = false, notLeader: { leader: string | null } | null = null) => {
        if (settled) return;
        settled = true;
        core.closed(link);
        this.ws = null;
        resolve({ fatal, reason, rotate, notLeader: notLeader !== null, leader: notLeader?.leader ?? null });
      };
      this.ws = ws;

      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => {
          let detail = body;
          let problem: { detail?: string; code?: unknown; leader?: unknown } = {};
          try {
            const parsed = JSON.parse(body) as unknown;
            if (parsed !== null && typeof parsed === 'object') problem = parsed as typeof problem;
            detail = problem.detail ?? body;
          } catch {
            /* not JSON */
          }
          ws.terminate();
          const fatal = res.statusCode === 401 || res.statusCode === 404;
          // A standby may refuse the upgrade itself with the 503 E_NOT_LEADER problem: followed like a NOT_LEADER close.
          const notLeader = res.statusCode === 503 && problem.code === 'E_NOT_LEADER' ? { leader: typeof problem.leader === 'string' ? problem.leader : null } : null;
          done(fatal, `coordinator refused the connection: HTTP ${res.statusCode} ${detail}`.trim() + (res.statusCode === 401 ? this.hint() : ''), false, notLeader);
        });
      });
      ws.on('open', () => {
        if (this.ring.size > 1) this.log.info({ url: endpoint.httpUrl }, 'connection to coordinator open');
        this.opts.onCoordinator?.(endpoint);
        core.opened(link);
      });
      ws.on('message', (data, isBinary) => core.received(Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data), isBinary));
      ws.on('close', (code, reasonBuf) => {
        const reason = reasonBuf.toString() || failure || `close code ${code}`;
        const credential = code === CLOSE_CODES.CREDENTIAL_REVOKED || code === CLOSE_CODES.CREDENTIAL_NAME;
        const fatal = credential || code === CLOSE_CODES.PROTOCOL_VERSION || code === CLOSE_CODES.INVALID_FRAME;
        const notLeader = code === CLOSE_CODES.NOT_LEADER ? { leader: leaderFromReason(reasonBuf.toString()) } : null;
        done(fatal, credential ? `${reason}${this.hint()}` : reason, code === CLOSE_CODES.CREDENTIAL_ROTATE, notLeader);
      });
      ws.on('error', (err) => {
        const refused = tlsRefusalMessage(err, `the coordinator at ${endpoint.wsUrl}`, this.opts.ca?.file ?? null);
        if (refused !== null) {
          // Retried like any failed connection: a certificate being rotated can come right.
          failure = refused;
          this.log.error({ code: tlsRefusalCode(err), ca_file: this.opts.ca?.file ?? null }, refused);
        } else {
          failure = err.message;
          this.log.debug({ err: err.message }, 'websocket error');
        }
        if (ws.readyState === WebSocket.CLOSED) done(false, failure);
      });
    });
  }
}

export function defaultAgentName(): string {
  return hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 63) || 'agent';
}
