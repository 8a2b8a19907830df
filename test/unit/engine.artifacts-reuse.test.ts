/**
 * The engine's artifact life cycle in process (real files: state, CAS, reuse index; fake
 * agent channels): inputs resolved from upstream outputs, outputs checked against the
 * CAS, provenance records stored, reuse of an identical node's result, invalidation when
 * an input or a base image changes, `--no-reuse`, shared execution of two identical
 * nodes at once (and what happens to the follower when the leader fails or is lost).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../coordinator/builds/engine.js';
import type { Cas } from '../../coordinator/cas/cas.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { sha256, validateSpec, type Digest, type Payload } from '../../shared/index.js';
import { FakeChannel, TIMINGS, finished, frame, hello, openEngine, tick } from '../helpers/engine-harness.js';

const BUSYBOX = { ref: 'kiln/busybox:1', digest: sha256('busybox v1') };

describe('engine: artifacts and reuse', () => {
  let dir: string;
  let store: StateStore;
  let engine: Engine;
  let logs: LogStorage;
  let cas: Cas;
  let now: number;

  async function makeEngine(): Promise<void> {
    ({ engine, store, logs, cas } = await openEngine(dir, () => now));
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-engine-art-'));
    now = 1_000_000;
    await makeEngine();
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  function spec(nodes: Record<string, unknown>) {
    const r = validateSpec({ name: 't', nodes }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  }

  async function connect(name: string) {
    const ch = new FakeChannel();
    const out = await engine.hello(hello(name, { executor: 'docker', session: `${name}-s` }), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    await tick();
    return { ch, entry: out.entry };
  }

  /** Stores `text` as a blob and returns an output artifact for it. */
  async function artifact(name: string, text: string): Promise<Payload<'finished'>['outputs'][number]> {
    const bytes = Buffer.from(text);
    const digest = sha256(bytes);
    await cas.putBuffer(digest, bytes);
    return { name, digest, size: bytes.length, media_type: 'application/vnd.kiln.artifact.v1.tar' };
  }

  const nodeOf = async (id: string, name: string) => (await engine.getBuild(id))!.nodes.find((n) => n.name === name)!;

  type Agent = Awaited<ReturnType<typeof connect>>;
  /** Plays an agent: resolve with `bases`, expect proceed, start, finish with `outputs`. */
  async function build(a: Agent, assign: Payload<'assign'>, outputs: Payload<'finished'>['outputs'] = [], bases = [BUSYBOX]) {
    await engine.frame(a.entry, frame('resolved', { attempt_id: assign.attempt_id, base_images: bases, dockerfile_digest: sha256('df') }));
    expect(a.ch.sent.some((s) => s.type === 'proceed' && s.payload.attempt_id === assign.attempt_id)).toBe(true);
    await engine.frame(a.entry, frame('started', { attempt_id: assign.attempt_id, at: now }));
    await engine.frame(a.entry, frame('finished', finished(assign.attempt_id, 'success', { outputs, base_images: bases })));
    await tick();
  }

  /** The agent reports the base images it resolved for `attempt_id` (default: BUSYBOX). */
  const resolved = (a: Agent, attempt_id: string, bases = [BUSYBOX]) => engine.frame(a.entry, frame('resolved', { attempt_id, base_images: bases, dockerfile_digest: null }));

  const lastAssign = (a: Agent, node: string) => a.ch.assigns().filter((x) => x.node === node).at(-1)!;

  const pipeline = {
    runtime: { dockerfile_inline: 'FROM kiln/busybox:1\nRUN make-runtime', outputs: { runtime: '/opt/python' } },
    wheel: {
      dockerfile_inline: 'FROM kiln/busybox:1\nRUN --mount=type=bind,from=runtime,target=/opt/python build-wheel',
      inputs: { runtime: { from: 'runtime.runtime', mount: '/opt/python', env: { PATH: '/opt/python/bin:$PATH' } } },
      outputs: { wheel: '/out' },
    },
  };

  it('passes upstream outputs as inputs, checks outputs are in the CAS, and stores provenance', async () => {
    const a = await connect('a1');
    const b = await engine.submit(spec(pipeline));
    await tick();
    const ra = lastAssign(a, 'runtime');
    expect(ra.resolve).toBe(true);
    expect(ra.outputs).toEqual([{ name: 'runtime', path: '/opt/python' }]);
    const rt = await artifact('runtime', 'python runtime v1');
    await build(a, ra, [rt]);
    const wa = lastAssign(a, 'wheel');
    expect(wa.inputs).toEqual([{ name: 'runtime', digest: rt.digest, mount: '/opt/python', env: { PATH: '/opt/python/bin:$PATH' } }]);
    const wh = await artifact('wheel', 'wheel v1');
    await build(a, wa, [wh]);
    expect(b.state).toBe('success');

    const wheel = await nodeOf(b.id, 'wheel');
    const att = wheel.attempts[0]!;
    expect(att.outputs).toEqual([wh]);
    expect(att.key).toMatch(/^sha256:/);
    const prov = JSON.parse((await cas.readBuffer(att.provenance as Digest)).toString()) as Record<string, unknown>;
    expect(prov).toMatchObject({
      node: 'wheel',
      platform: 'linux/amd64',
      inputs: [{ name: 'runtime', digest: rt.digest, from: 'runtime.runtime', mount: '/opt/python' }],
      base_images: [BUSYBOX],
      outputs: [wh],
      idempotency_key: att.key,
      spec_digest: att.spec_digest,
      agent: { name: 'a1' },
      attempt: { status: 'success' },
    });
    expect(sha256(await cas.readBuffer(att.provenance as Digest))).toBe(att.provenance);
  });

  it('fails a successful attempt whose declared output was not uploaded', async () => {
    const a = await connect('a1');
    const b = await engine.submit(spec({ runtime: pipeline.runtime }));
    await tick();
    const missing = { name: 'runtime', digest: sha256('never uploaded'), size: 3, media_type: 'x' };
    await build(a, lastAssign(a, 'runtime'), [missing]);
    const n = await nodeOf(b.id, 'runtime');
    expect(n.state).toBe('failed');
    expect(n.attempts[0]!.error).toContain("output 'runtime'");
    expect(n.attempts[0]!.error).toContain('was not uploaded');
    expect(b.state).toBe('failed');
  });

  it('reuses an identical earlier node, rebuilds when an input or a base image changes, and not with --no-reuse', async () => {
    const a = await connect('a1');
    const rt = await artifact('runtime', 'runtime v1');
    const wh = await artifact('wheel', 'wheel v1');
    const first = await engine.submit(spec(pipeline));
    await tick();
    await build(a, lastAssign(a, 'runtime'), [rt]);
    await build(a, lastAssign(a, 'wheel'), [wh]);
    expect(first.state).toBe('success');

    // Same spec again: both nodes are reused after the agent resolved them; nothing builds.
    const second = await engine.submit(spec(pipeline));
    await tick();
    const r2 = lastAssign(a, 'runtime');
    expect(r2.build_id).toBe(second.id);
    await resolved(a, r2.attempt_id);
    await tick();
    expect(a.ch.cancels()).toContain(r2.attempt_id);
    const w2 = lastAssign(a, 'wheel');
    expect(w2.build_id).toBe(second.id);
    expect(w2.inputs[0]!.digest).toBe(rt.digest);
    await resolved(a, w2.attempt_id);
    await tick();
    expect(second.state).toBe('success');
    const reusedWheel = await nodeOf(second.id, 'wheel');
    expect(reusedWheel.reused_from).toMatchObject({ build_id: first.id, node: 'wheel' });
    expect(reusedWheel.attempts[0]!.state).toBe('reused');
    expect(reusedWheel.attempts[0]!.outputs).toEqual([wh]);

    // The upstream produces a different runtime: the wheel's input changed, so it builds.
    const third = await engine.submit(spec(pipeline), { reuse: true });
    await tick();
    const r3 = lastAssign(a, 'runtime');
    const rt2 = await artifact('runtime', 'runtime v2');
    // A new base image id invalidates the runtime node's key too.
    await build(a, r3, [rt2], [{ ref: 'kiln/busybox:1', digest: sha256('busybox v2') }]);
    const w3 = lastAssign(a, 'wheel');
    expect(w3.build_id).toBe(third.id);
    expect(w3.inputs[0]!.digest).toBe(rt2.digest);
    await build(a, w3, [await artifact('wheel', 'wheel v2')]);
    expect((await nodeOf(third.id, 'wheel')).reused_from ?? null).toBeNull();
    expect((await nodeOf(third.id, 'runtime')).reused_from ?? null).toBeNull();

    // --no-reuse: the assignment does not ask to resolve, and the node builds.
    const fourth = await engine.submit(spec(pipeline), { reuse: false });
    await tick();
    const r4 = lastAssign(a, 'runtime');
    expect(r4.build_id).toBe(fourth.id);
    expect(r4.resolve).toBe(false);
  });

  it('does not reuse a result whose outputs were deleted from the CAS', async () => {
    const a = await connect('a1');
    const rt = await artifact('runtime', 'runtime gone soon');
    const first = await engine.submit(spec({ runtime: pipeline.runtime }));
    await tick();
    await build(a, lastAssign(a, 'runtime'), [rt]);
    expect(first.state).toBe('success');
    await cas.delete(rt.digest as Digest);
    await engine.submit(spec({ runtime: pipeline.runtime }));
    await tick();
    const again = lastAssign(a, 'runtime');
    await resolved(a, again.attempt_id);
    expect(a.ch.sent.some((s) => s.type === 'proceed' && s.payload.attempt_id === again.attempt_id)).toBe(true);
  });

  it('shares one execution between two identical nodes submitted at once', async () => {
    const a = await connect('a1');
    const b1 = await engine.submit(spec({ runtime: pipeline.runtime }));
    const b2 = await engine.submit(spec({ runtime: pipeline.runtime }));
    await tick();
    const [x1, x2] = a.ch.assigns().filter((x) => x.node === 'runtime');
    await resolved(a, x1!.attempt_id);
    await resolved(a, x2!.attempt_id);
    expect(a.ch.sent.filter((s) => s.type === 'proceed').map((s) => s.payload.attempt_id)).toEqual([x1!.attempt_id]);
    expect(a.ch.cancels()).toContain(x2!.attempt_id);
    const follower = await nodeOf(b2.id, 'runtime');
    expect(follower.state).toBe('running');
    expect(follower.waiting_on).toBe(x1!.attempt_id);

    const rt = await artifact('runtime', 'shared runtime');
    await engine.frame(a.entry, frame('started', { attempt_id: x1!.attempt_id, at: now }));
    await engine.frame(a.entry, frame('finished', finished(x1!.attempt_id, 'success', { outputs: [rt], base_images: [BUSYBOX] })));
    await tick();
    expect(b1.state).toBe('success');
    expect(b2.state).toBe('success');
    const done = await nodeOf(b2.id, 'runtime');
    expect(done.reused_from).toMatchObject({ build_id: b1.id, attempt_id: x1!.attempt_id });
    expect(done.attempts.at(-1)!.outputs).toEqual([rt]);
    expect(a.ch.assigns().filter((x) => x.node === 'runtime')).toHaveLength(2);
  });

  it('fails the follower when the shared build fails, and re-queues it when the leader is lost', async () => {
    const a = await connect('a1');
    const b1 = await engine.submit(spec({ runtime: pipeline.runtime }));
    const b2 = await engine.submit(spec({ runtime: pipeline.runtime }));
    await tick();
    const [x1, x2] = a.ch.assigns().filter((x) => x.node === 'runtime');
    for (const x of [x1!, x2!]) await resolved(a, x.attempt_id);
    await engine.frame(a.entry, frame('finished', finished(x1!.attempt_id, 'failed')));
    await tick();
    expect(b1.state).toBe('failed');
    const f = await nodeOf(b2.id, 'runtime');
    expect(f.state).toBe('failed');
    expect(f.reason).toContain(`identical node 'runtime' of build ${b1.id} failed`);

    // Leader lost (agent silent): the follower is queued again and builds itself.
    const b3 = await engine.submit(spec({ runtime: { ...pipeline.runtime, build_args: { V: '2' } } }));
    const b4 = await engine.submit(spec({ runtime: { ...pipeline.runtime, build_args: { V: '2' } } }));
    await tick();
    const [y1, y2] = a.ch.assigns().filter((x) => x.build_id === b3.id || x.build_id === b4.id);
    for (const y of [y1!, y2!]) await resolved(a, y.attempt_id);
    expect((await nodeOf(b4.id, 'runtime')).waiting_on).toBe(y1!.attempt_id);
    now += TIMINGS.lostAfterMs + 1;
    await engine.sweep();
    await tick();
    const f4 = await nodeOf(b4.id, 'runtime');
    expect(f4.waiting_on ?? null).toBeNull();
    expect(['ready', 'assigned']).toContain(f4.state);
  });

  it('fails a node at once when an upstream output it needs is missing', async () => {
    const a = await connect('a1');
    // The upstream declares the output but the agent is an old one reporting none: the
    // engine refuses the success, so the wheel is skipped rather than built without its input.
    const b = await engine.submit(spec(pipeline));
    await tick();
    await build(a, lastAssign(a, 'runtime'), []);
    expect((await nodeOf(b.id, 'runtime')).state).toBe('failed');
    expect((await nodeOf(b.id, 'wheel')).state).toBe('skipped');
  });

  it('keeps shared executions across a coordinator restart', async () => {
    const a = await connect('a1');
    const b1 = await engine.submit(spec({ runtime: pipeline.runtime }));
    const b2 = await engine.submit(spec({ runtime: pipeline.runtime }));
    await tick();
    const [x1, x2] = a.ch.assigns().filter((x) => x.node === 'runtime');
    for (const x of [x1!, x2!]) await resolved(a, x.attempt_id);
    await store.drain();
    await engine.stop();
    await logs.closeAll();
    await makeEngine();
    const ch = new FakeChannel();
    const out = await engine.hello(hello('a1', { executor: 'docker', session: 'a1-s', running: [{ attempt_id: x1!.attempt_id, log_bytes: 0 }] }), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    const rt = await artifact('runtime', 'after restart');
    await engine.frame(out.entry, frame('finished', finished(x1!.attempt_id, 'success', { outputs: [rt], base_images: [BUSYBOX] })));
    await tick();
    expect((await engine.getBuild(b1.id))!.state).toBe('success');
    const f = await nodeOf(b2.id, 'runtime');
    expect(f.state).toBe('success');
    expect(f.reused_from).toMatchObject({ attempt_id: x1!.attempt_id });
  });
});
