/**
 * One webhook's delivery queue and its delivery log (in memory).
 *
 * Events wait in one FIFO, bounded by `queueLimit`: when full, the oldest waiting event
 * is dropped (counted; the caller logs it). Events of one build form a lane: a lane has at
 * most one delivery in flight (retries included), so a receiver gets each build's events in
 * order; up to `lanes` builds are delivered at once, so one build whose deliveries are
 * being retried does not hold up the others. Each delivery is tried up to `maxAttempts`
 * times (retry-policy.ts decides and waits); `close()` aborts what is in flight and in
 * backoff and drops what waits.
 *
 * The log keeps the last `logSize` attempts (newest first when read): time, event,
 * status or error, duration, attempt number, the first bytes of the response, outcome.
 */
import { Backoff, sleep as defaultSleep, type WebhookEventType } from '../../shared/index.js';
import { classify, retryDelay, type AttemptResult } from './retry-policy.js';

/** An event as queued for one hook: its delivery id and the exact body sent (and signed). */
export interface QueuedEvent {
  delivery: string;
  type: WebhookEventType;
  build: string;
  node: string | null;
  state: string;
  body: string;
}

/** One attempt's result as the sender reports it. */
export interface AttemptOutcome extends AttemptResult {
  durationMs: number;
  /** The first bytes of the response body (text), '' when none. */
  response: string;
}

export type DeliveryOutcome = 'delivered' | 'retrying' | 'failed';

/** One line of the delivery log. */
export interface DeliveryRecord {
  delivery: string;
  type: WebhookEventType;
  build: string;
  node: string | null;
  state: string;
  attempt: number;
  /** When the attempt started (ms). */
  at: number;
  status: number | null;
  error: string | null;
  durationMs: number;
  response: string;
  outcome: DeliveryOutcome;
}

export interface HookCounters {
  delivered: number;
  failed: number;
  dropped: number;
  /** Attempts that were followed by another. */
  retried: number;
}

export interface HookQueueOptions {
  queueLimit: number;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  logSize: number;
  /** Builds delivered at once. */
  lanes: number;
  /** Sends one attempt; never throws (errors are in the outcome). */
  send: (e: QueuedEvent, attempt: number, signal: AbortSignal) => Promise<AttemptOutcome>;
  /** A dropped event (queue full) and the hook's dropped count so far. */
  onDrop?: (e: QueuedEvent, dropped: number) => void;
  /** A delivery that ended without success (after its last attempt, or a status not retried). */
  onFail?: (e: QueuedEvent, last: DeliveryRecord) => void;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  now?: () => number;
  random?: () => number;
}

export class HookQueue {
  private readonly waiting: QueuedEvent[] = [];
  private readonly busy = new Set<string>();
  private readonly log: DeliveryRecord[] = [];
  private logAt = 0;
  private readonly abort = new AbortController();
  private readonly running = new Set<Promise<void>>();
  readonly counters: HookCounters = { delivered: 0, failed: 0, dropped: 0, retried: 0 };
  /** Last time an event was queued or an attempt ended (ms). */
  lastActive: number;

  constructor(private readonly o: HookQueueOptions) {
    this.lastActive = this.now();
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  get queued(): number {
    return this.waiting.length;
  }

  get inFlight(): number {
    return this.busy.size;
  }

  get closed(): boolean {
    return this.abort.signal.aborted;
  }

  /** Queues an event (dropping the oldest waiting one when full) and starts what can start. */
  push(e: QueuedEvent): void {
    if (this.closed) return;
    this.lastActive = this.now();
    if (this.waiting.length >= this.o.queueLimit) {
      const dropped = this.waiting.shift()!;
      this.counters.dropped++;
      this.o.onDrop?.(dropped, this.counters.dropped);
    }
    this.waiting.push(e);
    this.pump();
  }

  /** The delivery log, newest first. */
  deliveries(): DeliveryRecord[] {
    const n = this.log.length;
    const out: DeliveryRecord[] = [];
    for (let i = 1; i <= n; i++) out.push(this.log[(this.logAt - i + n) % n]!);
    return out;
  }

  /** The most recent log line, or null. */
  last(): DeliveryRecord | null {
    return this.log.length === 0 ? null : this.log[(this.logAt - 1 + this.log.length) % this.log.length]!;
  }

  /** Resolves once nothing waits or is in flight (tests). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  /** Stops: aborts attempts in flight and backoff waits, drops what waits. Returns how many events were not delivered. */
  async close(): Promise<number> {
    const left = this.waiting.length + this.busy.size;
    this.waiting.length = 0;
    this.abort.abort();
    await this.idle();
    return left;
  }

  private pump(): void {
    for (let i = 0; i < this.waiting.length && this.busy.size < this.o.lanes; ) {
      const e = this.waiting[i]!;
      if (this.busy.has(e.build)) {
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      this.busy.add(e.build);
      const run = this.deliver(e).finally(() => {
        this.busy.delete(e.build);
        this.running.delete(run);
        this.lastActive = this.now();
        if (!this.closed) this.pump();
      });
      this.running.add(run);
    }
  }

  private record(r: DeliveryRecord): void {
    if (this.o.logSize <= 0) return;
    if (this.log.length < this.o.logSize) this.log.push(r);
    else this.log[this.logAt] = r;
    this.logAt = (this.logAt + 1) % this.o.logSize;
  }

  private async deliver(e: QueuedEvent): Promise<void> {
    const backoff = new Backoff({ baseMs: this.o.backoffBaseMs, capMs: this.o.backoffCapMs, ...(this.o.random ? { random: this.o.random } : {}) });
    const signal = this.abort.signal;
    const sleep = this.o.sleep ?? defaultSleep;
    for (let attempt = 1; attempt <= this.o.maxAttempts && !signal.aborted; attempt++) {
      const at = this.now();
      const r = await this.o.send(e, attempt, signal);
      if (signal.aborted) return;
      const verdict = classify(r);
      const outcome: DeliveryOutcome = verdict === 'delivered' ? 'delivered' : verdict === 'retry' && attempt < this.o.maxAttempts ? 'retrying' : 'failed';
      const line: DeliveryRecord = { delivery: e.delivery, type: e.type, build: e.build, node: e.node, state: e.state, attempt, at, status: r.status, error: r.error, durationMs: r.durationMs, response: r.response, outcome };
      this.record(line);
      if (outcome === 'delivered') {
        this.counters.delivered++;
        return;
      }
      if (outcome === 'failed') {
        this.counters.failed++;
        this.o.onFail?.(e, line);
        return;
      }
      this.counters.retried++;
      await sleep(retryDelay(backoff, r, this.now()), signal);
    }
  }
}
