/**
 * The coordinator's build spans (coordinator/tracing/build-spans.ts) from the real engine
 * in process, with a recording tracer: one trace per build, a root span per build, a span
 * per node, queue wait and attempt with the parents, times and attributes the records
 * hold; the traceparent in the assign frame names the attempt span; a restarted
 * coordinator records the rest of the build into the same trace under the same parents.
 * Also the shared helpers: derived ids, traceparent parsing, phase spans, and that an
 * engine without tracing sends no traceparent.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../coordinator/builds/engine.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { BuildTracing } from '../../coordinator/tracing/build-spans.js';
import { parseTraceparent, PhaseSpans, spanIdOf, traceIdOf, traceparent, validateSpec, type SpanAttributes, type SpanHandle, type SpanStart, type Tracer } from '../../shared/index.js';
import { FakeChannel, finished, frame, hello, openEngine, tick } from '../helpers/engine-harness.js';

interface Recorded {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  start: number | undefined;
  end: number | null;
  error: string | null;
  attributes: Record<string, unknown>;
}

/** A Tracer that records spans as the SDK would: ids from the start request (or counted), parent from the traceparent. */
class RecordingTracer implements Tracer {
  readonly spans: Recorded[] = [];
  private n = 0;

  startSpan(s: SpanStart): SpanHandle {
    const parent = s.parent === null ? null : parseTraceparent(s.parent);
    if (s.parent !== null && parent === null) throw new Error(`bad traceparent ${s.parent}`);
    const rec: Recorded = {
      name: s.name,
      traceId: parent?.traceId ?? s.traceId ?? 'f'.repeat(32),
      spanId: s.spanId ?? (++this.n).toString(16).padStart(16, '0'),
      parentSpanId: parent?.spanId ?? null,
      start: s.startTime,
      end: null,
      error: null,
      attributes: { ...s.attributes },
    };
    return {
      setAttributes: (a: SpanAttributes) => Object.assign(rec.attributes, a),
      fail: (m) => (rec.error = m),
      end: (t) => {
        if (rec.end !== null) return;
        rec.end = t ?? -1;
        this.spans.push(rec);
      },
    };
  }

  async shutdown(): Promise<void> {}

  named(name: string): Recorded[] {
    return this.spans.filter((s) => s.name === name);
  }
}

