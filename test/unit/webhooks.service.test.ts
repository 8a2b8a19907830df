/**
 * The webhooks service (coordinator/webhooks/webhooks.ts) on a real engine (real state
 * files, fake agent channel) with a recording sender: nothing is sent before the state
 * store committed; a build's first event is its own; one event per state change (an
 * engine event without a change sends nothing); each hook gets what its filter wants,
 * the coordinator's for every build and a build's own for that build only; bodies carry
 * the delivery id and are signed with the hook's key; builds without hooks cost no
 * payload; stop() unsubscribes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../coordinator/builds/engine.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import type { AttemptOutcome } from '../../coordinator/webhooks/hook-queue.js';
import type { HttpAttempt } from '../../coordinator/webhooks/http-sender.js';
import { verifySignature } from '../../coordinator/webhooks/signature.js';
import { Webhooks, type WebhookDeps } from '../../coordinator/webhooks/webhooks.js';
import type { WebhookSettings } from '../../coordinator/webhooks/webhook-settings.js';
import { validateSpec } from '../../shared/index.js';
import { FakeChannel, finished, frame, hello, openEngine, tick } from '../helpers/engine-harness.js';

interface Sent {
  url: string;
  headers: Record<string, string>;
  body: { id: string; type: string; at: string; data: { id?: string; state?: string; build?: string; node?: { name: string; state: string } } };
  raw: string;
}

const SETTINGS: WebhookSettings = { hooks: [], allowedHosts: ['hooks.test'], timeoutMs: 1000, maxAttempts: 3, backoffBaseMs: 1, queueLimit: 100 };
const label = (s: Sent) => (s.body.type === 'build' ? `build:${s.body.data.state}` : `${s.body.data.node!.name}:${s.body.data.node!.state}`);

describe('webhooks service', () => {
  let dir: string;
  let engine: Engine;
  let store: StateStore;
  let logs: LogStorage;
  let sent: Sent[];
  let hooks: Webhooks | null;
  const now = 5_000_000;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-wh-svc-'));
    const o = await openEngine(dir, () => now);
    engine = o.engine;
    store = o.store;
    logs = o.logs;
    sent = [];
    hooks = null;
  });

  afterEach(async () => {
    await hooks?.stop();
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  const send = (a: HttpAttempt): Promise<AttemptOutcome> => {
    sent.push({ url: a.url, headers: a.headers, body: JSON.parse(a.body) as Sent['body'], raw: a.body });
    return Promise.resolve({ status: 204, error: null, retryAfter: null, durationMs: 1, response: '' });
  };

  async function open(settings: Partial<WebhookSettings>, deps: Partial<WebhookDeps> = {}): Promise<Webhooks> {
    hooks = await Webhooks.open({ ...SETTINGS, ...settings }, { engine, agents: engine.agents, durable: () => store.commit(), secrets: null, logger: pino({ level: 'silent' }), send, now: () => now, ...deps });
    return hooks;
  }

  function spec(nodes: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    const r = validateSpec({ name: 'wh', nodes, ...extra }, { form: 'submitted', defaultPlatform: 'linux/amd64', webhooks: { allowedHosts: ['hooks.test'] } });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  }

  /** Runs every node of the build to success on one fake agent. */
  async function runAll(buildId: string) {
    const ch = new FakeChannel();
    const out = await engine.hello(hello('a1'), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    const done = new Set<string>();
    for (let guard = 0; guard < 20; guard++) {
      await tick();
      if ((await engine.getBuild(buildId))?.state === 'success') break;
      for (const a of ch.assigns().filter((x) => !done.has(x.attempt_id))) {
        done.add(a.attempt_id);
        await engine.frame(out.entry, frame('started', { attempt_id: a.attempt_id, at: now }));
        await engine.frame(out.entry, frame('finished', finished(a.attempt_id, 'success')));
      }
    }
    await tick();
    await hooks!.idle();
  }

  it('sends after the commit, the build first, one event per state change, filtered per hook', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await open(
      {
        hooks: [
          { name: 'builds', url: 'https://ops.test/b', events: ['build'], secretFile: null },
          { name: 'failures', url: 'https://ops.test/f', events: ['node'], node_states: ['failed'], secretFile: null },
        ],
      },
      { durable: () => gate.then(() => store.commit()) },
    );
    const b = await engine.submit(spec({ a: { dockerfile_inline: 'FROM x' }, b: { dockerfile_inline: 'FROM x', needs: ['a'] } }, { notify: { webhooks: [{ url: 'https://hooks.test/own', events: ['build', 'node'] }] } }));
    await tick();
    expect(sent).toEqual([]); // held until the store says the changes are durable
    release();
    await runAll(b.id);

    const to = (url: string) => sent.filter((s) => s.url === url).map(label);
    expect(to('https://ops.test/b')).toEqual(['build:pending', 'build:running', 'build:success']);
    expect(to('https://ops.test/f')).toEqual([]);
    const own = to('https://hooks.test/own');
    expect(own[0]).toBe('build:pending');
    expect(own.at(-1)).toBe('build:success');
    expect(own.filter((l) => l.startsWith('a:'))).toEqual(['a:ready', 'a:assigned', 'a:running', 'a:success']);
    expect(own.filter((l) => l.startsWith('b:'))).toEqual(['b:ready', 'b:assigned', 'b:running', 'b:success']);
    expect(own.indexOf('b:ready')).toBeGreaterThan(own.indexOf('a:success'));
    for (const s of sent) {
      expect(s.headers['x-kiln-delivery']).toBe(s.body.id);
      expect(s.headers['x-kiln-event']).toBe(s.body.type);
      expect(s.headers['x-kiln-signature-256']).toBeUndefined();
    }
    expect(new Set(sent.map((s) => s.body.id)).size).toBe(sent.length);

    // The engine emitting again without a change: nothing more is sent.
    const before = sent.length;
    engine.emit('node', b.id, 'a');
    engine.emit('build', b.id);
    await tick();
    await hooks!.idle();
    expect(sent).toHaveLength(before);
    expect(hooks!.list().map((h) => [h.id, h.delivered])).toEqual([
      ['builds', 3],
      ['failures', 0],
      [`${b.id}:1`, own.length],
    ]);
  });

  it('signs with the hook key and sends nothing for builds no hook applies to', async () => {
    await open({ hooks: [] });
    const quiet = await engine.submit(spec({ a: { dockerfile_inline: 'FROM x' } }));
    await runAll(quiet.id);
    expect(sent).toEqual([]);
    expect(hooks!.list()).toEqual([]);
    await hooks!.stop();

    sent = [];
    const keyFile = join(dir, 'hook.secret');
    await writeFile(keyFile, 'k3y\n', { mode: 0o600 });
    hooks = await Webhooks.open(
      { ...SETTINGS, hooks: [{ name: 'signed', url: 'https://ops.test/s', events: ['build'], build_states: ['success'], secretFile: keyFile }] },
      { engine, agents: engine.agents, durable: () => store.commit(), secrets: { values: (names) => names.map((name) => ({ name, value: Buffer.from(`value-of-${name}`) })) }, logger: pino({ level: 'silent' }), send },
    );
    const b = await engine.submit(spec({ a: { dockerfile_inline: 'FROM x' } }, { notify: { webhooks: [{ url: 'https://hooks.test/own', secret: 'hook_key', build_states: ['success'] }] } }));
    await runAll(b.id);
    expect(sent.map(label)).toEqual(['build:success', 'build:success']);
    const own = sent.find((s) => s.url === 'https://hooks.test/own')!;
    expect(verifySignature(own.raw, 'value-of-hook_key', own.headers['x-kiln-signature-256'])).toBe(true);
    const ops = sent.find((s) => s.url === 'https://ops.test/s')!;
    expect(verifySignature(ops.raw, 'k3y', ops.headers['x-kiln-signature-256'])).toBe(true);

    // After stop() the engine's events reach nothing.
    await hooks.stop();
    const c = await engine.submit(spec({ a: { dockerfile_inline: 'FROM y' } }, { notify: { webhooks: [{ url: 'https://hooks.test/own' }] } }));
    await tick();
    expect(sent.filter((s) => s.body.data.id === c.id)).toEqual([]);
  });

  it("does not call a build's hook the coordinator no longer allows (restarted with a narrower allow-list)", async () => {
    // Submitted while hooks.test was allowed; the running service now allows only ops.test.
    await open({ allowedHosts: ['ops.test'] });
    const b = await engine.submit(spec({ a: { dockerfile_inline: 'FROM x' } }, { notify: { webhooks: [{ url: 'https://hooks.test/own', events: ['build', 'node'] }] } }));
    await runAll(b.id);
    expect(sent.filter((x) => x.url === 'https://hooks.test/own')).toEqual([]);
    expect(hooks!.list().map((h) => h.id)).toEqual([]);
  });
});
