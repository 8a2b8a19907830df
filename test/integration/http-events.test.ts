/**
 * `GET /api/v1/events` against a real coordinator process and a real noop agent, read
 * with plain fetch as a browser's EventSource would: an agent appearing and being paused
 * with `kiln agents pause`, a submitted build's `build` and `node` events through to
 * success (every event valid against shared/api-events.ts), resuming with Last-Event-ID
 * without gaps or duplicates, `reset` for an id that cannot be resumed, validation of
 * `topics` and `build`. Also the build list's `state` and `name` filters and `counts`,
 * and `kiln builds` as before.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { apiPath, parseEventsStreamEvent, withQuery, type BuildPage, type EventsStreamEvent, type NodeStatusT } from '../../shared/index.js';
import { inline, kiln, submitSpec, useCluster, waitFor } from '../helpers/cluster.js';
import { MAX_EVENT_STREAMS_PER_KEY } from '../../coordinator/http/routes-events.js';
import type { z } from 'zod';

type Page = z.infer<typeof BuildPage>;

/** One open events stream: every event as it arrives (validated), and the comments. */
class EventStream {
  readonly events: EventsStreamEvent[] = [];
  comments = 0;
  status = 0;
  private readonly ac = new AbortController();
  private buf = '';
  readonly done: Promise<void>;
  private opened!: () => void;
  readonly ready = new Promise<void>((r) => (this.opened = r));

  constructor(url: string, token: string, headers: Record<string, string> = {}) {
    this.done = this.run(url, token, headers).catch((err: unknown) => {
      if (!this.ac.signal.aborted) throw err;
    });
  }

  private async run(url: string, token: string, headers: Record<string, string>): Promise<void> {
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...headers }, signal: this.ac.signal });
    this.status = res.status;
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      this.buf += value;
      let at: number;
      while ((at = this.buf.indexOf('\n\n')) >= 0) {
        this.take(this.buf.slice(0, at));
        this.buf = this.buf.slice(at + 2);
      }
    }
  }

  private take(block: string): void {
    // A block without data is no event (SSE): comments (`: connected`, `: ping`) and `retry:`.
    const lines = block.split('\n');
    if (!lines.some((l) => l.startsWith('data:'))) {
      if (lines.some((l) => l.startsWith(':'))) {
        this.comments++;
        this.opened();
      }
      return;
    }
    const field = (name: string) => block.split('\n').find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
    const r = parseEventsStreamEvent(field('event') ?? '', field('data') ?? '', field('id') ?? null);
    if (r === null || !r.ok) throw new Error(`a bad event: ${r ? r.error : 'unknown name'}\n${block}`);
    this.events.push(r.event);
  }

  waitFor<T>(what: string, pick: (events: EventsStreamEvent[]) => T | undefined | null | false): Promise<T> {
    return waitFor(what, () => pick(this.events), 60_000, 20);
  }

  close(): Promise<void> {
    this.ac.abort();
    return this.done;
  }
}

const NODE_ORDER = ['pending', 'ready', 'assigned', 'running', 'success'];

