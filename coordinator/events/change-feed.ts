/**
 * The change feed behind `GET /api/v1/events`: state changes (builds, nodes, agents, and
 * the pools every `poolsEveryMs`) turned into Server-Sent Events, kept in a bounded ring
 * for resuming, and delivered to each subscriber through a bounded queue.
 *
 * - **Nothing without subscribers.** The feed watches its source (the Engine's `node` and
 *   `build` events, the agent registry's changes: event-source.ts) only while someone
 *   subscribes, and for `lingerMs` after the last one left (so a reconnect resumes without
 *   a gap). Detached, a change costs the engine an `emit` with no listener, as before.
 * - **Coalescing.** Changes of one entity (`key`) within `windowMs` become one event with
 *   the state at the end of the window (latest wins): a node going ready, assigned,
 *   running in one window is one `node` event. A window's `build` events come first (a
 *   client hears of a new build before its nodes), the rest in the order they changed.
 * - **Durable first.** A window's payloads are rendered when it closes, then the feed
 *   waits for `durable()` (the state store's commit: every change made before the call is
 *   on disk) before it publishes them, so a client never sees a state a crash would undo.
 *   Windows are published in order.
 * - **Ids and resume.** Each published event gets `id: <epoch>-<seq>`. The ring keeps the
 *   last `ringSize`; a subscriber with `Last-Event-ID` gets every later event of its
 *   topics from the ring, or `reset` when the id is not resumable (another epoch, older
 *   than the ring, from before the feed last attached, malformed, or in the future).
 * - **Slow subscribers.** Each subscriber's queue (bytes not yet taken by its connection)
 *   is bounded by `maxQueueBytes`; over it the queue is dropped, the subscriber gets
 *   `reset` and is closed.
 */
import type { Logger } from 'pino';
import { coerceError, systemTimers, type Timer, type Timers } from '../../shared/index.js';

/** The events of the stream that carry a state (reset is per subscriber). */
export type FeedEventType = 'build' | 'node' | 'agent' | 'pools';

/** One change notice: the entity (`key`), its event type, its build (build and node events) and how to render its state now. */
export interface Change {
  readonly key: string;
  readonly type: 'build' | 'node' | 'agent';
  readonly build: string | null;
  /** The event's data now, or null when there is nothing to send (the entity is gone). */
  render(): unknown;
}

/** Where the changes come from (event-source.ts adapts the Engine and the agent registry). */
export interface FeedSource {
  /** Starts calling `notify` for every change; returns the function that stops it. */
  watch(notify: (c: Change) => void): () => void;
  /** The pools view now. */
  pools(): unknown;
  /** Resolves once every change made before the call is durable. */
  durable(): Promise<void>;
}

export interface FeedOptions {
  /** Changes of one entity within this window are one event (default 50 ms). */
  windowMs?: number;
  /** Events kept for resuming (default 4096). */
  ringSize?: number;
  /** Bytes a subscriber may have waiting before it gets `reset` and is closed (default 4 MiB). */
  maxQueueBytes?: number;
  /** The pools are recomputed this often while attached, and sent when they changed (default 2 s). */
  poolsEveryMs?: number;
  /** How long the feed keeps watching after the last subscriber left (default 30 s). */
  lingerMs?: number;
  /** The `<epoch>` of the ids (default: now, the process's start). */
  epoch?: number;
  timers?: Timers;
  logger?: Pick<Logger, 'warn'>;
}

/** What a subscriber wants: event types, and one build's `build`/`node` events only. */
export interface SubscriberFilter {
  readonly types: ReadonlySet<FeedEventType>;
  readonly build: string | null;
}

/** The connection a subscriber writes to: `write` resolves once the text was taken (backpressure). */
export interface SubscriberSink {
  write(text: string): Promise<void>;
  /** Ends the stream (after what was written). */
  close(): void;
}

export interface Subscription {
  /** The subscriber left (its connection closed): stop delivering. */
  close(): void;
}

