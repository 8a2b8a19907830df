/**
 * Nothing is done twice because of a crash between a decision and its write: an
 * assignment reaches its agent only once its attempt is in the journal on disk (a
 * coordinator killed in between restarts knowing the attempt, so the agent's report is
 * adopted, never re-run); a build cancelled before the assignment went out finishes the
 * attempt at once without bothering the agent; and an agent that reconnects still holding
 * an attempt whose result was recorded (the ack was lost) is told to resend it (and is
 * acked), not to cancel work that was kept. Ids shaped like Object.prototype members
 * reach nothing.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../coordinator/builds/engine.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { validateSpec, type HelloPayload, type Payload, type ToAgentType } from '../../shared/index.js';
import { FakeChannel, finished, frame, hello, openEngine, TEST_STATE, tick } from '../helpers/engine-harness.js';

// These two look into the embedded journal file; a PostgreSQL commit is checked in the database by state-pg.test.ts.
const embeddedOnly = it.skipIf(TEST_STATE !== 'embedded');

/** A channel that checks, the moment an assignment is sent, that its attempt is already in the journal file. */
class DurabilityCheckingChannel extends FakeChannel {
  notDurable: string[] = [];
  constructor(private readonly journalPath: string) {
    super();
  }
  override send<T extends ToAgentType>(type: T, payload: Payload<T>): void {
    if (type === 'assign') {
      const id = (payload as Payload<'assign'>).attempt_id;
      // The attempt id as a JSON string anywhere in the journal (a delta entry carries it in a tuple, not as "id").
      if (!readFileSync(this.journalPath, 'utf8').includes(JSON.stringify(id))) this.notDurable.push(id);
    }
    super.send(type, payload);
  }
}

