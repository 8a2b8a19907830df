/**
 * Budgets for wide builds (issue 11) in the engine, in process (fake agent channels, a
 * controllable clock and manual timers, the state on real files): build `concurrency`,
 * concurrency groups shared across builds (coordinator limits and build-given ones), no
 * head-of-line blocking in the ready queues, a freed slot dispatching the next held node,
 * counts recomputed after a restart, and build deadlines (applied like a cancel, re-armed
 * on recovery, applied at once when they passed while the coordinator was down). Also the
 * spec's validation of the budget fields.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../coordinator/builds/engine.js';
import { buildView } from '../../coordinator/builds/build-views.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { validateSpec, type HelloPayload } from '../../shared/index.js';
import { FakeChannel, finished, frame, hello, openEngine, tick } from '../helpers/engine-harness.js';
import { ManualTimers } from '../helpers/manual-timers.js';

const GROUPS = new Map([['gpu-heavy', 2]]);

function spec(nodes: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const r = validateSpec({ name: 't', nodes, ...extra }, { form: 'submitted', defaultPlatform: 'linux/amd64', concurrencyGroups: GROUPS });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function wide(n: number, prefix = 'n', extra: Record<string, unknown> = {}): Record<string, unknown> {
  const nodes: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) nodes[`${prefix}${i}`] = { dockerfile_inline: `FROM a\nRUN echo ${prefix}${i}`, ...extra };
  return nodes;
}

describe('engine: budgets', () => {
  let dir: string;
  let now: number;
  let timers: ManualTimers;
  let store: StateStore;
  let logs: LogStorage;
  let engine: Engine;

  async function makeEngine(): Promise<Engine> {
    const o = await openEngine(dir, () => now, { concurrencyGroups: GROUPS, timers });
    store = o.store;
    logs = o.logs;
    return o.engine;
  }

  async function restart(): Promise<void> {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    engine = await makeEngine();
  }

  async function connect(name: string, opts: Partial<HelloPayload> = {}) {
    const ch = new FakeChannel();
    const out = await engine.hello(hello(name, opts), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    await tick();
    return { ch, entry: out.entry };
  }

  /** Moves the engine's clock and the deadline timers together. */
  async function advance(ms: number) {
    now += ms;
    timers.advance(ms);
    await tick();
    await engine.idle();
  }

  const assignsOf = (ch: FakeChannel, buildId: string) => ch.assigns().filter((a) => a.build_id === buildId);
  const view = (id: string) => buildView(engine.activeBuild(id)!, engine.agents, now, engine);

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-budgets-'));
    now = 1_000_000;
    timers = new ManualTimers();
    engine = await makeEngine();
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs at most `concurrency` nodes of a build with many ready nodes, and a freed slot dispatches the next at once', async () => {
    const a = await connect('a1', { max_jobs: 20 });
    const b = await engine.submit(spec(wide(40), { concurrency: 3 }));
    await tick();
    expect(assignsOf(a.ch, b.id)).toHaveLength(3);
    expect(engine.buildRunning(b.id)).toBe(3);
    const v = view(b.id);
    expect(v.budget).toMatchObject({ concurrency: 3, running: 3 });
    const waiting = v.nodes.filter((n) => n.state === 'ready');
    expect(waiting).toHaveLength(37);
    for (const n of waiting) expect(n.waiting).toBe('waiting: build concurrency 3 reached');
    // Each result frees one slot: exactly one more node goes, never more than 3 at once.
    let done = 0;
    while (done < 40) {
      const open = assignsOf(a.ch, b.id).slice(done);
      expect(open.length).toBeLessThanOrEqual(3);
      const next = open[0]!;
      await engine.frame(a.entry, frame('finished', finished(next.attempt_id, 'success')));
      done++;
      await tick();
      expect(assignsOf(a.ch, b.id).length).toBe(Math.min(40, done + 3));
      expect(engine.buildRunning(b.id)).toBe(Math.min(3, 40 - done));
    }
    expect(engine.activeBuild(b.id)?.state ?? (await engine.getBuild(b.id))!.state).toBe('success');
  });

  it('does not let a held build block other builds of the same requirement (no head-of-line blocking)', async () => {
    const a = await connect('a1', { max_jobs: 10 });
    const held = await engine.submit(spec(wide(20, 'h'), { concurrency: 1, priority: 5 }));
    const other = await engine.submit(spec(wide(5, 'o')));
    await tick();
    expect(assignsOf(a.ch, held.id)).toHaveLength(1);
    expect(assignsOf(a.ch, other.id)).toHaveLength(5);
    // The held build's own nodes are behind its budget, not behind the other build.
    await engine.frame(a.entry, frame('finished', finished(assignsOf(a.ch, held.id)[0]!.attempt_id, 'success')));
    await tick();
    expect(assignsOf(a.ch, held.id)).toHaveLength(2);
  });

  it('shares a concurrency group across builds, and its limit frees for whichever build waits', async () => {
    const a = await connect('a1', { max_jobs: 10 });
    const b1 = await engine.submit(spec(wide(4, 'x'), { concurrency_group: 'gpu-heavy' }));
    const b2 = await engine.submit(
      spec({
        train: { dockerfile_inline: 'FROM a\nRUN train', concurrency_group: 'gpu-heavy' },
        lint: { dockerfile_inline: 'FROM a\nRUN lint' },
        docs: { dockerfile_inline: 'FROM a\nRUN docs' },
      }),
    );
    await tick();
    expect(assignsOf(a.ch, b1.id)).toHaveLength(2);
    // b2's nodes outside the group run; its grouped node waits for the group.
    expect(assignsOf(a.ch, b2.id).map((x) => x.node).sort()).toEqual(['docs', 'lint']);
    const train = view(b2.id).nodes.find((n) => n.name === 'train')!;
    expect(train.state).toBe('ready');
    expect(train.waiting).toBe('waiting: concurrency group gpu-heavy full (2/2)');
    expect(train.concurrency_group).toBe('gpu-heavy');
    expect(engine.concurrencyGroupViews()).toEqual([{ name: 'gpu-heavy', limit: 2, running: 2, waiting: 3 }]);
    // One group slot frees: the oldest waiting group node (b1's, submitted first) takes it.
    await engine.frame(a.entry, frame('finished', finished(assignsOf(a.ch, b1.id)[0]!.attempt_id, 'success')));
    await tick();
    expect(assignsOf(a.ch, b1.id)).toHaveLength(3);
    expect(assignsOf(a.ch, b2.id).some((x) => x.node === 'train')).toBe(false);
    // A cancelled build frees its group slots once its agents confirm (a cancelling attempt still holds its agent).
    await engine.cancel(b1.id);
    await tick();
    expect(assignsOf(a.ch, b2.id).some((x) => x.node === 'train')).toBe(false);
    for (const id of a.ch.cancels()) await engine.frame(a.entry, frame('finished', finished(id, 'cancelled')));
    await tick();
    expect(assignsOf(a.ch, b2.id).some((x) => x.node === 'train')).toBe(true);
  });

  it('uses the limit a build gives for a group the coordinator does not configure', async () => {
    const a = await connect('a1', { max_jobs: 10 });
    const b = await engine.submit(spec(wide(6), { concurrency_group: 'mine', concurrency_groups: { mine: 4 } }));
    await tick();
    expect(assignsOf(a.ch, b.id)).toHaveLength(4);
    expect(view(b.id).nodes.find((n) => n.state === 'ready')!.waiting).toBe('waiting: concurrency group mine full (4/4)');
  });

  it('recomputes the running counts after a restart (nothing journaled for them)', async () => {
    const a = await connect('a1', { max_jobs: 10 });
    const b = await engine.submit(spec(wide(6), { concurrency: 2, concurrency_group: 'gpu-heavy' }));
    await tick();
    const first = assignsOf(a.ch, b.id);
    expect(first).toHaveLength(2);
    for (const x of first) await engine.frame(a.entry, frame('started', { attempt_id: x.attempt_id, at: now }));
    await restart();
    expect(engine.buildRunning(b.id)).toBe(2);
    expect(engine.concurrencyGroupViews()[0]).toMatchObject({ name: 'gpu-heavy', running: 2, waiting: 4 });
    // A fresh agent with free slots gets nothing of the build: its budget is still full.
    const fresh = await connect('a2', { max_jobs: 10 });
    expect(assignsOf(fresh.ch, b.id)).toHaveLength(0);
    // The first agent comes back with its two attempts; one result frees one slot.
    const back = await connect('a1', { max_jobs: 10, running: first.map((x) => ({ attempt_id: x.attempt_id, log_bytes: 0 })) });
    await engine.frame(back.entry, frame('finished', finished(first[0]!.attempt_id, 'success')));
    await tick();
    expect(assignsOf(fresh.ch, b.id).length + assignsOf(back.ch, b.id).length).toBe(1);
    expect(engine.buildRunning(b.id)).toBe(2);
  });

  it('cancels what has not finished when the deadline passes, like an API cancel, with a reason naming it', async () => {
    const a = await connect('a1', { max_jobs: 1 });
    const b = await engine.submit(spec({ first: { dockerfile_inline: 'FROM a' }, second: { dockerfile_inline: 'FROM a\nRUN 2' }, after: { dockerfile_inline: 'FROM a', needs: ['first'] } }, { deadline: '1m' }));
    await tick();
    const running = a.ch.assigns()[0]!;
    await engine.frame(a.entry, frame('started', { attempt_id: running.attempt_id, at: now }));
    expect(view(b.id).budget).toMatchObject({ deadline_ms: 60_000, deadline_at: new Date(b.created_at + 60_000).toISOString(), deadline_exceeded: false });
    await advance(59_000);
    expect(b.state).toBe('running');
    await advance(1_000);
    expect(b.state).toBe('cancelled');
    expect(a.ch.cancels()).toContain(running.attempt_id);
    for (const n of b.nodes) {
      expect(n.state).toBe('cancelled');
      expect(n.reason).toBe("the build's deadline passed (1m0s after submit)");
    }
    const v = buildView(b, engine.agents, now, engine);
    expect(v.budget?.deadline_exceeded).toBe(true);
    expect(v.reason).toBe("the build's deadline passed (1m0s after submit)");
  });

  it('keeps the deadline across a restart, and applies one that passed while the coordinator was down at once', async () => {
    await connect('a1', { max_jobs: 1 });
    const early = await engine.submit(spec({ one: { dockerfile_inline: 'FROM a' }, two: { dockerfile_inline: 'FROM a\nRUN 2' } }, { deadline: '60s' }));
    const late = await engine.submit(spec({ one: { dockerfile_inline: 'FROM a\nRUN late' }, two: { dockerfile_inline: 'FROM a\nRUN late2' } }, { deadline: '10m' }));
    await tick();
    await advance(10_000);
    await restart();
    // Re-armed: not yet.
    await advance(40_000);
    expect(engine.activeBuild(early.id)!.state).not.toBe('cancelled');
    await advance(10_000);
    expect((await engine.getBuild(early.id))!.state).toBe('cancelled');
    expect((await engine.getBuild(late.id))!.state).not.toBe('cancelled');
    // Down past the second deadline: applied during recovery.
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    now += 20 * 60_000;
    engine = await makeEngine();
    await tick();
    await engine.idle();
    const gone = (await engine.getBuild(late.id))!;
    expect(gone.state).toBe('cancelled');
    expect(gone.nodes.every((n) => n.reason === "the build's deadline passed (10m0s after submit)")).toBe(true);
  });

  it('arms the deadline again for a retried node, and refuses a retry once the deadline passed', async () => {
    const a = await connect('a1', { max_jobs: 2 });
    const b = await engine.submit(spec({ one: { dockerfile_inline: 'FROM a' } }, { deadline: '1m' }));
    await tick();
    await engine.frame(a.entry, frame('finished', finished(a.ch.assigns()[0]!.attempt_id, 'failed')));
    await advance(10_000);
    expect((await engine.getBuild(b.id))!.state).toBe('failed');
    await engine.retryNode(b.id, 'one');
    await tick();
    expect(a.ch.assigns()).toHaveLength(2);
    await advance(50_000);
    const cancelled = (await engine.getBuild(b.id))!;
    expect(cancelled.state).toBe('cancelled');
    expect(a.ch.cancels()).toContain(a.ch.assigns()[1]!.attempt_id);

    const late = await engine.submit(spec({ two: { dockerfile_inline: 'FROM a\nRUN 2' } }, { deadline: '1m' }));
    await tick();
    await engine.frame(a.entry, frame('finished', finished(a.ch.assigns().find((x) => x.build_id === late.id)!.attempt_id, 'failed')));
    await advance(61_000);
    await expect(engine.retryNode(late.id, 'two')).rejects.toMatchObject({ code: 'E_CONFLICT', message: expect.stringMatching(/deadline passed/) });
  });
});