interface RingEvent {
  readonly seq: number;
  readonly type: FeedEventType;
  readonly build: string | null;
  readonly text: string;
}

/** A rendered event waiting for its window's durability. */
interface Rendered {
  readonly type: FeedEventType;
  readonly build: string | null;
  readonly data: string;
}

export const FEED_DEFAULTS = {
  windowMs: 50,
  ringSize: 4096,
  maxQueueBytes: 4 * 1024 * 1024,
  poolsEveryMs: 2000,
  lingerMs: 30_000,
} as const;

function sseText(type: string, id: string, data: string): string {
  return `event: ${type}\ndata: ${data}\nid: ${id}\n\n`;
}

class Subscriber {
  private queue: string[] = [];
  private bytes = 0;
  private writing = false;
  closed = false;

  constructor(
    readonly filter: SubscriberFilter,
    private readonly sink: SubscriberSink,
    private readonly maxBytes: number,
    private readonly onOverflow: (s: Subscriber) => void,
  ) {}

  wants(type: FeedEventType, build: string | null): boolean {
    if (!this.filter.types.has(type)) return false;
    return this.filter.build === null || type === 'agent' || type === 'pools' || build === this.filter.build;
  }

  push(text: string): void {
    if (this.closed) return;
    this.queue.push(text);
    this.bytes += text.length;
    if (this.bytes > this.maxBytes) {
      this.onOverflow(this);
      return;
    }
    if (!this.writing) void this.pump();
  }

  /** Drops what waits, writes `last` and closes. */
  end(last: string): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.bytes = 0;
    // The stream ends after what it was handed; the route cuts off a connection that never takes it.
    void this.sink.write(last);
    this.sink.close();
  }

  /** The feed stops: close the connection now. */
  shutdown(): void {
    this.drop();
    this.sink.close();
  }

  /** The connection went away. */
  drop(): void {
    this.closed = true;
    this.queue = [];
    this.bytes = 0;
  }

  private async pump(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const chunk = this.queue.length === 1 ? this.queue[0]! : this.queue.join('');
        this.queue = [];
        await this.sink.write(chunk);
        this.bytes -= chunk.length;
      }
    } finally {
      this.writing = false;
    }
  }
}

export class ChangeFeed {
  readonly epoch: number;
  private readonly o: Required<Omit<FeedOptions, 'epoch' | 'timers' | 'logger'>>;
  private readonly timers: Timers;
  private readonly logger: Pick<Logger, 'warn'> | null;
  private readonly subscribers = new Set<Subscriber>();
  private readonly ring: Array<RingEvent | undefined>;
  private ringStart = 0;
  private ringLength = 0;
  private seq = 0;
  /** The oldest id a client may resume from (see the header). */
  private floor = 0;
  private stopWatching: (() => void) | null = null;
  private pending = new Map<string, Change>();
  private windowTimer: Timer | null = null;
  private poolsTimer: Timer | null = null;
  private lingerTimer: Timer | null = null;
  private lastPools: string | null = null;
  private publishing: Promise<void> = Promise.resolve();
  /** Bumped on detach: windows rendered before it are not published. */
  private generation = 0;
  /** Events published and messages handed to subscribers since start (the benchmark's figures). */
  readonly stats = { published: 0, delivered: 0, overflows: 0 };

  constructor(
    private readonly source: FeedSource,
    opts: FeedOptions = {},
  ) {
    this.o = {
      windowMs: opts.windowMs ?? FEED_DEFAULTS.windowMs,
      ringSize: opts.ringSize ?? FEED_DEFAULTS.ringSize,
      maxQueueBytes: opts.maxQueueBytes ?? FEED_DEFAULTS.maxQueueBytes,
      poolsEveryMs: opts.poolsEveryMs ?? FEED_DEFAULTS.poolsEveryMs,
      lingerMs: opts.lingerMs ?? FEED_DEFAULTS.lingerMs,
    };
    this.epoch = opts.epoch ?? Date.now();
    this.timers = opts.timers ?? systemTimers;
    this.logger = opts.logger ?? null;
    this.ring = new Array<RingEvent | undefined>(this.o.ringSize);
  }

