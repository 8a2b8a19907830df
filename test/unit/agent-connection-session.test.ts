/**
 * The coordinator's per-agent session (coordinator/agents/agent-session.ts) without a
 * socket: hello → engine → welcome, version negotiation, the hello deadline, invalid and
 * failing frames, heartbeat-ack thinning, and how the end of a connection reaches the
 * engine (the agent's own AGENT_SHUTDOWN close is a departure; anything else, or the echo of
 * a close this end started, is a drop). Then the engine's side of a departure: the agent
 * is logged as having left and is not waited for.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { AgentEntry } from '../../coordinator/placement/agent-registry.js';
import { AgentConnectionSession, type SessionEngine } from '../../coordinator/agents/agent-session.js';
import { CLOSE_CODES, decodeFrame, encodeFrame, PROTOCOL_VERSION, type Frame, type HelloPayload, type Payload } from '../../shared/index.js';
import { FakeChannel, hello, openEngine } from '../helpers/engine-harness.js';
import { ManualTimers } from '../helpers/manual-timers.js';

const HEARTBEAT_MS = 1000;
const LOST_MS = 3000;

function setup(engineOverrides: Partial<SessionEngine> = {}) {
  const timers = new ManualTimers();
  const sent: Frame[] = [];
  const link = { open: true, closes: [] as Array<{ code: number; reason: string }>, send: (b: Buffer) => void sent.push(decodeOk(b)), isOpen: () => link.open, close: (code: number, reason: string) => void link.closes.push({ code, reason }) };
  const entry = { name: 'a1' } as AgentEntry;
  const calls: string[] = [];
  const engine: SessionEngine = {
    hello: vi.fn(async () => ({ ok: true as const, entry, resume: [] })),
    welcomed: vi.fn(() => void calls.push('welcomed')),
    frame: vi.fn(async (_e: AgentEntry, f: Frame) => (f.type === 'heartbeat' || f.type === 'log' ? { ref: f.id } : null)),
    disconnected: vi.fn((_e: AgentEntry, _c: unknown, how?: 'dropped' | 'shutdown') => void calls.push(`disconnected ${how ?? 'dropped'}`)),
    ...engineOverrides,
  };
  const errors: string[] = [];
  const session = new AgentConnectionSession(link, {
    engine,
    heartbeatIntervalMs: HEARTBEAT_MS,
    lostAfterMs: LOST_MS,
    cutoffCancelMs: 60_000,
    helloTimeoutMs: 5000,
    timers,
    now: () => timers.now,
    coordinatorVersion: 'test',
  }, { warn: () => {}, error: (_o, msg) => void errors.push(msg) });
  return { timers, sent, link, entry, engine, calls, errors, session };
}

function decodeOk(b: Buffer): Frame {
  const d = decodeFrame(b, 'agent');
  if (!d.ok) throw new Error(d.error);
  return d.frame;
}

const enc = <T extends 'hello' | 'heartbeat' | 'log'>(type: T, payload: Payload<T>, v: number = PROTOCOL_VERSION, id = 1) => encodeFrame(type, id, payload, v);

async function welcomed(s: ReturnType<typeof setup>, h: HelloPayload = hello('a1')) {
  await s.session.received(enc('hello', h));
  expect(s.sent.map((f) => f.type)).toEqual(['welcome']);
}

describe('coordinator agent session', () => {
  it('answers a hello with the welcome the engine decided, then tells the engine it was sent', async () => {
    const s = setup();
    await welcomed(s);
    const w = s.sent[0]!.payload as Payload<'welcome'>;
    expect(w).toMatchObject({ protocol_version: PROTOCOL_VERSION, coordinator_version: 'test', agent_name: 'a1', heartbeat_interval_ms: HEARTBEAT_MS, lost_after_ms: LOST_MS, cutoff_cancel_ms: 60_000, resume: [] });
    expect(s.calls).toEqual(['welcomed']);
    expect(s.session.entry).toBe(s.entry);
    s.timers.advance(10_000); // the hello deadline no longer applies
    expect(s.link.closes).toEqual([]);
  });

  it('refuses a hello without a common protocol version, and anything but a hello first', async () => {
    const s = setup();
    await s.session.received(enc('hello', hello('a1', { protocol_versions: [99] })));
    expect(s.sent[0]!.type).toBe('error');
    expect((s.sent[0]!.payload as Payload<'error'>).code).toBe('E_PROTOCOL_VERSION');
    expect(s.link.closes[0]!.code).toBe(CLOSE_CODES.PROTOCOL_VERSION);
    expect(s.engine.hello).not.toHaveBeenCalled();

    const t = setup();
    await t.session.received(enc('heartbeat', { running: [] }));
    expect(t.link.closes[0]!.code).toBe(CLOSE_CODES.INVALID_FRAME);
  });

  it('closes a connection that says no hello in time', () => {
    const s = setup();
    s.timers.advance(4999);
    expect(s.link.closes).toEqual([]);
    s.timers.advance(1);
    expect(s.link.closes).toEqual([{ code: CLOSE_CODES.HELLO_TIMEOUT, reason: 'no hello received' }]);
  });

  it('answers invalid frames with an error and a frame the engine failed on by closing the session', async () => {
    const s = setup({ frame: async () => Promise.reject(new Error('boom')) });
    await welcomed(s);
    await s.session.received(Buffer.from([1, 2, 3]));
    expect(s.sent.at(-1)!.type).toBe('error');
    expect(s.link.closes).toEqual([]);
    await s.session.received(enc('heartbeat', { running: [] }, PROTOCOL_VERSION, 7));
    expect(s.sent.at(-1)!.payload).toMatchObject({ code: 'E_INTERNAL', ref: 7 });
    expect(s.link.closes[0]!.code).toBe(CLOSE_CODES.INTERNAL_ERROR);
    expect(s.errors).toEqual(['handling a frame failed; closing the session']);
  });

  it('acks every log frame, and a heartbeat only when the agent would otherwise not hear from it in time', async () => {
    const s = setup();
    await welcomed(s);
    await s.session.received(enc('heartbeat', { running: [] }));
    expect(s.sent.map((f) => f.type)).toEqual(['welcome']); // the welcome just went out
    s.timers.advance(1500);
    await s.session.received(enc('heartbeat', { running: [] }));
    expect(s.sent.map((f) => f.type)).toEqual(['welcome', 'ack']);
    await s.session.received(enc('log', { attempt_id: 'x', seq: 0, offset: 0, data: Buffer.from('hi') }));
    expect(s.sent.map((f) => f.type)).toEqual(['welcome', 'ack', 'ack']);
  });

  it("tells the engine the agent left on its own AGENT_SHUTDOWN close, and that it dropped otherwise", async () => {
    const left = setup();
    await welcomed(left);
    left.session.closed(CLOSE_CODES.AGENT_SHUTDOWN);
    left.session.closed(CLOSE_CODES.AGENT_SHUTDOWN); // once only
    expect(left.calls).toEqual(['welcomed', 'disconnected shutdown']);

    // GOING_AWAY is what a proxy in between sends when it restarts: the agent may still be running builds.
    const proxied = setup();
    await welcomed(proxied);
    proxied.session.closed(CLOSE_CODES.GOING_AWAY);
    expect(proxied.calls).toEqual(['welcomed', 'disconnected dropped']);

    const reset = setup();
    await welcomed(reset);
    reset.session.closed(CLOSE_CODES.ABNORMAL);
    expect(reset.calls).toEqual(['welcomed', 'disconnected dropped']);

    // The coordinator shutting down closes with GOING_AWAY too; the agent's echo is no departure.
    const echoed = setup();
    await welcomed(echoed);
    echoed.session.close(CLOSE_CODES.GOING_AWAY, 'coordinator shutting down');
    echoed.session.closed(CLOSE_CODES.GOING_AWAY);
    expect(echoed.calls).toEqual(['welcomed', 'disconnected dropped']);
  });

  it('engine: an agent that shut down cleanly is logged as having left, not lost later', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-session-'));
    let now = 1_000_000;
    const { engine, store, logs } = await openEngine(dir, () => now);
    try {
      const log = engine.internals.log;
      const info = vi.spyOn(log, 'info');
      const warn = vi.spyOn(log, 'warn');
      for (const [name, how] of [['leaver', 'shutdown'], ['dropper', 'dropped']] as const) {
        const ch = new FakeChannel();
        const out = await engine.hello(hello(name), ch);
        if (!out.ok) throw new Error(out.reason);
        engine.welcomed(out.entry, ch);
        engine.disconnected(out.entry, ch, how);
      }
      expect(info.mock.calls.map((c) => c[1])).toContain('agent leaver left (shut down)');
      expect(engine.agents.get('leaver')?.state).toBe('disconnected');
      expect(engine.agents.get('dropper')?.state).toBe('disconnected');
      now += 10_000;
      await engine.sweep();
      const warned = warn.mock.calls.map((c) => String(c[1]));
      expect(warned.some((m) => m.includes('dropper'))).toBe(true);
      expect(warned.some((m) => m.includes('leaver'))).toBe(false);
    } finally {
      await engine.stop();
      await store.drain();
      await logs.closeAll();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
