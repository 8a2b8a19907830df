/**
 * The change feed over a real Engine and agent registry (coordinator/events/event-source.ts),
 * with a persisted state store: an agent connecting and paused gives `agent` events, a
 * build run to success gives `build` and `node` events; every payload validates against
 * the events stream's schemas (shared/api-events.ts). Without a subscriber the feed adds
 * no listener to the engine and no watcher to the registry.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../coordinator/builds/engine.js';
import { ChangeFeed, type FeedEventType } from '../../coordinator/events/change-feed.js';
import { engineSource } from '../../coordinator/events/event-source.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { parseEventsStreamEvent, validateSpec, type EventsStreamEvent } from '../../shared/index.js';
import { FakeChannel, finished, frame, hello, openEngine, tick } from '../helpers/engine-harness.js';

/** Reads the sink's SSE text as validated events (a malformed one fails the test). */
function eventsOf(text: string): EventsStreamEvent[] {
  const out: EventsStreamEvent[] = [];
  for (const block of text.split('\n\n')) {
    if (block.trim() === '' || block.startsWith(':')) continue;
    const field = (name: string) => block.split('\n').find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2) ?? '';
    const r = parseEventsStreamEvent(field('event'), field('data'), field('id'));
    if (!r || !r.ok) throw new Error(`bad event: ${r ? r.error : 'unknown name'}: ${block}`);
    out.push(r.event);
  }
  return out;
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`never: ${what}`);
}

describe('change feed over the engine', () => {
  let dir: string;
  let engine: Engine;
  let store: StateStore;
  let logs: LogStorage;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-events-source-'));
    ({ engine, store, logs } = await openEngine(dir, () => Date.now()));
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('turns agent, build and node changes into valid events, coalesced, only while subscribed', async () => {
    const feed = new ChangeFeed(engineSource(engine, engine.agents), { windowMs: 5, lingerMs: 0 });
    expect(engine.listenerCount('node')).toBe(0);
    let text = '';
    const sub = feed.subscribe({ types: new Set<FeedEventType>(['build', 'node', 'agent']), build: null }, { write: async (t) => void (text += t), close: () => {} });
    expect(engine.listenerCount('node')).toBe(1);
    expect(engine.listenerCount('build')).toBe(1);

    const ch = new FakeChannel();
    const out = await engine.hello(hello('a1'), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    await until('the agent event', () => eventsOf(text).some((e) => e.type === 'agent' && e.data.name === 'a1' && e.data.state === 'connected'));
    const spec = validateSpec({ name: 'evt', nodes: { one: { dockerfile_inline: 'FROM scratch\n' }, two: { needs: ['one'], dockerfile_inline: 'FROM scratch\n' } } }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
    if (!spec.ok) throw new Error('spec');
    const build = await engine.submit(spec.value, { submittedBy: 'key:k1/ci' });
    for (const node of ['one', 'two']) {
      await until(`an assignment of ${node}`, () => ch.assigns().some((a) => a.node === node));
      const id = ch.assigns().find((a) => a.node === node)!.attempt_id;
      await engine.frame(out.entry, frame('started', { attempt_id: id, at: 1 }));
      await engine.frame(out.entry, frame('finished', finished(id, 'success')));
      await tick();
    }
    await until('the build success event', () => eventsOf(text).some((e) => e.type === 'build' && e.data.id === build.id && e.data.state === 'success'));
    await engine.setAgentControl('a1', 'paused', 'maintenance');
    await until('the paused agent', () => eventsOf(text).some((e) => e.type === 'agent' && e.data.control === 'paused'));

    const events = eventsOf(text);
    const builds = events.flatMap((e) => (e.type === 'build' ? [e.data] : []));
    expect(builds[0]).toMatchObject({ id: build.id, name: 'evt', submitted_by: 'key:k1/ci' });
    expect(builds.at(-1)).toMatchObject({ state: 'success', node_counts: { success: 2 } });
    expect(builds.at(-1)!.duration_ms).toBeGreaterThanOrEqual(0);
    const nodes = events.flatMap((e) => (e.type === 'node' ? [e.data] : []));
    expect(nodes.every((n) => n.build === build.id)).toBe(true);
    for (const name of ['one', 'two']) {
      const last = nodes.filter((n) => n.node.name === name).at(-1)!;
      expect(last.node).toMatchObject({ state: 'success', agent: 'a1', attempt: 1, reused: false, platform: 'linux/amd64' });
    }
    // ids increase by one, in order
    const seqs = events.map((e) => Number(e.id!.split('-')[1]));
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
    const paused = events.filter((e) => e.type === 'agent').at(-1)!;
    expect(paused.data).toMatchObject({ name: 'a1', control: 'paused', control_reason: 'maintenance' });

    sub.close();
    expect(engine.listenerCount('node')).toBe(0);
    expect(engine.listenerCount('build')).toBe(0);
    expect(feed.attached).toBe(false);
  });
});