describe('engine: durable before it is said', () => {
  let dir: string;
  let now: number;
  let store: StateStore;
  let engine: Engine;
  let logs: LogStorage;

  const spec = (nodes: Record<string, unknown>) => {
    const r = validateSpec({ name: 't', nodes }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  };

  /** Says hello (and is welcomed) on a new channel, as the agent process `h.session`. */
  async function connect<C extends FakeChannel = FakeChannel>(h: HelloPayload, ch: C = new FakeChannel() as C) {
    const out = await engine.hello(h, ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    return { ch, entry: out.entry, resume: out.resume };
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-durable-'));
    now = 1_000_000;
    const o = await openEngine(dir, () => now);
    ({ engine, store, logs } = o);
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  embeddedOnly('sends an assignment only once its attempt is in the journal on disk', async () => {
    const { ch, entry } = await connect(hello('a1', { max_jobs: 8 }), new DurabilityCheckingChannel(store.journalPath));
    const nodes: Record<string, unknown> = {};
    for (let i = 0; i < 20; i++) nodes[`n${i}`] = { dockerfile_inline: `FROM a\nRUN echo ${i}` };
    await engine.submit(spec(nodes));
    await tick();
    expect(ch.assigns()).toHaveLength(8);
    expect(ch.notDurable).toEqual([]);
    for (const a of ch.assigns()) await engine.frame(entry, frame('finished', finished(a.attempt_id, 'success')));
    await tick();
    expect(ch.assigns()).toHaveLength(16);
    expect(ch.notDurable).toEqual([]);
  });

  it('finishes an attempt cancelled before its assignment went out, without a word to the agent', async () => {
    const b = await engine.submit(spec({ x: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const { ch, entry } = await connect(hello('a1'));
    // placement runs on the next turn; the cancel lands while its commit is in flight
    await new Promise((r) => setImmediate(r));
    const node = (await engine.getBuild(b.id))!.nodes[0]!;
    expect(node.state).toBe('assigned');
    await engine.cancel(b.id);
    await tick();
    expect(ch.assigns()).toEqual([]);
    expect(ch.cancels()).toEqual([]);
    expect(node.attempts[0]!.state).toBe('cancelled');
    expect(entry.running.size).toBe(0);
    expect((await engine.getBuild(b.id))!.state).toBe('cancelled');
  });

  it('tells an agent that reconnects holding a recorded finished attempt to resend it, and acks it', async () => {
    const h = hello('a1');
    const { ch, entry } = await connect(h);
    const b = await engine.submit(spec({ x: { dockerfile_inline: 'FROM a' }, y: { dockerfile_inline: 'FROM a', needs: ['x'] } }));
    await tick();
    const ax = ch.assigns()[0]!;
    await engine.frame(entry, frame('started', { attempt_id: ax.attempt_id, at: now }));
    await engine.frame(entry, frame('finished', finished(ax.attempt_id, 'success', { log_bytes: 10 })));
    // the ack was lost: the agent reconnects still holding x's finished attempt
    engine.disconnected(entry, ch);
    const ch2 = new FakeChannel();
    const again = await engine.hello({ ...h, running: [{ attempt_id: ax.attempt_id, log_bytes: 10 }] }, ch2);
    if (!again.ok) throw new Error(again.reason);
    expect(again.resume).toEqual([{ attempt_id: ax.attempt_id, action: 'continue', log_offset: 10 }]);
    engine.welcomed(again.entry, ch2);
    const ack = await engine.frame(again.entry, frame('finished', finished(ax.attempt_id, 'success', { log_bytes: 10 })));
    expect(ack).toMatchObject({ attempt_id: ax.attempt_id });
    await tick();
    // x ran once, and y was dispatched once
    const build = (await engine.getBuild(b.id))!;
    expect(build.nodes[0]!.attempts).toHaveLength(1);
    expect(ch2.assigns().map((a) => a.node).concat(ch.assigns().map((a) => a.node)).filter((n) => n === 'x')).toEqual(['x']);
    // an attempt it never recorded is still to be cancelled
    const ch3 = new FakeChannel();
    engine.disconnected(again.entry, ch2);
    const third = await engine.hello({ ...h, running: [{ attempt_id: 'a-unknown', log_bytes: 0 }] }, ch3);
    if (!third.ok) throw new Error(third.reason);
    expect(third.resume.find((r) => r.attempt_id === 'a-unknown')).toMatchObject({ action: 'cancel' });
  });

  embeddedOnly('acks a resent finished only once the first copy of the result is on disk', async () => {
    const h = hello('a1');
    const { ch, entry } = await connect(h);
    await engine.submit(spec({ x: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const ax = ch.assigns()[0]!;
    await engine.frame(entry, frame('started', { attempt_id: ax.attempt_id, at: now }));
    // hold the next journal write (O_DSYNC: durable when it returns) until released
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let synced = false;
    // the embedded backend's JournalWriter owns the journal file handle
    const s = (store as unknown as { backend: { journal: { journalHandle: () => Promise<{ write(t: string): Promise<unknown>; datasync(): Promise<void>; truncate(n: number): Promise<void> }> } } }).backend.journal;
    const original = s.journalHandle.bind(s);
    s.journalHandle = async () => {
      const fh = await original();
      return { write: async (t: string) => (await gate, await fh.write(t), (synced = true)) as never, truncate: (n: number) => fh.truncate(n), datasync: () => fh.datasync() };
    };
    const first = engine.frame(entry, frame('finished', finished(ax.attempt_id, 'success')));
    let ackedEarly: boolean;
    let resend: Promise<unknown>;
    try {
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      // the connection drops before the ack; the agent comes back holding its result
      engine.disconnected(entry, ch);
      const again = await engine.hello({ ...h, running: [{ attempt_id: ax.attempt_id, log_bytes: 0 }] }, new FakeChannel());
      if (!again.ok) throw new Error(again.reason);
      expect(again.resume).toMatchObject([{ attempt_id: ax.attempt_id, action: 'continue' }]);
      let acked = false;
      resend = engine.frame(again.entry, frame('finished', finished(ax.attempt_id, 'success'))).then((a) => ((acked = true), a));
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      ackedEarly = acked;
    } finally {
      release();
    }
    expect(ackedEarly).toBe(false);
    expect(await resend).toMatchObject({ attempt_id: ax.attempt_id });
    expect(synced).toBe(true);
    await first;
    s.journalHandle = original;
  });

  it('finishes a cancelling attempt when its agent reconnects and is told to drop it (no wait for the cancel grace)', async () => {
    const h = hello('a1');
    const { ch, entry } = await connect(h);
    const b = await engine.submit(spec({ x: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const ax = ch.assigns()[0]!;
    await engine.frame(entry, frame('started', { attempt_id: ax.attempt_id, at: now }));
    await engine.cancel(b.id);
    expect((await engine.getBuild(b.id))!.nodes[0]!.attempts[0]!.state).toBe('cancelling');
    engine.disconnected(entry, ch);
    const again = await engine.hello({ ...h, running: [{ attempt_id: ax.attempt_id, log_bytes: 0 }] }, new FakeChannel());
    if (!again.ok) throw new Error(again.reason);
    expect(again.resume).toEqual([{ attempt_id: ax.attempt_id, action: 'cancel', log_offset: 0 }]);
    const attempt = (await engine.getBuild(b.id))!.nodes[0]!.attempts[0]!;
    expect(attempt.state).toBe('cancelled');
    expect(again.entry.running.size).toBe(0);
  });

  it('answers ids shaped like Object.prototype members as unknown, and changes nothing', async () => {
    for (const id of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
      await expect(engine.cancel(id)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
      expect(await engine.setPinned(id, true)).toBeNull();
      await expect(engine.retryNode(id, 'x')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
      expect(await engine.getBuild(id)).toBeNull();
      expect(engine.buildSummary(id)).toBeNull();
      expect(engine.agentControl(id)).toBeUndefined();
      await expect(engine.setAgentControl(id, 'paused', null)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    }
    const plain = {} as Record<string, unknown>;
    expect(plain.cancel_requested).toBeUndefined();
    expect(plain.pinned).toBeUndefined();
  });
});