describe('spec: budget fields', () => {
  const check = (extra: Record<string, unknown>, nodeExtra: Record<string, unknown> = {}, known: ReadonlyMap<string, number> | null = GROUPS) =>
    validateSpec({ name: 't', nodes: { n: { dockerfile_inline: 'FROM a', ...nodeExtra } }, ...extra }, { form: 'submitted', defaultPlatform: 'linux/amd64', ...(known ? { concurrencyGroups: known } : {}) });

  it('resolves the budget fields', () => {
    const r = check({ concurrency: 4, concurrency_group: 'gpu-heavy', concurrency_groups: { other: 3 }, deadline: '2h' }, { concurrency_group: 'other' });
    expect(r.ok && r.value.budget).toEqual({ concurrency: 4, concurrency_group: 'gpu-heavy', concurrency_groups: { other: 3 }, deadline_ms: 7_200_000 });
    expect(r.ok && r.value.nodes[0]!.concurrency_group).toBe('other');
    const plain = check({});
    expect(plain.ok && plain.value.budget).toBeUndefined();
  });

  it.each([
    [{ concurrency: 0 }, {}, 'concurrency'],
    [{ concurrency: 10_001 }, {}, 'concurrency'],
    [{ concurrency: 1.5 }, {}, 'concurrency'],
    [{ deadline: '40d' }, {}, 'deadline'],
    [{ deadline: 'soon' }, {}, 'deadline'],
    [{ concurrency_group: 'nobody-configures-this' }, {}, 'concurrency_group'],
    [{ concurrency_group: 'bad name' }, {}, 'concurrency_group'],
    [{}, { concurrency_group: 'unknown' }, 'nodes.n.concurrency_group'],
    [{ concurrency_groups: { x: 0 } }, {}, 'concurrency_groups.x'],
    [{ concurrency_groups: { 'bad name': 2 } }, {}, 'concurrency_groups.bad name'],
  ])('refuses %j %j naming %s', (extra, nodeExtra, path) => {
    const r = check(extra, nodeExtra);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.map((e) => e.path)).toContain(path);
  });

  it('checks group limits only where the coordinator\'s groups are known (the CLI does not know them)', () => {
    expect(check({ concurrency_group: 'elsewhere' }, {}, null).ok).toBe(true);
  });
});
