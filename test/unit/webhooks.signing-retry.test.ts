/**
 * Webhooks, the pure parts of a delivery: the body's signature (HMAC-SHA256, hex, checked
 * in constant time), which answers are retried (network errors, 5xx, 429; never another
 * 4xx or a redirect), Retry-After (seconds or a date, bounded) and the backoff it stretches.
 */
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Backoff } from '../../shared/index.js';
import { MAX_RETRY_AFTER_MS, classify, parseRetryAfter, retryDelay } from '../../coordinator/webhooks/retry-policy.js';
import { signBody, verifySignature } from '../../coordinator/webhooks/signature.js';

describe('webhook signature', () => {
  const body = '{"id":"d-1","type":"build","at":"2026-12-05T08:00:00.000Z","data":{"id":"b-1"}}';

  it('is sha256=<hex HMAC-SHA256 of the raw body> with the secret', () => {
    const expected = createHmac('sha256', 'hook-secret').update(body).digest('hex');
    expect(signBody(body, 'hook-secret')).toBe(`sha256=${expected}`);
    expect(signBody(Buffer.from(body), Buffer.from('hook-secret'))).toBe(`sha256=${expected}`);
  });

  it('verifies only the exact body with the same secret', () => {
    const header = signBody(body, 's3cret');
    expect(verifySignature(body, 's3cret', header)).toBe(true);
    expect(verifySignature(body + ' ', 's3cret', header)).toBe(false);
    expect(verifySignature(body, 'other', header)).toBe(false);
    expect(verifySignature(body, 's3cret', header.toUpperCase())).toBe(false);
    expect(verifySignature(body, 's3cret', header.slice(0, -1))).toBe(false);
    expect(verifySignature(body, 's3cret', header.replace('sha256=', 'sha1='))).toBe(false);
    expect(verifySignature(body, 's3cret', null)).toBe(false);
    expect(verifySignature(body, 's3cret', '')).toBe(false);
  });
});

describe('webhook retry policy', () => {
  const r = (status: number | null, retryAfter: string | null = null) => ({ status, error: status === null ? 'ECONNREFUSED' : null, retryAfter });

  it('delivers on 2xx, retries network errors, 5xx and 429, fails other statuses at once', () => {
    for (const s of [200, 201, 202, 204, 299]) expect(classify(r(s)), String(s)).toBe('delivered');
    for (const s of [null, 429, 500, 502, 503, 504, 599]) expect(classify(r(s)), String(s)).toBe('retry');
    for (const s of [301, 302, 307, 308, 400, 401, 403, 404, 408, 410, 413, 422, 100]) expect(classify(r(s)), String(s)).toBe('fail');
    expect(classify({ ...r(null), final: true })).toBe('fail');
  });

  it('reads Retry-After as seconds or an HTTP date, bounded', () => {
    const now = Date.parse('2026-12-05T08:00:00Z');
    expect(parseRetryAfter('7', now)).toBe(7000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Sat, 05 Dec 2026 08:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sat, 05 Dec 2026 07:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('999999999', now)).toBe(MAX_RETRY_AFTER_MS);
    for (const bad of [null, '', 'soon', '-5', '1.5', 'x'.repeat(100)]) expect(parseRetryAfter(bad, now), String(bad)).toBeNull();
  });

  it('backs off exponentially with jitter, and waits longer when Retry-After asks', () => {
    const lows = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0 });
    const highs = new Backoff({ baseMs: 100, capMs: 1000, random: () => 1 });
    const low = [1, 2, 3, 4, 5].map(() => retryDelay(lows, r(503), 0));
    const high = [1, 2, 3, 4, 5].map(() => retryDelay(highs, r(503), 0));
    expect(low).toEqual([50, 50, 50, 50, 50]);
    expect(high).toEqual([100, 200, 400, 800, 1000]);
    const b = new Backoff({ baseMs: 100, capMs: 1000, random: () => 1 });
    expect(retryDelay(b, r(429, '3'), 0)).toBe(3000);
    expect(retryDelay(b, r(503, '0'), 0)).toBe(200); // the backoff when Retry-After is shorter
    expect(retryDelay(b, r(null, '9'), 0)).toBe(400); // no response: no Retry-After
  });
});
