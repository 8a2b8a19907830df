/**
 * The coordinator engine in process, with in-memory agent channels and a controllable
 * clock: dispatch order, DAG progression, failure cascade, rejections, fencing, lost
 * agents, reconnects, cancellation and recovery after a restart. The wire and Docker are
 * covered by the integration tests; here every state transition is checked directly.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../coordinator/builds/engine.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { validateSpec, type HelloPayload } from '../../shared/index.js';
import { FakeChannel, TIMINGS, finished, frame, hello, openEngine, tick } from '../helpers/engine-harness.js';

describe('engine', () => {
  let dir: string;
  let now: number;
  let store: StateStore;
  let engine: Engine;
  let logs: LogStorage;

  async function makeEngine(): Promise<Engine> {
    const o = await openEngine(dir, () => now);
    store = o.store;
    logs = o.logs;
    return o.engine;
  }

  function spec(nodes: Record<string, unknown>) {
    const r = validateSpec({ name: 't', nodes }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  }

  async function connect(name: string, opts: Partial<HelloPayload> = {}) {
    const ch = new FakeChannel();
    const out = await engine.hello(hello(name, opts), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    await tick();
    return { ch, entry: out.entry, resume: out.resume };
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-engine-'));
    now = 1_000_000;
    engine = await makeEngine();
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  const node = async (id: string, name: string) => (await engine.getBuild(id))!.nodes.find((n) => n.name === name)!;

  it('dispatches ready nodes, then dependents once every need succeeded', async () => {
    const { ch, entry } = await connect('a1');
    const b = await engine.submit(spec({ x: { dockerfile_inline: 'FROM a' }, y: { dockerfile_inline: 'FROM a' }, z: { dockerfile_inline: 'FROM a', needs: ['x', 'y'] } }));
    await tick();
    expect(ch.assigns().map((a) => a.node).sort()).toEqual(['x', 'y']);
    expect((await node(b.id, 'z')).state).toBe('pending');
    const [ax, ay] = ch.assigns();
    await engine.frame(entry, frame('started', { attempt_id: ax!.attempt_id, at: now }));
    expect((await node(b.id, ax!.node)).state).toBe('running');
    expect(b.state).toBe('running');
    await engine.frame(entry, frame('finished', finished(ax!.attempt_id, 'success')));
    await tick();
    expect((await node(b.id, 'z')).state).toBe('pending');
    const ack = await engine.frame(entry, frame('finished', finished(ay!.attempt_id, 'success')));
    expect(ack).toMatchObject({ attempt_id: ay!.attempt_id });
    await tick();
    const az = ch.assigns().find((a) => a.node === 'z')!;
    expect(az.image_tag).toBe(`kiln-build/${b.id}:z`);
    await engine.frame(entry, frame('finished', finished(az.attempt_id, 'success')));
    const done = (await engine.getBuild(b.id))!;
    expect(done.state).toBe('success');
    expect(done.finished_at).toBe(now);
  });

  it('skips everything downstream of a failure and ends partial when another leaf succeeded', async () => {
    const { ch, entry } = await connect('a1');
    const b = await engine.submit(
      spec({
        bad: { dockerfile_inline: 'FROM a' },
        mid: { dockerfile_inline: 'FROM a', needs: ['bad'] },
        leaf: { dockerfile_inline: 'FROM a', needs: ['mid'] },
        ok: { dockerfile_inline: 'FROM a' },
      }),
    );
    await tick();
    const byNode = Object.fromEntries(ch.assigns().map((a) => [a.node, a]));
    await engine.frame(entry, frame('finished', finished(byNode.bad!.attempt_id, 'failed', { exit_code: 3 })));
    expect((await node(b.id, 'mid')).state).toBe('skipped');
    expect((await node(b.id, 'leaf')).state).toBe('skipped');
    expect((await node(b.id, 'leaf')).reason).toMatch(/needs 'mid'/);
    expect(b.state).toBe('running');
    await engine.frame(entry, frame('finished', finished(byNode.ok!.attempt_id, 'success')));
    expect((await engine.getBuild(b.id))!.state).toBe('partial');
  });

  it('places nodes by exact platform and labels, least-loaded first', async () => {
    const big = await connect('big', { max_jobs: 4, platforms: [{ platform: 'linux/amd64', emulated: false }, { platform: 'linux/s390x', emulated: true }], labels: { gpu: 'true' } });
    const small = await connect('small', { max_jobs: 1 });
    await engine.submit(
      spec({
        z: { dockerfile_inline: 'FROM a', platform: 'linux/s390x', allow_emulation: true },
        g: { dockerfile_inline: 'FROM a', labels: { gpu: 'true' } },
        p1: { dockerfile_inline: 'FROM a' },
        p2: { dockerfile_inline: 'FROM a' },
        arm: { dockerfile_inline: 'FROM a', platform: 'linux/arm64' },
      }),
    );
    await tick();
    const onBig = big.ch.assigns().map((a) => a.node);
    const onSmall = small.ch.assigns().map((a) => a.node);
    expect(onBig).toContain('z');
    expect(onBig).toContain('g');
    expect(onSmall).toHaveLength(1); // one slot
    expect([...onBig, ...onSmall].sort()).toEqual(['g', 'p1', 'p2', 'z']);
    expect([...onBig, ...onSmall]).not.toContain('arm');
  });

  it('re-offers a rejected node elsewhere first, and fails it after three rejections', async () => {
    const a = await connect('a');
    const c = await connect('c');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const first = a.ch.assigns()[0]!;
    await engine.frame(a.entry, frame('reject', { attempt_id: first.attempt_id, reason: 'disk full' }));
    await tick();
    expect(a.ch.assigns()).toHaveLength(1); // another agent could take it
    const second = c.ch.assigns()[0]!;
    await engine.frame(c.entry, frame('reject', { attempt_id: second.attempt_id, reason: 'nope' }));
    await tick();
    // Both rejected it: offered again rather than left waiting forever.
    const third = [...a.ch.assigns(), ...c.ch.assigns()].filter((x) => x !== first && x !== second);
    expect(third).toHaveLength(1);
    const holder = a.ch.assigns().includes(third[0]!) ? a : c;
    await engine.frame(holder.entry, frame('reject', { attempt_id: third[0]!.attempt_id, reason: 'still no' }));
    const n = await node(b.id, 'n');
    expect(n.state).toBe('failed');
    expect(n.reason).toMatch(/rejected 3 times; last: rejected by agent .*: still no/);
    expect(n.attempts.map((x) => x.state)).toEqual(['rejected', 'rejected', 'rejected']);
  });

  it('fences frames for attempts that are not current on the sending agent', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    const other = await connect('other');
    const ack = await engine.frame(other.entry, frame('finished', finished(att.attempt_id, 'success')));
    expect(ack).toMatchObject({ attempt_id: att.attempt_id }); // acked so it stops resending...
    expect((await node(b.id, 'n')).state).toBe('assigned'); // ...but not applied
    await engine.frame(other.entry, frame('log', { attempt_id: att.attempt_id, seq: 0, offset: 0, data: Buffer.from('x') }));
    expect(other.ch.cancels()).toEqual([att.attempt_id]);
    expect((await node(b.id, 'n')).attempts[0]!.log_bytes).toBe(0);
  });

  it('acks log chunks with the written offset, ignoring duplicates and refusing gaps', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    const log = (offset: number, text: string) => engine.frame(a.entry, frame('log', { attempt_id: att.attempt_id, seq: 0, offset, data: Buffer.from(text) }));
    expect(await log(0, 'hello ')).toMatchObject({ log_offset: 6 });
    expect(await log(0, 'hello ')).toMatchObject({ log_offset: 6 });
    expect(await log(20, 'gap')).toMatchObject({ log_offset: 6 });
    expect(await log(6, 'world\n')).toMatchObject({ log_offset: 12 });
    await engine.frame(a.entry, frame('finished', finished(att.attempt_id, 'success', { log_bytes: 12 })));
    const sizes = await logs.nodeSizes(b.id, 'n', 1);
    expect((await logs.read(b.id, 'n', sizes, 0, sizes[0]!)).toString()).toBe('hello world\n');
  });

  it('re-queues a silent agent’s node, then fails it when its third attempt is lost too', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    now += TIMINGS.lostAfterMs + 1;
    await engine.sweep();
    expect(a.ch.closed?.code).toBe(4008);
    let n = await node(b.id, 'n');
    expect(n.state).toBe('ready');
    expect(n.attempts[0]!.state).toBe('lost');
    for (const name of ['c', 'd']) {
      const c = await connect(name);
      await tick();
      expect(c.ch.assigns()).toHaveLength(1);
      now += TIMINGS.lostAfterMs + 1;
      await engine.sweep();
    }
    n = await node(b.id, 'n');
    expect(n.state).toBe('failed');
    expect(n.attempts.map((x) => x.state)).toEqual(['lost', 'lost', 'lost']);
    expect(n.reason).toMatch(/^attempts exhausted: 3 infrastructure failures/);
    expect((await engine.getBuild(b.id))!.state).toBe('failed');
  });

  it('lets a reconnecting agent continue the attempts it reports, and releases the others at once', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ keep: { dockerfile_inline: 'FROM a' }, drop: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const byNode = Object.fromEntries(a.ch.assigns().map((x) => [x.node, x]));
    await engine.frame(a.entry, frame('log', { attempt_id: byNode.keep!.attempt_id, seq: 0, offset: 0, data: Buffer.from('12345') }));
    engine.disconnected(a.entry, a.ch);
    now += 1000; // within lost_after
    await engine.sweep();
    expect((await node(b.id, 'keep')).state).toBe('assigned');
    const again = await connect('a', { running: [{ attempt_id: byNode.keep!.attempt_id, log_bytes: 9 }, { attempt_id: 'a-unknown', log_bytes: 0 }] });
    expect(again.resume).toEqual(
      expect.arrayContaining([
        { attempt_id: byNode.keep!.attempt_id, action: 'continue', log_offset: 5 },
        { attempt_id: 'a-unknown', action: 'cancel', log_offset: 0 },
      ]),
    );
    const drop = await node(b.id, 'drop');
    expect(drop.attempts[0]!.state).toBe('lost');
    expect(drop.attempts[0]!.reason).toMatch(/reconnected without it/);
    // and it is dispatched again (to the same, now free, agent)
    expect(again.ch.assigns().map((x) => x.node)).toEqual(['drop']);
  });

  it('sends no assignment before the welcome went out', async () => {
    const ch = new FakeChannel();
    await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    const out = await engine.hello(hello('early'), ch);
    if (!out.ok) throw new Error(out.reason);
    await tick();
    expect(ch.assigns()).toHaveLength(0);
    engine.welcomed(out.entry, ch);
    await tick();
    expect(ch.assigns()).toHaveLength(1);
  });

  it('re-offers an assignment the agent never accepted', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const first = a.ch.assigns()[0]!;
    now += TIMINGS.acceptTimeoutMs - 1;
    await engine.sweep();
    expect((await node(b.id, 'n')).state).toBe('assigned');
    now += 2;
    await engine.sweep();
    await tick();
    expect(a.ch.cancels()).toContain(first.attempt_id);
    const n = await node(b.id, 'n');
    expect(n.attempts[0]!.state).toBe('lost');
    expect(n.attempts[0]!.reason).toMatch(/did not accept/);
    expect(n.state).toBe('assigned'); // offered again at once
    expect(a.ch.assigns()).toHaveLength(2);
  });

  it('refuses a second agent process with a connected agent’s name', async () => {
    await connect('dup');
    const out = await engine.hello(hello('dup', { session: 'another-session' }), new FakeChannel());
    expect(out.ok).toBe(false);
    if (!out.ok) expect(out.closeCode).toBe(4009);
  });

  it('cancels: queued nodes at once, running ones through their agent', async () => {
    const a = await connect('a', { max_jobs: 1 });
    const b = await engine.submit(spec({ run: { dockerfile_inline: 'FROM a' }, queued: { dockerfile_inline: 'FROM a' }, later: { dockerfile_inline: 'FROM a', needs: ['run'] } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    await engine.frame(a.entry, frame('started', { attempt_id: att.attempt_id, at: now }));
    await engine.cancel(b.id);
    expect(a.ch.cancels()).toEqual([att.attempt_id]);
    const build = (await engine.getBuild(b.id))!;
    expect(build.nodes.map((n) => n.state)).toEqual(['cancelled', 'cancelled', 'cancelled']);
    expect(build.state).toBe('cancelled');
    expect(build.nodes[0]!.attempts[0]!.state).toBe('cancelling');
    await engine.frame(a.entry, frame('finished', finished(att.attempt_id, 'cancelled')));
    expect((await node(b.id, 'run')).attempts[0]!.state).toBe('cancelled');
    await expect(engine.cancel(b.id)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(engine.cancel('b-missing')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });

  it('after a restart, waits the reconnect grace for the agent, then re-queues', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    await engine.frame(a.entry, frame('started', { attempt_id: att.attempt_id, at: now }));
    await store.commit();
    await engine.stop();
    await store.drain();
    engine = await makeEngine(); // same data dir: a "restarted" coordinator
    expect((await node(b.id, 'n')).state).toBe('running');
    now += TIMINGS.reconnectGraceMs - 1;
    await engine.sweep();
    expect((await node(b.id, 'n')).state).toBe('running');
    now += 2;
    await engine.sweep();
    const n = await node(b.id, 'n');
    expect(n.state).toBe('ready');
    expect(n.attempts[0]!.state).toBe('lost');
  });

  it('after a restart, adopts the attempt when the agent reclaims it in time', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    await store.commit();
    await engine.stop();
    await store.drain();
    engine = await makeEngine();
    const back = await connect('a', { running: [{ attempt_id: att.attempt_id, log_bytes: 0 }] });
    expect(back.resume).toEqual([{ attempt_id: att.attempt_id, action: 'continue', log_offset: 0 }]);
    await engine.frame(back.entry, frame('finished', finished(att.attempt_id, 'success')));
    const build = (await engine.getBuild(b.id))!;
    expect(build.state).toBe('success');
    expect(build.nodes[0]!.attempts).toHaveLength(1);
  });
});