describe('build spans from the engine', () => {
  let dir: string;
  let now: number;
  let store: StateStore;
  let logs: LogStorage;
  let engine: Engine;
  let tracer: RecordingTracer;

  async function makeEngine(tracing: BuildTracing | null): Promise<Engine> {
    const o = await openEngine(dir, () => now, { tracing });
    store = o.store;
    logs = o.logs;
    return o.engine;
  }

  function spec(nodes: Record<string, unknown>) {
    const r = validateSpec({ name: 'traced', nodes }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  }

  async function connect(name: string, running: Array<{ attempt_id: string; log_bytes: number }> = []) {
    const ch = new FakeChannel();
    const out = await engine.hello(hello(name, { running }), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    await tick();
    return { ch, entry: out.entry };
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-tracing-'));
    now = 1_000_000;
    tracer = new RecordingTracer();
    engine = await makeEngine(new BuildTracing(tracer));
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('records a trace per build: root, nodes, queue waits and attempts, linked and timed from the records', async () => {
    const b = await engine.submit(spec({ x: { dockerfile_inline: 'FROM a' }, y: { dockerfile_inline: 'FROM a', needs: ['x'] }, z: { dockerfile_inline: 'FROM a' } }));
    now += 50; // x and z wait 50 ms for an agent
    const a = await connect('a1');
    const [ax, az] = a.ch.assigns();
    const traceId = traceIdOf(b.id);
    // the assign frame names the attempt span
    expect(parseTraceparent(ax!.traceparent!)).toEqual({ traceId, spanId: spanIdOf(ax!.attempt_id), sampled: true });
    expect(tracer.named('queue wait').map((s) => [s.attributes['kiln.node'], s.end! - s.start!])).toEqual([
      ['x', 50],
      ['z', 50],
    ]);
    now += 100;
    await engine.frame(a.entry, frame('started', { attempt_id: ax!.attempt_id, at: now }));
    await engine.frame(a.entry, frame('finished', finished(ax!.attempt_id, 'success')));
    await engine.frame(a.entry, frame('finished', finished(az!.attempt_id, 'failed', { exit_code: 3, error: 'RUN exit 3', failed_step: 'RUN exit 3' })));
    await tick();
    const ay = a.ch.assigns()[2]!;
    now += 10;
    await engine.frame(a.entry, frame('finished', finished(ay.attempt_id, 'success')));
    await tick();

    expect(new Set(tracer.spans.map((s) => s.traceId))).toEqual(new Set([traceId]));
    const [root] = tracer.named('build traced');
    expect(root).toMatchObject({ spanId: spanIdOf(b.id), parentSpanId: null, start: b.created_at, end: now, error: '1 node failed' });
    expect(root!.attributes).toMatchObject({ 'kiln.build.id': b.id, 'kiln.build.state': 'partial', 'kiln.nodes': 3, 'kiln.nodes.failed': 1 });
    for (const [name, attempt] of [
      ['x', ax!],
      ['y', ay],
      ['z', az!],
    ] as const) {
      const nodeSpans = tracer.named(`node ${name}`);
      expect(nodeSpans).toHaveLength(1);
      expect(nodeSpans[0]!.parentSpanId).toBe(root!.spanId);
      const att = tracer.named('attempt 1').filter((s) => s.attributes['kiln.node'] === name);
      expect(att).toHaveLength(1);
      expect(att[0]!.spanId).toBe(spanIdOf(attempt.attempt_id));
      expect(att[0]!.parentSpanId).toBe(nodeSpans[0]!.spanId);
      expect(att[0]!.attributes).toMatchObject({ 'kiln.build.id': b.id, 'kiln.agent': 'a1', 'kiln.attempt': 1, 'kiln.attempt.id': attempt.attempt_id, 'kiln.platform': 'linux/amd64', 'kiln.cache_hit': false });
      const wait = tracer.named('queue wait').filter((s) => s.attributes['kiln.node'] === name);
      expect(wait).toHaveLength(1);
      expect(wait[0]!.parentSpanId).toBe(nodeSpans[0]!.spanId);
    }
    const z = tracer.named('node z')[0]!;
    expect(z.error).toBe('RUN exit 3');
    expect(z.attributes['kiln.failure_kind']).toBe('build');
    const zAttempt = tracer.named('attempt 1').find((s) => s.attributes['kiln.node'] === 'z')!;
    expect(zAttempt).toMatchObject({ error: 'RUN exit 3' });
    expect(zAttempt.attributes).toMatchObject({ 'kiln.failure_kind': 'build', 'kiln.exit_code': 3, 'kiln.attempt.state': 'failed' });
    // y was ready only once x succeeded: its span starts then, not at submit
    expect(tracer.named('node y')[0]!.start).toBe(1_000_150);
    expect(tracer.named('node x')[0]!.start).toBe(1_000_000);
    // the error report names the trace
    expect((await engine.errorReport(b.id))!.trace_id).toBe(traceId);
  });

  it('after a restart, the rest of the build joins the same trace under the same parents', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    await store.commit();
    await engine.stop();
    await store.drain();
    const before = tracer.spans.length; // the queue wait only: nothing else had ended
    expect(tracer.spans.map((s) => s.name)).toEqual(['queue wait']);
    const restarted = new RecordingTracer();
    engine = await makeEngine(new BuildTracing(restarted));
    now += 500;
    const back = await connect('a', [{ attempt_id: att.attempt_id, log_bytes: 0 }]);
    await engine.frame(back.entry, frame('finished', finished(att.attempt_id, 'success')));
    expect(before).toBe(1);
    const names = restarted.spans.map((s) => s.name);
    expect(names).toEqual(['attempt 1', 'node n', 'build traced']);
    expect(new Set(restarted.spans.map((s) => s.traceId))).toEqual(new Set([traceIdOf(b.id)]));
    const [attempt, nodeSpan, root] = restarted.spans;
    expect(attempt!.spanId).toBe(parseTraceparent(att.traceparent!)!.spanId); // the agent's spans still hang under it
    expect(attempt!.start).toBe(1_000_000); // from the recorded assigned_at
    expect(attempt!.parentSpanId).toBe(nodeSpan!.spanId);
    expect(tracer.spans[0]!.parentSpanId).toBe(nodeSpan!.spanId); // the queue wait recorded before the restart
    expect(nodeSpan!.parentSpanId).toBe(root!.spanId);
    expect(root!.start).toBe(b.created_at);
  });

  it('sends no traceparent and records nothing when tracing is off', async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    engine = await makeEngine(null);
    const a = await connect('a');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    expect(att.traceparent).toBeUndefined();
    await engine.frame(a.entry, frame('finished', finished(att.attempt_id, 'failed')));
    expect((await engine.getBuild(b.id))!.state).toBe('failed');
    expect(tracer.spans).toEqual([]);
    expect((await engine.errorReport(b.id))!.trace_id).toBeUndefined();
  });
});

describe('shared tracing helpers', () => {
  it('derives stable, distinct W3C ids and parses traceparents strictly', () => {
    expect(traceIdOf('b-1')).toMatch(/^[0-9a-f]{32}$/);
    expect(traceIdOf('b-1')).toBe(traceIdOf('b-1'));
    expect(traceIdOf('b-1')).not.toBe(traceIdOf('b-2'));
    expect(spanIdOf('a-1')).toMatch(/^[0-9a-f]{16}$/);
    const tp = traceparent(traceIdOf('b-1'), spanIdOf('a-1'));
    expect(parseTraceparent(tp)).toEqual({ traceId: traceIdOf('b-1'), spanId: spanIdOf('a-1'), sampled: true });
    expect(parseTraceparent(`00-${'0'.repeat(32)}-${spanIdOf('a')}-01`)).toBeNull();
    expect(parseTraceparent(`00-${traceIdOf('b')}-${'0'.repeat(16)}-01`)).toBeNull();
    expect(parseTraceparent(`01-${traceIdOf('b')}-${spanIdOf('a')}-01`)).toBeNull();
    expect(parseTraceparent(`00-${traceIdOf('b').toUpperCase()}-${spanIdOf('a')}-01`)).toBeNull();
    expect(parseTraceparent(`00-${traceIdOf('b')}-${spanIdOf('a')}-00`)!.sampled).toBe(false);
  });

  it('phase spans: one child per phase, each ended by the next, the last failed with the job', () => {
    const t = new RecordingTracer();
    const parent = traceparent(traceIdOf('b'), spanIdOf('a'));
    const p = new PhaseSpans(t, parent, { 'kiln.node': 'n' });
    p.phase('input fetch');
    p.phase('build', { 'kiln.extra': 1 });
    expect(t.spans.map((s) => s.name)).toEqual(['input fetch']);
    p.phase(null);
    p.phase('test');
    p.end({ message: 'test failed with exit code 3', attributes: { 'kiln.failure_kind': 'test' } });
    p.end();
    expect(t.spans.map((s) => [s.name, s.parentSpanId, s.error])).toEqual([
      ['input fetch', spanIdOf('a'), null],
      ['build', spanIdOf('a'), null],
      ['test', spanIdOf('a'), 'test failed with exit code 3'],
    ]);
    expect(t.spans[1]!.attributes).toEqual({ 'kiln.node': 'n', 'kiln.extra': 1 });
    expect(t.spans[2]!.attributes['kiln.failure_kind']).toBe('test');
  });
});
