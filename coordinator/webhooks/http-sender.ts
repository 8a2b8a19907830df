/**
 * One webhook attempt over HTTP: POST the body with its headers, a time limit covering
 * the whole exchange, redirects not followed (a 3xx is the answer), and at most
 * RESPONSE_EXCERPT bytes of the response read (for the delivery log) before the rest is
 * discarded. Never throws: a network error or timeout is the outcome's `error`.
 */
import { coerceError } from '../../shared/index.js';
import type { AttemptOutcome } from './hook-queue.js';

/** Bytes of a response kept in the delivery log. */
export const RESPONSE_EXCERPT = 256;

export interface HttpAttempt {
  url: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
  signal: AbortSignal;
}

/** The cause of a fetch failure, in a few words (`ECONNREFUSED`, `timed out after 10000 ms`). */
function describe(err: unknown, timedOut: boolean, timeoutMs: number): string {
  if (timedOut) return `timed out after ${timeoutMs} ms`;
  const e = coerceError(err);
  const cause = (e as { cause?: unknown }).cause;
  const c = cause instanceof Error ? cause : null;
  const code = (c as { code?: unknown } | null)?.code;
  const text = c ? `${typeof code === 'string' ? `${code}: ` : ''}${c.message}` : e.message;
  return text.slice(0, 300);
}

async function excerpt(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < RESPONSE_EXCERPT) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks).subarray(0, RESPONSE_EXCERPT).toString('utf8');
}

export async function sendHttp(a: HttpAttempt): Promise<AttemptOutcome> {
  const started = performance.now();
  // One controller per attempt, tied to the hook's signal by a listener removed afterwards:
  // AbortSignal.any would add every attempt to the long-lived signal's dependants for good
  // (Node 20 keeps them: ~100 B per attempt that never goes).
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort(new Error(`timed out after ${a.timeoutMs} ms`));
  }, a.timeoutMs);
  const onAbort = () => ac.abort(a.signal.reason);
  if (a.signal.aborted) onAbort();
  else a.signal.addEventListener('abort', onAbort, { once: true });
  const signal = ac.signal;
  const took = () => Math.round(performance.now() - started);
  try {
    const res = await fetch(a.url, { method: 'POST', headers: a.headers, body: a.body, redirect: 'manual', signal });
    let response = '';
    try {
      response = await excerpt(res);
    } catch {
      /* the status is what counts; a body cut short stays '' */
    }
    return { status: res.status, error: null, retryAfter: res.headers.get('retry-after'), durationMs: took(), response };
  } catch (err) {
    return { status: null, error: describe(err, timedOut, a.timeoutMs), retryAfter: null, durationMs: took(), response: '' };
  } finally {
    clearTimeout(timer);
    a.signal.removeEventListener('abort', onAbort);
  }
}
