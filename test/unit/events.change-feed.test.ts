/**
 * The change feed (coordinator/events/change-feed.ts) with in-memory parts: a source whose
 * changes the test makes, manual timers and sinks that record what they were given.
 * Coalescing per entity within the window, ids, the ring and resuming (and `reset` when an
 * id cannot be resumed), a slow subscriber bounded and closed, topic and build filters,
 * pools only when changed, nothing watched without subscribers, durability before sending.
 */
import { describe, expect, it } from 'vitest';
import { ChangeFeed, type Change, type FeedEventType, type FeedOptions, type FeedSource, type SubscriberFilter } from '../../coordinator/events/change-feed.js';
import { ManualTimers } from '../helpers/manual-timers.js';

interface Sent {
  event: string;
  id: string | null;
  data: unknown;
}

/** Parses SSE text into events (comments skipped). */
function parseSse(text: string): Sent[] {
  const out: Sent[] = [];
  for (const block of text.split('\n\n')) {
    if (block.trim() === '' || block.startsWith(':')) continue;
    let event = 'message';
    let id: string | null = null;
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('id: ')) id = line.slice(4);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    out.push({ event, id, data: JSON.parse(data) });
  }
  return out;
}

class TestSource implements FeedSource {
  notify: ((c: Change) => void) | null = null;
  watches = 0;
  poolsValue: unknown = { items: [] };
  durableCalls = 0;
  durableGate: Promise<void> | null = null;
  /** Entity state the renders read. */
  readonly state = new Map<string, unknown>();

  watch(notify: (c: Change) => void): () => void {
    this.watches++;
    this.notify = notify;
    return () => {
      this.notify = null;
    };
  }
  pools(): unknown {
    return this.poolsValue;
  }
  durable(): Promise<void> {
    this.durableCalls++;
    return this.durableGate ?? Promise.resolve();
  }

  /** An entity changes (only heard while watched). */
  change(type: 'build' | 'node' | 'agent', key: string, value: unknown, build: string | null = null): void {
    this.state.set(key, value);
    this.notify?.({ key, type, build, render: () => this.state.get(key) ?? null });
  }
}

