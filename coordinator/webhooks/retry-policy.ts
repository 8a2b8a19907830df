/**
 * When a webhook delivery is tried again (pure): a 2xx is delivered; network errors,
 * timeouts, 5xx and 429 are retried with capped exponential backoff and full jitter
 * (shared/backoff.ts), waiting at least what `Retry-After` asks (bounded); any other
 * status (3xx: redirects are not followed; 4xx) fails at once. Attempts are bounded by
 * the caller.
 */
import type { Backoff } from '../../shared/index.js';

/** The longest `Retry-After` honoured (a receiver asking for more gets this). */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/** What one attempt came to: a response status, or an error before one (connect, timeout, reset). */
export interface AttemptResult {
  status: number | null;
  error: string | null;
  /** The response's Retry-After header, as sent. */
  retryAfter: string | null;
  /** Not sent, and trying again would not change that (e.g. its secret is gone). */
  final?: boolean;
}

export type Verdict = 'delivered' | 'retry' | 'fail';

export function classify(r: AttemptResult): Verdict {
  if (r.final) return 'fail';
  if (r.status === null) return 'retry';
  if (r.status >= 200 && r.status < 300) return 'delivered';
  if (r.status === 429 || (r.status >= 500 && r.status < 600)) return 'retry';
  return 'fail';
}

/** `Retry-After` (delay-seconds or an HTTP-date) in ms from `now`, within [0, MAX_RETRY_AFTER_MS]; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (text === '' || text.length > 64) return null;
  let ms: number;
  if (/^\d+$/.test(text)) ms = Number(text) * 1000;
  else {
    // An HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT` and the two obsolete forms): a day name and a time.
    if (!/^[A-Za-z]{3}/.test(text) || !/\d{2}:\d{2}:\d{2}/.test(text)) return null;
    const at = Date.parse(text);
    if (Number.isNaN(at)) return null;
    ms = at - now;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

/** The wait before the next attempt: the backoff's next delay, or Retry-After when that is longer. */
export function retryDelay(backoff: Backoff, r: AttemptResult, now: number): number {
  const base = backoff.next();
  const asked = r.status === 429 || (r.status !== null && r.status >= 500) ? parseRetryAfter(r.retryAfter, now) : null;
  return asked !== null && asked > base ? asked : base;
}
