/**
 * Token-bucket rate limits for the HTTP API: one bucket per API key and one per source
 * address (config `rate_limit.per_key`, `rate_limit.per_address`, written `N/s burst M`
 * or `off`). A bucket holds at most `burst` tokens and refills at `perSecond`; a request
 * takes one, and an empty bucket answers how long until the next token (the 429's
 * `Retry-After`, in whole seconds).
 *
 * Buckets live in a bounded Map: one idle long enough to be full again is the same as
 * none, so it is dropped first; past `maxBuckets` the least recently used goes.
 */
import { configError } from '../../shared/index.js';

export interface RateSpec {
  readonly perSecond: number;
  readonly burst: number;
}

const RATE_RE = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(s|m|min|h)\s*(?:burst\s+(\d+))?\s*$/i;

/** `50/s burst 200`, `600/m`, `off` (null: no limit). Burst defaults to the per-second rate, at least 1. Throws E_CONFIG naming `setting`. */
export function parseRateSpec(setting: string, text: string): RateSpec | null {
  if (/^\s*off\s*$/i.test(text)) return null;
  const m = RATE_RE.exec(text);
  if (!m) throw configError(setting, `'${text.slice(0, 80)}' is not a rate (write N/s, N/m or N/h, optionally 'burst M', or off)`);
  const per = m[2]!.toLowerCase();
  const perSecond = Number(m[1]) / (per === 's' ? 1 : per === 'h' ? 3600 : 60);
  const burst = m[3] !== undefined ? Number(m[3]) : Math.max(1, Math.ceil(perSecond));
  if (!(perSecond > 0) || perSecond > 1_000_000) throw configError(setting, `rate '${text}' must be above 0 and at most 1000000/s`);
  if (!Number.isSafeInteger(burst) || burst < 1 || burst > 1_000_000) throw configError(setting, `burst of '${text}' must be an integer in 1..1000000`);
  return { perSecond, burst };
}

interface Bucket {
  tokens: number;
  at: number;
}

export type TakeResult = { ok: true } | { ok: false; retryAfterS: number };

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    readonly spec: RateSpec,
    private readonly opts: { clock?: () => number; maxBuckets?: number } = {},
  ) {}

  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token from `key`'s bucket. */
  take(key: string): TakeResult {
    const now = (this.opts.clock ?? Date.now)();
    const { perSecond, burst } = this.spec;
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-inserted below: the Map's order is least recently used first
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond);
      b.at = now;
    } else {
      this.makeRoom(now);
      b = { tokens: burst, at: now };
    }
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - b.tokens) / perSecond)) };
  }

  private makeRoom(now: number): void {
    const max = this.opts.maxBuckets ?? 10_000;
    if (this.buckets.size < max) return;
    const fullAfterMs = (this.spec.burst / this.spec.perSecond) * 1000;
    for (const [k, b] of this.buckets) {
      if (now - b.at >= fullAfterMs) this.buckets.delete(k);
    }
    while (this.buckets.size >= max) this.buckets.delete(this.buckets.keys().next().value!);
  }
}