  /** true while the feed watches its source. */
  get attached(): boolean {
    return this.stopWatching !== null;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** The id of the latest event (what a client that has seen everything holds). */
  get lastId(): string {
    return `${this.epoch}-${this.seq}`;
  }

  /**
   * Adds a subscriber. `lastEventId` (the header as sent, or undefined) resumes after that
   * event from the ring, or starts with `reset` when it cannot.
   */
  subscribe(filter: SubscriberFilter, sink: SubscriberSink, lastEventId?: string): Subscription {
    this.attach();
    const sub = new Subscriber(filter, sink, this.o.maxQueueBytes, (s) => this.overflow(s));
    if (lastEventId !== undefined) {
      const why = this.unresumable(lastEventId);
      if (why !== null) sub.push(this.resetText(why));
      else this.replay(sub, Number(lastEventId.slice(lastEventId.indexOf('-') + 1)));
    }
    if (!sub.closed) this.subscribers.add(sub);
    return { close: () => this.leave(sub) };
  }

  /** Stops everything (coordinator shutdown): subscribers are closed. */
  stop(): void {
    for (const s of [...this.subscribers]) {
      this.subscribers.delete(s);
      s.shutdown();
    }
    this.detach();
  }

  // ------------------------------------------------------------ source side

  private attach(): void {
    this.lingerTimer?.clear();
    this.lingerTimer = null;
    if (this.stopWatching) return;
    // Changes made while detached were not seen: no id issued before now resumes.
    this.seq += 1;
    this.floor = this.seq;
    this.ringStart = 0;
    this.ringLength = 0;
    this.ring.fill(undefined);
    this.stopWatching = this.source.watch((c) => this.notice(c));
    this.lastPools = this.poolsText();
    this.schedulePools();
  }

  private detach(): void {
    this.stopWatching?.();
    this.stopWatching = null;
    this.windowTimer?.clear();
    this.windowTimer = null;
    this.poolsTimer?.clear();
    this.poolsTimer = null;
    this.lingerTimer?.clear();
    this.lingerTimer = null;
    this.pending = new Map();
    this.generation += 1;
    this.ring.fill(undefined);
    this.ringLength = 0;
  }

  private leave(sub: Subscriber): void {
    sub.drop();
    if (this.subscribers.delete(sub)) this.lingerIfAlone();
  }

  /** The last subscriber left: keep watching `lingerMs` (a reconnect resumes without a gap), then detach. */
  private lingerIfAlone(): void {
    if (this.subscribers.size > 0 || !this.stopWatching) return;
    if (this.o.lingerMs <= 0) return this.detach();
    this.lingerTimer?.clear();
    this.lingerTimer = this.timers.after(
      this.o.lingerMs,
      () => {
        this.lingerTimer = null;
        if (this.subscribers.size === 0) this.detach();
      },
      { unref: true },
    );
  }

  private notice(c: Change): void {
    const p = this.pending;
    p.delete(c.key);
    p.set(c.key, c);
    if (this.windowTimer === null) this.windowTimer = this.timers.after(this.o.windowMs, () => this.closeWindow(), { unref: true });
  }

  /** The window closed: render its changes now, publish them once durable (in window order). */
  private closeWindow(): void {
    this.windowTimer = null;
    const changes = this.pending;
    this.pending = new Map();
    // A window's build events go first: a client hears of a new build before its nodes.
    const rendered: Rendered[] = [];
    const ordered = [...changes.values()].sort((x, y) => (x.type === 'build' ? 0 : 1) - (y.type === 'build' ? 0 : 1));
    for (const c of ordered) {
      let data: unknown;
      try {
        data = c.render();
      } catch (err) {
        this.logger?.warn({ err: coerceError(err), key: c.key }, 'events: rendering a change failed');
        continue;
      }
      if (data !== null && data !== undefined) rendered.push({ type: c.type, build: c.build, data: JSON.stringify(data) });
    }
    if (rendered.length === 0) return;
    const generation = this.generation;
    const durable = this.source.durable();
    this.publishing = this.publishing
      .then(() => durable)
      .then(
        () => {
          if (generation === this.generation) this.publish(rendered);
        },
        (err: unknown) => this.logger?.warn({ err: coerceError(err) }, 'events: the state is not durable; changes not sent'),
      );
  }

  private schedulePools(): void {
    this.poolsTimer = this.timers.after(
      this.o.poolsEveryMs,
      () => {
        this.poolsTimer = null;
        if (!this.stopWatching) return;
        const text = this.poolsText();
        if (text !== null && text !== this.lastPools) {
          this.lastPools = text;
          const generation = this.generation;
          this.publishing = this.publishing.then(() => {
            if (generation === this.generation) this.publish([{ type: 'pools', build: null, data: text }]);
          });
        }
        this.schedulePools();
      },
      { unref: true },
    );
  }

  private poolsText(): string | null {
    try {
      return JSON.stringify(this.source.pools());
    } catch (err) {
      this.logger?.warn({ err: coerceError(err) }, 'events: computing the pools failed');
      return null;
    }
  }

  // ------------------------------------------------------------ ring and delivery

  private publish(events: readonly Rendered[]): void {
    for (const e of events) {
      const seq = ++this.seq;
      const text = sseText(e.type, `${this.epoch}-${seq}`, e.data);
      this.remember({ seq, type: e.type, build: e.build, text });
      this.stats.published++;
      for (const s of this.subscribers) {
        if (!s.wants(e.type, e.build)) continue;
        s.push(text);
        this.stats.delivered++;
      }
    }
  }

  private remember(e: RingEvent): void {
    const size = this.o.ringSize;
    if (size === 0) {
      this.floor = e.seq;
      return;
    }
    if (this.ringLength === size) {
      const oldest = this.ring[this.ringStart]!;
      this.floor = Math.max(this.floor, oldest.seq);
      this.ring[this.ringStart] = e;
      this.ringStart = (this.ringStart + 1) % size;
    } else {
      this.ring[(this.ringStart + this.ringLength) % size] = e;
      this.ringLength++;
    }
  }

  /** Why a client holding `id` cannot resume from the ring, or null when it can. */
  private unresumable(id: string): string | null {
    const m = /^([0-9]{1,15})-([0-9]{1,15})$/.exec(id);
    if (!m) return 'Last-Event-ID is not an event id of this stream';
    if (Number(m[1]) !== this.epoch) return 'Last-Event-ID is from another coordinator process';
    const seq = Number(m[2]);
    if (seq > this.seq) return 'Last-Event-ID is newer than the latest event';
    if (seq < this.floor) return 'Last-Event-ID is older than the events kept for resuming';
    return null;
  }

  /** Hands the subscriber every event after `after` it wants, in one write. */
  private replay(sub: Subscriber, after: number): void {
    let text = '';
    for (let i = 0; i < this.ringLength; i++) {
      const e = this.ring[(this.ringStart + i) % this.o.ringSize]!;
      if (e.seq > after && sub.wants(e.type, e.build)) {
        text += e.text;
        this.stats.delivered++;
      }
    }
    if (text !== '') sub.push(text);
  }

  private resetText(reason: string): string {
    // Its id is the latest event's: a client that reconnects with it resumes from here.
    return sseText('reset', this.lastId, JSON.stringify({ reason }));
  }

  private overflow(sub: Subscriber): void {
    this.stats.overflows++;
    this.subscribers.delete(sub);
    sub.end(this.resetText('the client fell behind (its queue passed the limit); refetch and reconnect'));
    this.lingerIfAlone();
  }
}
