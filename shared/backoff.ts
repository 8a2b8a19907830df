/**
 * Capped exponential backoff with full jitter, for every reconnect and retry loop (agent
 * to coordinator, CLI log follow, Docker Engine). Full jitter spreads a fleet's
 * reconnects after a coordinator restart instead of having them arrive in waves.
 */
export interface BackoffOptions {
  /** First delay ceiling. @default 500 */
  baseMs?: number;
  /** Largest delay. @default 30000 */
  capMs?: number;
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? 500;
    this.capMs = opts.capMs ?? 30_000;
    this.random = opts.random ?? Math.random;
  }

  /** Delay before the next try: uniform in [base/2, min(cap, base * 2^n)]. */
  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    const floor = Math.min(this.baseMs / 2, ceiling);
    return Math.round(floor + this.random() * (ceiling - floor));
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** A value jittered by ±fraction, e.g. jitter(10_000, 0.1) is in [9000, 11000]. */
export function jitter(value: number, fraction: number, random: () => number = Math.random): number {
  return Math.round(value * (1 - fraction + 2 * fraction * random()));
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
