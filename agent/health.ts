/**
 * Whether the agent can take work (`Health {accepting, problem}` in hello and
 * heartbeats), and why not. Three problems stop it:
 *
 * - The Docker Engine does not answer (`GET /_ping` refused, socket missing, no answer
 *   within the ping timeout). Reported by a failed ping, or by the executor after an
 *   engine call broke (`engineFailed`), which pings at once. While it is down the
 *   monitor pings with capped exponential backoff until it answers again.
 * - The work dir's file system has less free space than `min_free_disk`.
 * - A write failed with ENOSPC (`diskFull`): not accepting until there is `min_free_disk`
 *   free again plus what the failed write wanted, when that is known and could ever fit
 *   on the file system (otherwise the failing node, not the agent, is the problem).
 *
 * Disk space is measured (statfs, cheap) and the engine pinged every `checkIntervalMs`,
 * and after every job (`check()`); listeners hear each change at once, so the agent can
 * send a heartbeat without waiting for the next one.
 */
import type { Logger } from 'pino';
import { coerceError, Backoff, type HealthPayload } from '../shared/core.js';
import { diskSpace, type DiskSpace } from './host-metrics.js';

export interface HealthMonitorOptions {
  workDir: string;
  /** Below this many free bytes in the work dir the agent takes no work. */
  minFreeBytes: number;
  /** Space of the work dir's file system. @default statfs of workDir */
  space?: () => Promise<DiskSpace>;
  /** Resolves when the Docker Engine answers; null when the agent has no engine (noop executor). */
  ping: ((signal: AbortSignal) => Promise<unknown>) | null;
  /** @default 5000 */
  checkIntervalMs?: number;
  /** A ping unanswered this long means the engine hangs. @default 10000 */
  pingTimeoutMs?: number;
  /** Delays between pings while the engine is down. @default 500 ms doubling to 15 s */
  backoff?: Backoff;
  logger: Logger;
}

const MIB = 1024 * 1024;
const mib = (bytes: number) => `${Math.floor(bytes / MIB)} MiB`;

export class HealthMonitor {
  private engineProblem: string | null = null;
  private lowDisk: string | null = null;
  private full: { message: string; needBytes: number | null; required: number | null } | null = null;
  private free: number | null = null;
  private last: HealthPayload = { accepting: true, problem: null };
  private readonly listeners = new Set<(h: HealthPayload) => void>();
  private checking: Promise<HealthPayload> | null = null;
  private pinging: Promise<void> | null = null;
  private periodic: NodeJS.Timeout | null = null;
  private retry: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly backoff: Backoff;
  private readonly space: () => Promise<DiskSpace>;
  private readonly log: Logger;

  constructor(private readonly opts: HealthMonitorOptions) {
    this.backoff = opts.backoff ?? new Backoff({ baseMs: 500, capMs: 15_000 });
    this.space = opts.space ?? (() => diskSpace(opts.workDir));
    this.log = opts.logger;
  }

  current(): HealthPayload {
    return this.last;
  }

  /** Free bytes in the work dir at the last check; null before it or when statfs failed. */
  diskFreeBytes(): number | null {
    return this.free;
  }

