/**
 * One webhook's queue (coordinator/webhooks/hook-queue.ts) with a scripted sender and
 * sleep: each build's events go out in order, one at a time, several builds at once up to
 * the lane limit; 5xx, 429 and network errors are tried again up to the attempt limit
 * (waiting the backoff or Retry-After), other statuses never; a full queue drops its
 * oldest event, counted; the delivery log keeps the last N attempts, newest first; close()
 * stops everything.
 */
import { describe, expect, it } from 'vitest';
import { HookQueue, type AttemptOutcome, type HookQueueOptions, type QueuedEvent } from '../../coordinator/webhooks/hook-queue.js';

function ev(build: string, n: number): QueuedEvent {
  return { delivery: `d-${build}-${n}`, type: 'node', build, node: `n${n}`, state: 'running', body: `{"n":${n}}` };
}

const ok = (status = 200, response = 'ok'): AttemptOutcome => ({ status, error: null, retryAfter: null, durationMs: 3, response });
const down = (): AttemptOutcome => ({ status: null, error: 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9', retryAfter: null, durationMs: 1, response: '' });

interface Deferred {
  e: QueuedEvent;
  attempt: number;
  resolve: (o: AttemptOutcome) => void;
}

/** A queue whose sender parks each attempt until the test answers it; sleeps are recorded and return at once. */
function harness(o: Partial<HookQueueOptions> = {}) {
  const pending: Deferred[] = [];
  const sleeps: number[] = [];
  const dropped: string[] = [];
  const q = new HookQueue({
    queueLimit: 100,
    maxAttempts: 6,
    backoffBaseMs: 100,
    backoffCapMs: 10_000,
    logSize: 50,
    lanes: 4,
    random: () => 1,
    send: (e, attempt) => new Promise((resolve) => pending.push({ e, attempt, resolve })),
    sleep: (ms) => {
      sleeps.push(ms);
      return Promise.resolve();
    },
    onDrop: (e) => dropped.push(e.delivery),
    ...o,
  });
  /** Waits until `n` attempts are parked (the queue moves on microtasks). */
  const parked = async (n: number) => {
    for (let i = 0; i < 100 && pending.length < n; i++) await new Promise((r) => setImmediate(r));
    expect(pending.length).toBeGreaterThanOrEqual(n);
  };
  const answer = async (o2: AttemptOutcome) => {
    await parked(1);
    const d = pending.shift()!;
    d.resolve(o2);
    return d;
  };
  return { q, pending, sleeps, dropped, parked, answer };
}

describe('webhook hook queue', () => {
  it("delivers one build's events in order, one at a time", async () => {
    const h = harness();
    for (let i = 1; i <= 4; i++) h.q.push(ev('b1', i));
    const order: string[] = [];
    for (let i = 1; i <= 4; i++) {
      await h.parked(1);
      expect(h.pending).toHaveLength(1); // never two of one build in flight
      order.push((await h.answer(ok())).e.delivery);
    }
    await h.q.idle();
    expect(order).toEqual(['d-b1-1', 'd-b1-2', 'd-b1-3', 'd-b1-4']);
    expect(h.q.counters).toEqual({ delivered: 4, failed: 0, dropped: 0, retried: 0 });
  });

  it('delivers up to `lanes` builds at once; a build being retried holds only its own lane', async () => {
    const h = harness({ lanes: 2 });
    h.q.push(ev('b1', 1));
    h.q.push(ev('b1', 2));
    h.q.push(ev('b2', 1));
    h.q.push(ev('b3', 1));
    await h.parked(2);
    expect(h.pending.map((p) => p.e.delivery)).toEqual(['d-b1-1', 'd-b2-1']);
    expect(h.q.inFlight).toBe(2);
    expect(h.q.queued).toBe(2);
    // b2 is answered: b3 starts (b1's second event waits for its first).
    h.pending.splice(1, 1)[0]!.resolve(ok());
    await h.parked(2);
    expect(h.pending.map((p) => p.e.delivery)).toEqual(['d-b1-1', 'd-b3-1']);
    // b1's first attempt fails with a 503: its retry comes before b1's second event.
    h.pending.shift()!.resolve(ok(503));
    await h.parked(2);
    expect(h.pending.map((p) => [p.e.delivery, p.attempt])).toEqual([
      ['d-b3-1', 1],
      ['d-b1-1', 2],
    ]);
    for (const p of h.pending.splice(0)) p.resolve(ok());
    await h.answer(ok());
    await h.q.idle();
    expect(h.q.counters).toEqual({ delivered: 4, failed: 0, dropped: 0, retried: 1 });
  });

  it('retries 500 twice then succeeds, logging every attempt', async () => {
    const h = harness();
    h.q.push(ev('b1', 1));
    await h.answer(ok(500, 'boom 1'));
    await h.answer(ok(500, 'boom 2'));
    await h.answer(ok(200, 'thanks'));
    await h.q.idle();
    const log = h.q.deliveries();
    expect(log.map((l) => [l.attempt, l.status, l.outcome, l.response])).toEqual([
      [3, 200, 'delivered', 'thanks'],
      [2, 500, 'retrying', 'boom 2'],
      [1, 500, 'retrying', 'boom 1'],
    ]);
    expect(new Set(log.map((l) => l.delivery))).toEqual(new Set(['d-b1-1'])); // one delivery id for every attempt
    expect(h.sleeps).toEqual([100, 200]); // exponential backoff (random = 1: the ceiling)
    expect(h.q.counters).toMatchObject({ delivered: 1, retried: 2, failed: 0 });
  });

  it('never retries a 4xx other than 429, nor a redirect', async () => {
    for (const status of [400, 404, 410, 302]) {
      const h = harness();
      h.q.push(ev('b1', 1));
      await h.answer(ok(status, 'no'));
      await h.q.idle();
      expect(h.q.deliveries().map((l) => [l.attempt, l.status, l.outcome])).toEqual([[1, status, 'failed']]);
      expect(h.q.counters).toMatchObject({ delivered: 0, failed: 1, retried: 0 });
      expect(h.sleeps).toEqual([]);
    }
  });

  it('honours Retry-After on 429 and retries network errors, up to the attempt limit', async () => {
    const h = harness({ maxAttempts: 3 });
    h.q.push(ev('b1', 1));
    await h.answer({ ...ok(429), retryAfter: '2' });
    await h.answer(down());
    await h.answer(down());
    await h.q.idle();
    expect(h.sleeps).toEqual([2000, 200]);
    expect(h.q.deliveries().map((l) => [l.attempt, l.status, l.error !== null, l.outcome])).toEqual([
      [3, null, true, 'failed'],
      [2, null, true, 'retrying'],
      [1, 429, false, 'retrying'],
    ]);
    expect(h.q.counters).toMatchObject({ delivered: 0, failed: 1, retried: 2 });
  });

  it('drops the oldest waiting event when the queue is full, and counts it', async () => {
    const h = harness({ queueLimit: 3, lanes: 1 });
    for (let i = 1; i <= 6; i++) h.q.push(ev('b1', i));
    // 1 is in flight; 2..6 were queued into 3 places: 2, 3 dropped.
    expect(h.q.queued).toBe(3);
    expect(h.dropped).toEqual(['d-b1-2', 'd-b1-3']);
    expect(h.q.counters.dropped).toBe(2);
    const sent: string[] = [];
    for (let i = 0; i < 4; i++) sent.push((await h.answer(ok())).e.delivery);
    await h.q.idle();
    expect(sent).toEqual(['d-b1-1', 'd-b1-4', 'd-b1-5', 'd-b1-6']);
  });

  it('keeps the last logSize attempts, newest first', async () => {
    const h = harness({ logSize: 3, send: (e) => Promise.resolve(ok(200, e.delivery)) });
    for (let i = 1; i <= 5; i++) h.q.push(ev('b1', i));
    await h.q.idle();
    expect(h.q.deliveries().map((l) => l.response)).toEqual(['d-b1-5', 'd-b1-4', 'd-b1-3']);
    expect(h.q.last()?.response).toBe('d-b1-5');
  });

  it('close() aborts what is in flight and drops what waits', async () => {
    let aborted = false;
    const q = new HookQueue({
      queueLimit: 10,
      maxAttempts: 3,
      backoffBaseMs: 100,
      backoffCapMs: 1000,
      logSize: 10,
      lanes: 1,
      send: (_e, _a, signal) =>
        new Promise((resolve) =>
          signal.addEventListener('abort', () => {
            aborted = true;
            resolve(down());
          }),
        ),
    });
    q.push(ev('b1', 1));
    q.push(ev('b1', 2));
    await new Promise((r) => setImmediate(r));
    expect(await q.close()).toBe(2);
    expect(aborted).toBe(true);
    expect(q.deliveries()).toEqual([]); // an aborted attempt is not logged as a failure
    q.push(ev('b1', 3));
    expect(q.queued).toBe(0);
  });
});