describe('GET /api/v1/events', () => {
  const c = useCluster('http-events', { coordinatorArgs: ['--heartbeat-interval', '1s'] });
  const streams: EventStream[] = [];
  const open = async (query: Record<string, string> = {}, headers: Record<string, string> = {}) => {
    const s = new EventStream(`${c.coord.url}${withQuery(apiPath.events(), query)}`, c.coord.apiToken, headers);
    streams.push(s);
    await s.ready;
    return s;
  };
  afterAll(async () => {
    for (const s of streams) await s.close();
  });
  const spec = (name: string) => ({ name, nodes: { first: inline('FROM kiln/busybox:1\n'), second: inline('FROM kiln/busybox:1\n', { needs: ['first'] }) } });

  it("shows an agent appearing and paused, and a build's build and node events through to success", async () => {
    const all = await open();
    expect(all.status).toBe(200);
    await c.agent({ name: 'ev-noop', executor: 'noop', env: { KILN_NOOP_DELAY_MS: '300' } });
    await all.waitFor('the agent connected', (es) => es.find((e) => e.type === 'agent' && e.data.name === 'ev-noop' && e.data.state === 'connected'));

    const id = await submitSpec(c.coord, spec('events-one'));
    await all.waitFor('the build success', (es) => es.some((e) => e.type === 'build' && e.data.id === id && e.data.state === 'success'));
    // (the last node's success may come in the same window, right after the build's)
    await all.waitFor('the second node success', (es) => es.some((e) => e.type === 'node' && e.data.build === id && e.data.node.name === 'second' && e.data.node.state === 'success'));
    const mine = all.events.filter((e) => (e.type === 'build' && e.data.id === id) || (e.type === 'node' && e.data.build === id));
    // the first is the new build (pending, or running already when that came in the same window)
    expect(mine[0]).toMatchObject({ type: 'build', data: { id, name: 'events-one', state: expect.stringMatching(/^(pending|running)$/), submitted_by: expect.stringMatching(/^key:/) } });
    const nodes = mine.flatMap((e) => (e.type === 'node' ? [e.data.node] : []));
    for (const name of ['first', 'second']) {
      const seen = nodes.filter((n) => n.name === name);
      // states only move forward (coalescing may skip some), ending in success on the agent
      const order = seen.map((n) => NODE_ORDER.indexOf(n.state));
      expect(order.every((o, i) => o >= 0 && (i === 0 || o >= order[i - 1]!))).toBe(true);
      expect(seen.at(-1)).toMatchObject<Partial<NodeStatusT>>({ state: 'success', agent: 'ev-noop', attempt: 1, reused: false });
      expect(seen.at(-1)!.duration_ms).toBeGreaterThanOrEqual(0);
    }
    // `second` moved only after `first` finished (it became ready then)
    expect(nodes.findIndex((n) => n.name === 'second')).toBeGreaterThan(nodes.findIndex((n) => n.name === 'first' && n.state === 'success'));
    expect(mine.findLast((e) => e.type === 'build')).toMatchObject({ type: 'build', data: { state: 'success', node_counts: { success: 2 } } });
    // ids: one epoch, increasing
    const ids = all.events.map((e) => e.id!.split('-').map(Number));
    expect(new Set(ids.map(([epoch]) => epoch)).size).toBe(1);
    expect(ids.every(([, seq], i) => i === 0 || seq! > ids[i - 1]![1]!)).toBe(true);

    const paused = await kiln(['agents', 'pause', 'ev-noop', '--reason', 'events test'], c.coord.cliEnv);
    expect(paused.code, paused.stderr).toBe(0);
    const ev = await all.waitFor('the agent paused', (es) => es.find((e) => e.type === 'agent' && e.data.control === 'paused'));
    expect(ev.data).toMatchObject({ name: 'ev-noop', control: 'paused', control_reason: 'events test' });
    const resumed = await kiln(['agents', 'resume', 'ev-noop'], c.coord.cliEnv);
    expect(resumed.code, resumed.stderr).toBe(0);
    await all.waitFor('the agent active again', (es) => es.findLast((e) => e.type === 'agent')?.data.control === 'active');
  });

  it('resumes with Last-Event-ID without gaps or duplicates; a bad id gets reset first', async () => {
    const reference = await open({ topics: 'builds,nodes' });
    const first = await open({ topics: 'builds,nodes' });
    const a = await submitSpec(c.coord, spec('events-two'));
    await first.waitFor('build two running', (es) => es.some((e) => e.type === 'node' && e.data.build === a));
    await first.close();
    const lastId = first.events.at(-1)!.id!;
    // while disconnected: the rest of build two, and build three
    const b = await submitSpec(c.coord, spec('events-three'));
    const refEnd = await reference.waitFor('build three done (reference)', (es) => es.findIndex((e) => e.type === 'build' && e.data.id === b && e.data.state === 'success') + 1);

    const resumed = await open({ topics: 'builds,nodes' }, { 'last-event-id': lastId });
    await resumed.waitFor('build three done (resumed)', (es) => es.some((e) => e.type === 'build' && e.data.id === b && e.data.state === 'success'));
    const seq = (id: string) => Number(id.split('-')[1]);
    const expected = reference.events.slice(0, refEnd).filter((e) => seq(e.id!) > seq(lastId));
    const got = resumed.events.slice(0, resumed.events.findIndex((e) => e.type === 'build' && e.data.id === b && e.data.state === 'success') + 1);
    expect(got.map((e) => e.id)).toEqual(expected.map((e) => e.id));
    expect(got).toEqual(expected);
    // what the first stream got and what the resumed one got is every event, once
    const union = [...first.events, ...got].map((e) => e.id);
    expect(new Set(union).size).toBe(union.length);
    expect(reference.events.slice(0, refEnd).filter((e) => seq(e.id!) >= seq(first.events[0]!.id!)).map((e) => e.id)).toEqual(union);

    for (const bad of ['not-an-id', `1-${seq(lastId)}`, `${lastId.split('-')[0]}-999999999`]) {
      const s = await open({}, { 'last-event-id': bad });
      const reset = await s.waitFor(`reset for ${bad}`, (es) => es[0]);
      expect(reset.type).toBe('reset');
      expect(reset.data).toMatchObject({ reason: expect.stringContaining('Last-Event-ID') });
      // its id resumes from there: a new build comes next, nothing older
      const again = await open({ topics: 'builds' }, { 'last-event-id': reset.id! });
      const d = await submitSpec(c.coord, { name: 'events-after-reset', nodes: { only: inline('FROM kiln/busybox:1\n') } });
      const firstAgain = await again.waitFor('the next build', (es) => es[0]);
      expect(firstAgain).toMatchObject({ type: 'build', data: { id: d } });
      await again.close();
      await s.close();
    }
  });

  it('filters by build and refuses bad topics, bad and unknown builds, and long ids', async () => {
    const id = await submitSpec(c.coord, spec('events-filtered'));
    const one = await open({ build: id });
    const other = await submitSpec(c.coord, spec('events-other'));
    // each event of this build, and nothing of the other or of the fleet
    const ids = new Set([id, other]);
    await waitFor('both builds done', async () => {
      const page = (await c.coord.api<Page>(apiPath.builds())).body;
      return page.items.filter((b) => ids.has(b.id)).every((b) => b.state === 'success');
    });
    await one.waitFor('its success', (es) => es.some((e) => e.type === 'build' && e.data.state === 'success'));
    expect(one.events.some((e) => e.type === 'node' && e.data.node.name === 'second' && e.data.node.state === 'success')).toBe(true);
    // pinning changes the list row
    expect((await c.coord.api(apiPath.buildPin(id), { method: 'POST' })).status).toBe(200);
    await one.waitFor('the pinned row', (es) => es.some((e) => e.type === 'build' && e.data.pinned));
    for (const e of one.events) {
      expect(e.type === 'build' ? e.data.id : e.type === 'node' ? e.data.build : e.type).toBe(id);
    }

    const refused = async (query: Record<string, string>, headers: Record<string, string> = {}) => {
      const r = await c.coord.api<{ status: number; detail: string; code: string }>(withQuery(apiPath.events(), query), { headers });
      return { status: r.status, detail: r.body.detail };
    };
    expect(await refused({ topics: 'builds,logs' })).toMatchObject({ status: 400, detail: expect.stringMatching(/topics.*builds, nodes, agents, pools/) });
    expect(await refused({ topics: '' })).toMatchObject({ status: 400, detail: expect.stringContaining('topics') });
    expect(await refused({ build: 'nope' })).toMatchObject({ status: 400, detail: expect.stringContaining('build') });
    expect(await refused({ build: 'b-0000000000000-00000000' })).toMatchObject({ status: 404, detail: 'build b-0000000000000-00000000 not found' });
    expect(await refused({}, { 'last-event-id': 'x'.repeat(65) })).toMatchObject({ status: 400, detail: expect.stringContaining('last-event-id') });
  });

  it('caps the streams one key may hold open (429), and frees a place when one closes', async () => {
    const k = await c.coord.api<{ secret: string }>(apiPath.keys(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scopes: ['read'], name: 'wall' }) });
    expect(k.status).toBe(201);
    const url = `${c.coord.url}${withQuery(apiPath.events(), { topics: 'pools' })}`;
    const mine: EventStream[] = [];
    for (let i = 0; i < MAX_EVENT_STREAMS_PER_KEY; i++) {
      const s = new EventStream(url, k.body.secret);
      streams.push(s);
      mine.push(s);
      await s.ready;
    }
    const refused = await fetch(url, { headers: { authorization: `Bearer ${k.body.secret}` } });
    expect(refused.status).toBe(429);
    const problem = (await refused.json()) as { code: string; detail: string };
    expect(problem.code).toBe('E_RATE_LIMITED');
    expect(problem.detail).toContain(`${MAX_EVENT_STREAMS_PER_KEY} event streams are open with this key`);
    // Another key is not affected.
    const other = await open({ topics: 'pools' });
    expect(other.status).toBe(200);
    // Closing a stream frees a place for the key again.
    await mine[0]!.close();
    await waitFor('a place for the key again', async () => {
      const r = await fetch(url, { headers: { authorization: `Bearer ${k.body.secret}` } });
      await r.body?.cancel();
      return r.status === 200;
    });
  });

  it('filters the build list by state and name, counts by state, and kiln builds still lists them', async () => {
    const list = async (query: Record<string, string>) => {
      const r = await c.coord.api<Page>(withQuery(apiPath.builds(), query));
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body;
    };
    const all = await list({ limit: '500' });
    expect(all.items.length).toBeGreaterThanOrEqual(5);
    expect(all.counts).toMatchObject({ success: all.items.filter((b) => b.state === 'success').length, failed: 0, cancelled: 0 });
    expect(Object.values(all.counts!).reduce((x, y) => x + y, 0)).toBe(all.items.length);
    expect(all.items[0]!.submitted_by).toMatch(/^key:/);

    const byName = await list({ name: 'EVENTS-T' });
    expect(byName.items.map((b) => b.name).sort()).toEqual(['events-three', 'events-two']);
    expect(byName.counts!.success).toBe(2);
    const none = await list({ state: 'failed,cancelled' });
    expect(none.items).toEqual([]);
    const paged = await list({ state: 'success', limit: '1' });
    expect(paged.items).toHaveLength(1);
    const next = await list({ state: 'success', limit: '1', cursor: paged.next_cursor! });
    expect(next.items[0]!.id < paged.items[0]!.id).toBe(true);

    const bad = await c.coord.api<{ detail: string }>(withQuery(apiPath.builds(), { state: 'done' }));
    expect(bad.status).toBe(400);
    expect(bad.body.detail).toMatch(/state.*pending, running, success, failed, partial, cancelled/);
    const long = await c.coord.api<{ detail: string }>(withQuery(apiPath.builds(), { name: 'x'.repeat(129) }));
    expect(long.status).toBe(400);
    expect(long.body.detail).toContain('name');

    const cli = await kiln(['builds', '--limit', '2'], c.coord.cliEnv);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(all.items[0]!.id);
    expect(cli.stderr).toContain('--cursor');
  });
});
