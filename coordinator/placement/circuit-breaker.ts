/**
 * A per-agent circuit breaker: an agent that keeps failing for infrastructure reasons
 * (Docker Engine down, disk full, lost assignments) stops getting work for a while, so
 * nodes go to healthy agents instead of burning their attempt budget on a broken host.
 *
 * States:
 * - `closed`: normal. `threshold` infrastructure failures within `windowMs` open it.
 * - `open`: no new work until `openMs` after it opened (attempts already running go on).
 * - `half_open`: the cool-down passed; exactly one trial attempt may start. The trial
 *   ending without an infrastructure failure closes the breaker; an infrastructure
 *   failure opens it again for another `openMs`.
 *
 * Time is always passed in (`now`, ms), never read from a clock here, so tests can drive
 * it with a fake one. `open` turns into `half_open` when `tick(now)` (or any method given a
 * `now`) sees the cool-down over; `view(now)` and `admits(now)` already answer as if it had.
 */
import { KilnError } from '../../shared/index.js';

export type BreakerState = 'closed' | 'open' | 'half_open';

export interface BreakerOptions {
  /** Infrastructure failures within `windowMs` that open the breaker. */
  threshold: number;
  windowMs: number;
  /** How long an open breaker keeps the agent from new work. */
  openMs: number;
}

export const DEFAULT_BREAKER_OPTIONS: Readonly<BreakerOptions> = Object.freeze({ threshold: 3, windowMs: 30_000, openMs: 30_000 });

export interface BreakerView {
  state: BreakerState;
  /** While open: when the trial becomes possible (ms). */
  until: number | null;
  /** Infrastructure failures inside the window. */
  recent_failures: number;
  /** The trial attempt in flight while half-open. */
  trial: string | null;
}

export function checkBreakerOptions(o: BreakerOptions): BreakerOptions {
  if (!Number.isInteger(o.threshold) || o.threshold < 1) throw new KilnError('E_CONFIG', `circuit breaker threshold must be an integer >= 1 (got ${o.threshold})`);
  if (!Number.isFinite(o.windowMs) || o.windowMs <= 0) throw new KilnError('E_CONFIG', `circuit breaker window must be > 0 ms (got ${o.windowMs})`);
  if (!Number.isFinite(o.openMs) || o.openMs < 0) throw new KilnError('E_CONFIG', `circuit breaker open time must be >= 0 ms (got ${o.openMs})`);
  return o;
}

export class CircuitBreaker {
  private st: BreakerState = 'closed';
  /** Times of recent infrastructure failures (pruned to the window). */
  private failures: number[] = [];
  private openUntil: number | null = null;
  private trialId: string | null = null;
  private readonly opts: BreakerOptions;

  constructor(opts: BreakerOptions = DEFAULT_BREAKER_OPTIONS) {
    this.opts = checkBreakerOptions({ ...opts });
  }

  /** The state as of the last event or tick (see `stateAt` for the time-aware answer). */
  get state(): BreakerState {
    return this.st;
  }

  /** The trial attempt in flight while half-open, else null. */
  get trial(): string | null {
    return this.trialId;
  }

  /** The state at `now`: an open breaker whose cool-down is over counts as half-open. */
  stateAt(now: number): BreakerState {
    return this.st === 'open' && this.openUntil !== null && now >= this.openUntil ? 'half_open' : this.st;
  }

  /** How many new attempts may start at `now`: unlimited when closed, 1 for the trial, else 0. */
  admits(now: number): number {
    const s = this.stateAt(now);
    if (s === 'closed') return Infinity;
    return s === 'half_open' && this.trialId === null ? 1 : 0;
  }

  /** open -> half_open once the cool-down is over; true when that happened now. */
  tick(now: number): boolean {
    if (this.st !== 'open' || this.openUntil === null || now < this.openUntil) return false;
    this.st = 'half_open';
    this.openUntil = null;
    this.trialId = null;
    return true;
  }

  /** Counts an infrastructure failure; true when it (re)opened the breaker. */
  recordFailure(now: number): boolean {
    this.tick(now);
    this.prune(now);
    this.failures.push(now);
    if (this.st === 'open') return false;
    if (this.st === 'half_open' || this.failures.length >= this.opts.threshold) {
      this.st = 'open';
      this.openUntil = now + this.opts.openMs;
      this.trialId = null;
      return true;
    }
    return false;
  }

  /**
   * An attempt ended without an infrastructure failure. While half-open that closes the
   * breaker, unless `attemptId` is given and is not the trial (an attempt that started
   * before the breaker opened proves less). true when it closed.
   */
  recordSuccess(now: number, attemptId?: string): boolean {
    this.tick(now);
    if (this.st !== 'half_open') return false;
    if (attemptId !== undefined && this.trialId !== null && attemptId !== this.trialId) return false;
    this.st = 'closed';
    this.failures = [];
    this.trialId = null;
    this.openUntil = null;
    return true;
  }

  /** An attempt took a slot on the agent: while half-open without a trial, it is the trial. */
  onHold(attemptId: string, now: number): void {
    this.tick(now);
    if (this.st === 'half_open' && this.trialId === null) this.trialId = attemptId;
  }

  /**
   * An attempt gave its slot back. If it was the trial and no verdict came (neither
   * `recordSuccess` nor `recordFailure`), another trial may start.
   */
  onRelease(attemptId: string): void {
    if (this.trialId === attemptId) this.trialId = null;
  }

  view(now: number): BreakerView {
    const state = this.stateAt(now);
    const from = now - this.opts.windowMs;
    let recent = 0;
    for (const t of this.failures) if (t > from) recent++;
    return { state, until: state === 'open' ? this.openUntil : null, recent_failures: recent, trial: state === 'half_open' ? this.trialId : null };
  }

  private prune(now: number): void {
    const from = now - this.opts.windowMs;
    let i = 0;
    while (i < this.failures.length && this.failures[i]! <= from) i++;
    if (i > 0) this.failures.splice(0, i);
  }
}