class RecordingSink {
  text = '';
  closed = false;
  /** When set, writes never complete (a client that stopped reading). */
  stalled = false;
  writes = 0;
  write(t: string): Promise<void> {
    this.writes++;
    this.text += t;
    return this.stalled ? new Promise<void>(() => {}) : Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
  get events(): Sent[] {
    return parseSse(this.text);
  }
}

const ALL: SubscriberFilter = { types: new Set<FeedEventType>(['build', 'node', 'agent', 'pools']), build: null };
const EPOCH = 1_700_000_000_000;

function setup(opts: FeedOptions = {}) {
  const timers = new ManualTimers();
  const source = new TestSource();
  const feed = new ChangeFeed(source, { windowMs: 50, poolsEveryMs: 2000, lingerMs: 0, epoch: EPOCH, timers, ...opts });
  return { timers, source, feed };
}

/** Lets the publish chain (promises) run. */
const settle = () => new Promise<void>((r) => setImmediate(r));

async function tick(timers: ManualTimers, ms: number): Promise<void> {
  timers.advance(ms);
  await settle();
}

describe('change feed', () => {
  it('coalesces changes of one entity within the window into one event with the latest state', async () => {
    const { timers, source, feed } = setup();
    const sink = new RecordingSink();
    feed.subscribe(ALL, sink);
    source.change('node', 'n:b1/a', { build: 'b1', node: { name: 'a', state: 'ready' } }, 'b1');
    source.change('node', 'n:b1/a', { build: 'b1', node: { name: 'a', state: 'assigned' } }, 'b1');
    source.change('node', 'n:b1/b', { build: 'b1', node: { name: 'b', state: 'ready' } }, 'b1');
    source.change('node', 'n:b1/a', { build: 'b1', node: { name: 'a', state: 'running' } }, 'b1');
    await tick(timers, 49);
    expect(sink.events).toEqual([]); // the window is still open
    await tick(timers, 1);
    expect(sink.events.map((e) => e.data)).toEqual([
      { build: 'b1', node: { name: 'b', state: 'ready' } },
      { build: 'b1', node: { name: 'a', state: 'running' } },
    ]);
    expect(sink.events.map((e) => e.id)).toEqual([`${EPOCH}-2`, `${EPOCH}-3`]);
    // the next window is a new event for the same entity
    source.change('node', 'n:b1/a', { build: 'b1', node: { name: 'a', state: 'success' } }, 'b1');
    await tick(timers, 50);
    expect(sink.events.at(-1)).toEqual({ event: 'node', id: `${EPOCH}-4`, data: { build: 'b1', node: { name: 'a', state: 'success' } } });
  });

  it("puts a window's build events first, the rest in the order they changed", async () => {
    const { timers, source, feed } = setup();
    const sink = new RecordingSink();
    feed.subscribe(ALL, sink);
    source.change('node', 'n:b1/a', { build: 'b1', node: { name: 'a' } }, 'b1');
    source.change('agent', 'a:x', { name: 'x' });
    source.change('build', 'b:b1', { id: 'b1' }, 'b1');
    source.change('node', 'n:b1/b', { build: 'b1', node: { name: 'b' } }, 'b1');
    await tick(timers, 50);
    expect(sink.events.map((e) => e.event)).toEqual(['build', 'node', 'agent', 'node']);
  });

  it('sends a window only once it is durable, windows in order', async () => {
    const { timers, source, feed } = setup();
    const sink = new RecordingSink();
    feed.subscribe(ALL, sink);
    let release!: () => void;
    source.durableGate = new Promise<void>((r) => (release = r));
    source.change('build', 'b:1', { id: '1', state: 'running' }, '1');
    await tick(timers, 50);
    source.durableGate = null;
    source.change('build', 'b:2', { id: '2', state: 'pending' }, '2');
    await tick(timers, 50);
    expect(sink.events).toEqual([]); // the first window waits for its commit, the second for the first
    release();
    await settle();
    expect(sink.events.map((e) => (e.data as { id: string }).id)).toEqual(['1', '2']);
    expect(source.durableCalls).toBe(2);
  });

  it('does not send a window whose state could not be made durable', async () => {
    const { timers, source, feed } = setup();
    const sink = new RecordingSink();
    feed.subscribe(ALL, sink);
    source.durableGate = Promise.reject(new Error('E_STATE'));
    source.change('build', 'b:1', { id: '1' }, '1');
    await tick(timers, 50);
    expect(sink.events).toEqual([]);
  });

  it('resumes from the ring after Last-Event-ID: no gap, no duplicate', async () => {
    const { timers, source, feed } = setup();
    const first = new RecordingSink();
    feed.subscribe(ALL, first);
    for (let i = 1; i <= 5; i++) {
      source.change('build', `b:${i}`, { id: String(i) }, String(i));
      await tick(timers, 50);
    }
    const seen = first.events;
    expect(seen).toHaveLength(5);
    // a client that got the first two reconnects
    const again = new RecordingSink();
    feed.subscribe(ALL, again, seen[1]!.id!);
    expect(again.events.map((e) => e.id)).toEqual(seen.slice(2).map((e) => e.id));
    source.change('build', 'b:6', { id: '6' }, '6');
    await tick(timers, 50);
    expect(again.events.map((e) => (e.data as { id: string }).id)).toEqual(['3', '4', '5', '6']);
    // the latest id resumes with nothing to replay
    const upToDate = new RecordingSink();
    feed.subscribe(ALL, upToDate, feed.lastId);
    expect(upToDate.events).toEqual([]);
  });

  it('answers an id it cannot resume from with reset (malformed, another epoch, future, older than the ring)', async () => {
    const { timers, source, feed } = setup({ ringSize: 3 });
    feed.subscribe(ALL, new RecordingSink());
    for (let i = 1; i <= 6; i++) {
      source.change('build', `b:${i}`, { id: String(i) }, String(i));
      await tick(timers, 50);
    }
    const reasons: Record<string, string> = {
      garbage: 'not an event id',
      [`${EPOCH - 1}-3`]: 'another coordinator process',
      [`${EPOCH}-99`]: 'newer than the latest event',
      [`${EPOCH}-2`]: 'older than the events kept',
    };
    for (const [id, reason] of Object.entries(reasons)) {
      const sink = new RecordingSink();
      feed.subscribe(ALL, sink, id);
      const [reset, ...rest] = sink.events;
      expect(reset?.event).toBe('reset');
      expect((reset?.data as { reason: string }).reason).toContain(reason);
      expect(reset?.id).toBe(feed.lastId);
      expect(rest).toEqual([]);
      // the reset's id resumes from there on
      const after = new RecordingSink();
      feed.subscribe(ALL, after, reset!.id!);
      expect(after.events).toEqual([]);
    }
    // the oldest id the ring still covers resumes
    const edge = new RecordingSink();
    feed.subscribe(ALL, edge, `${EPOCH}-4`);
    expect(edge.events.map((e) => e.id)).toEqual([`${EPOCH}-5`, `${EPOCH}-6`, `${EPOCH}-7`]);
  });

  it('bounds a slow subscriber: over its queue limit it gets reset and is closed; others go on', async () => {
    const { timers, source, feed } = setup({ maxQueueBytes: 2000 });
    const slow = new RecordingSink();
    const fast = new RecordingSink();
    feed.subscribe(ALL, slow);
    feed.subscribe(ALL, fast);
    slow.stalled = true;
    const big = 'x'.repeat(300);
    for (let i = 0; i < 20; i++) {
      source.change('agent', `a:${i}`, { name: `a${i}`, pad: big });
      await tick(timers, 50);
    }
    expect(slow.closed).toBe(true);
    const slowEvents = slow.events;
    expect(slowEvents.at(-1)?.event).toBe('reset');
    expect((slowEvents.at(-1)?.data as { reason: string }).reason).toContain('fell behind');
    // what it was handed before it stalled, then the reset: the queue was not kept
    expect(slow.writes).toBe(2);
    expect(fast.events).toHaveLength(20);
    expect(fast.closed).toBe(false);
    expect(feed.subscriberCount).toBe(1);
    expect(feed.stats.overflows).toBe(1);
  });

  it('filters by topic and by build (agents and pools unaffected by the build filter)', async () => {
    const { timers, source, feed } = setup();
    const nodesOfB1 = new RecordingSink();
    const agentsOnly = new RecordingSink();
    const b1WithAgents = new RecordingSink();
    feed.subscribe({ types: new Set<FeedEventType>(['build', 'node']), build: 'b1' }, nodesOfB1);
    feed.subscribe({ types: new Set<FeedEventType>(['agent']), build: null }, agentsOnly);
    feed.subscribe({ types: new Set<FeedEventType>(['node', 'agent']), build: 'b1' }, b1WithAgents);
    source.change('build', 'b:b1', { id: 'b1' }, 'b1');
    source.change('build', 'b:b2', { id: 'b2' }, 'b2');
    source.change('node', 'n:b1/x', { build: 'b1', node: { name: 'x' } }, 'b1');
    source.change('node', 'n:b2/x', { build: 'b2', node: { name: 'x' } }, 'b2');
    source.change('agent', 'a:one', { name: 'one' });
    await tick(timers, 50);
    expect(nodesOfB1.events.map((e) => e.event)).toEqual(['build', 'node']);
    expect(nodesOfB1.events.every((e) => JSON.stringify(e.data).includes('b1'))).toBe(true);
    expect(agentsOnly.events.map((e) => e.event)).toEqual(['agent']);
    expect(b1WithAgents.events.map((e) => e.event)).toEqual(['node', 'agent']);
    // a filtered client resumes with its own filter
    const resumed = new RecordingSink();
    feed.subscribe({ types: new Set<FeedEventType>(['node']), build: 'b2' }, resumed, `${EPOCH}-1`);
    expect(resumed.events.map((e) => e.data)).toEqual([{ build: 'b2', node: { name: 'x' } }]);
  });

  it('sends the pools every poolsEveryMs only when they changed', async () => {
    const { timers, source, feed } = setup();
    const sink = new RecordingSink();
    feed.subscribe(ALL, sink);
    await tick(timers, 2000);
    expect(sink.events).toEqual([]); // unchanged since the feed attached
    source.poolsValue = { items: [{ name: 'linux/amd64', queued: 3 }] };
    await tick(timers, 1999);
    expect(sink.events).toEqual([]);
    await tick(timers, 1);
    expect(sink.events).toEqual([{ event: 'pools', id: `${EPOCH}-2`, data: { items: [{ name: 'linux/amd64', queued: 3 }] } }]);
    await tick(timers, 4000);
    expect(sink.events).toHaveLength(1);
  });

  it('watches nothing without subscribers; after the last one leaves (and the linger), old ids get reset', async () => {
    const { timers, source, feed } = setup({ lingerMs: 1000 });
    source.change('build', 'b:1', { id: '1' }, '1'); // nobody listens: not even heard
    expect(source.watches).toBe(0);
    expect(feed.attached).toBe(false);
    const sink = new RecordingSink();
    const sub = feed.subscribe(ALL, sink);
    expect(source.watches).toBe(1);
    source.change('build', 'b:1', { id: '1', state: 'running' }, '1');
    await tick(timers, 50);
    const last = sink.events.at(-1)!.id!;
    sub.close();
    // within the linger a reconnect resumes, changes meanwhile included
    source.change('build', 'b:1', { id: '1', state: 'success' }, '1');
    await tick(timers, 50);
    const back = new RecordingSink();
    const sub2 = feed.subscribe(ALL, back, last);
    expect(back.events.map((e) => e.data)).toEqual([{ id: '1', state: 'success' }]);
    sub2.close();
    await tick(timers, 1000);
    expect(feed.attached).toBe(false);
    expect(source.notify).toBeNull();
    source.change('build', 'b:1', { id: '1', state: 'gone unseen' }, '1');
    const late = new RecordingSink();
    feed.subscribe(ALL, late, feed.lastId);
    expect(late.events.map((e) => e.event)).toEqual(['reset']);
    expect(source.watches).toBe(2);
  });

  it('skips entities that are gone when the window closes, and stop() closes every subscriber', async () => {
    const { timers, source, feed } = setup();
    const sink = new RecordingSink();
    feed.subscribe(ALL, sink);
    source.change('agent', 'a:x', { name: 'x' });
    source.state.delete('a:x');
    await tick(timers, 50);
    expect(sink.events).toEqual([]);
    feed.stop();
    expect(sink.closed).toBe(true);
    expect(feed.attached).toBe(false);
  });
});