  /** Calls `fn` with the new health on every change; returns the unsubscribe function. */
  onChange(fn: (h: HealthPayload) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Checks now, then every checkIntervalMs until stop(). */
  async start(): Promise<HealthPayload> {
    this.stopped = false;
    const h = await this.check();
    this.schedulePeriodic();
    return h;
  }

  stop(): void {
    this.stopped = true;
    if (this.periodic) clearTimeout(this.periodic);
    if (this.retry) clearTimeout(this.retry);
    this.periodic = this.retry = null;
  }

  /** Measures disk space and pings the engine (overlapping calls share one check). */
  check(): Promise<HealthPayload> {
    this.checking ??= (async () => {
      try {
        await Promise.all([this.checkDisk(), this.engineProblem === null ? this.ping() : Promise.resolve()]);
        return this.publish();
      } finally {
        this.checking = null;
      }
    })();
    return this.checking;
  }

  /** An engine call failed as if the engine were gone: ping now to find out. */
  engineFailed(error: string): void {
    if (this.engineProblem !== null || this.stopped) return;
    this.log.warn({ err: error }, 'a Docker Engine call failed; checking whether the engine is reachable');
    void this.ping().then(() => this.publish());
  }

  /** A write failed with ENOSPC. `needBytes`: what it wanted, when known. */
  diskFull(message: string, needBytes: number | null): void {
    this.full = { message, needBytes, required: null };
    this.log.error({ err: message, need_bytes: needBytes }, 'disk full: taking no work until there is space again');
    this.publish();
    void this.check();
  }

  private schedulePeriodic(): void {
    if (this.stopped) return;
    this.periodic = setTimeout(() => {
      void this.check().finally(() => this.schedulePeriodic());
    }, this.opts.checkIntervalMs ?? 5_000);
    this.periodic.unref();
  }

  private async checkDisk(): Promise<void> {
    let s: DiskSpace;
    try {
      s = await this.space();
    } catch (err) {
      // Unknown free space does not stop work; the next ENOSPC would.
      this.log.warn({ work_dir: this.opts.workDir, err: coerceError(err).message }, 'cannot measure free space of the work dir');
      this.free = null;
      this.lowDisk = null;
      return;
    }
    this.free = s.free;
    const min = this.opts.minFreeBytes;
    this.lowDisk = s.free < min ? `only ${mib(s.free)} free in ${this.opts.workDir} (min_free_disk is ${mib(min)})` : null;
    if (this.full) {
      const need = this.full.needBytes ?? 0;
      const required = min + need <= s.total ? min + need : min;
      if (s.free >= required) {
        this.log.info({ free_bytes: s.free, required_bytes: required }, 'disk space is free again');
        this.full = null;
      } else {
        this.full.required = required;
      }
    }
  }

  /** One ping; on failure marks the engine down and keeps pinging with backoff. */
  private ping(): Promise<void> {
    const ping = this.opts.ping;
    if (!ping) return Promise.resolve();
    this.pinging ??= (async () => {
      const timeoutMs = this.opts.pingTimeoutMs ?? 10_000;
      try {
        await ping(AbortSignal.timeout(timeoutMs));
        if (this.engineProblem !== null) this.log.info('Docker Engine reachable again');
        this.engineProblem = null;
        this.backoff.reset();
      } catch (err) {
        const e = coerceError(err);
        const why = e.name === 'TimeoutError' || e.name === 'AbortError' ? `no answer to /_ping within ${timeoutMs} ms` : e.message;
        if (this.engineProblem === null) this.log.error({ err: why }, 'Docker Engine unreachable; taking no work until it answers');
        this.engineProblem = `Docker Engine unreachable: ${why}`;
        this.scheduleRetry();
      } finally {
        this.pinging = null;
      }
    })();
    return this.pinging;
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.ping().then(() => this.publish());
    }, this.backoff.next());
    this.retry.unref();
  }

  private publish(): HealthPayload {
    const full = this.full ? `disk full: ${this.full.message}${this.full.required !== null && this.free !== null ? ` (waiting for ${mib(this.full.required)} free in ${this.opts.workDir}, ${mib(this.free)} now)` : ''}` : null;
    const problems = [this.engineProblem, full, this.lowDisk].filter((p): p is string => p !== null);
    const next: HealthPayload = { accepting: problems.length === 0, problem: problems.length ? problems.join('; ').slice(0, 2000) : null };
    if (next.accepting !== this.last.accepting || next.problem !== this.last.problem) {
      this.last = next;
      for (const fn of this.listeners) {
        try {
          fn(next);
        } catch (err) {
          this.log.error({ err }, 'health listener failed');
        }
      }
    }
    return this.last;
  }
}
