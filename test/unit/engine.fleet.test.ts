/**
 * The engine's fleet behaviour in process (fake agent channels, controllable clock): the
 * attempt budget for infrastructure failures and the dead-letter list, operator retries
 * (also of archived builds), error reports, the circuit breaker, pause/drain/resume (and
 * that they survive a restart), exclusive GPU assignment, priorities and test commands.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine} from '../../coordinator/builds/engine.js';
import { INFRA_ATTEMPT_BUDGET } from '../../coordinator/builds/engine.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { validateSpec, type HelloPayload, type Payload } from '../../shared/index.js';
import { FakeChannel, TIMINGS, finished, frame, hello, openEngine, TEST_STATE, tick } from '../helpers/engine-harness.js';

describe('engine: fleet', () => {
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

  function spec(nodes: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    const r = validateSpec({ name: 't', nodes, ...extra }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  }

  async function connect(name: string, opts: Partial<HelloPayload> = {}) {
    const ch = new FakeChannel();
    const out = await engine.hello(hello(name, opts), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    await tick();
    return { ch, entry: out.entry };
  }

  async function node(buildId: string, name: string) {
    return (await engine.getBuild(buildId))!.nodes.find((n) => n.name === name)!;
  }

  /** Waits for background archiving (and error reports). */
  async function settle() {
    for (let i = 0; i < 5; i++) await tick();
    await engine.idle();
  }

  const infraFail = (id: string) => finished(id, 'failed', { infra: true, exit_code: null, error: 'Docker Engine unreachable: connect ENOENT /var/run/docker.sock' });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-fleet-'));
    now = 1_000_000;
    engine = await makeEngine();
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it(`re-queues infrastructure failures up to ${INFRA_ATTEMPT_BUDGET} attempts, then dead-letters the node and skips its dependents`, async () => {
    const agents = [await connect('a1', { max_jobs: 1 }), await connect('a2', { max_jobs: 1 }), await connect('a3', { max_jobs: 1 })];
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' }, after: { dockerfile_inline: 'FROM a', needs: ['n'] } }));
    await tick();
    const seen: string[] = [];
    for (let i = 0; i < INFRA_ATTEMPT_BUDGET; i++) {
      const holder = agents.find((x) => x.entry.running.size > 0)!;
      seen.push(holder.entry.name);
      const att = holder.ch.assigns().at(-1)!;
      expect(att.attempt).toBe(i + 1);
      await engine.frame(holder.entry, frame('finished', infraFail(att.attempt_id)));
      await tick();
    }
    // Each retry went to an agent that had not failed it yet.
    expect(new Set(seen).size).toBe(INFRA_ATTEMPT_BUDGET);
    const n = await node(b.id, 'n');
    expect(n.state).toBe('failed');
    expect(n.reason).toMatch(/^attempts exhausted: 3 infrastructure failures/);
    expect(n.attempts.map((a) => a.state)).toEqual(['failed', 'failed', 'failed']);
    expect((await node(b.id, 'after')).state).toBe('skipped');
    const dl = engine.deadLetters();
    expect(dl).toHaveLength(1);
    expect(dl[0]).toMatchObject({ build_id: b.id, node: 'n', platform: 'linux/amd64' });
    expect(dl[0]!.attempts.map((a) => a.agent).sort()).toEqual(['a1', 'a2', 'a3']);
    expect((await engine.getBuild(b.id))!.state).toBe('failed');
  });

  it('counts lost attempts against the same budget, and a retry: false node gets one attempt', async () => {
    const a = await connect('a', { max_jobs: 2 });
    const b = await engine.submit(spec({ once: { dockerfile_inline: 'FROM a', retry: false }, twice: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const byNode = Object.fromEntries(a.ch.assigns().map((x) => [x.node, x]));
    await engine.frame(a.entry, frame('finished', infraFail(byNode.once!.attempt_id)));
    const once = await node(b.id, 'once');
    expect(once.state).toBe('failed');
    expect(once.reason).toMatch(/^attempts exhausted: 1 infrastructure failure \(budget 1, retry: false\)/);
    // `twice` is lost with its agent and comes back ready.
    now += TIMINGS.lostAfterMs + 1;
    await engine.sweep();
    const twice = await node(b.id, 'twice');
    expect(twice.state).toBe('ready');
    expect(twice.attempts[0]!.state).toBe('lost');
    expect(engine.deadLetters().map((d) => d.node)).toEqual(['once']);
  });

  it('retries a dead-lettered node with a fresh budget, revives what it skipped, and finishes the build', async () => {
    const a = await connect('a', { max_jobs: 1 });
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a', retry: false }, m: { dockerfile_inline: 'FROM a', needs: ['n'] } }));
    await tick();
    await engine.frame(a.entry, frame('finished', infraFail(a.ch.assigns()[0]!.attempt_id)));
    await settle();
    // The failed build was archived; the retry brings it back.
    expect(store.data.builds.get(b.id)).toBeUndefined();
    expect(store.data.archived.get(b.id)).toBeDefined();
    engine = await (async () => {
      await store.drain();
      return makeEngine();
    })();
    const a2 = await connect('a', { max_jobs: 1, session: 'a-session-2' });
    const after = await engine.retryNode(b.id, 'n');
    expect(after.state).toBe('running');
    expect(store.data.builds.get(b.id)).toBeDefined();
    expect(engine.deadLetters()).toHaveLength(0);
    expect((await node(b.id, 'm')).state).toBe('pending');
    await tick();
    const att = a2.ch.assigns().at(-1)!;
    expect(att).toMatchObject({ node: 'n', attempt: 2 });
    await engine.frame(a2.entry, frame('finished', finished(att.attempt_id, 'success')));
    await tick();
    const m = a2.ch.assigns().at(-1)!;
    expect(m.node).toBe('m');
    await engine.frame(a2.entry, frame('finished', finished(m.attempt_id, 'success')));
    expect((await engine.getBuild(b.id))!.state).toBe('success');
    await expect(engine.retryNode(b.id, 'n')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(engine.retryNode(b.id, 'nope')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    await expect(engine.retryNode('b-nope', 'n')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });

  it('revives a node skipped by two failures once both are retried, even while the first retry still runs', async () => {
    const a = await connect('a', { max_jobs: 4 });
    const b = await engine.submit(spec({ x: { dockerfile_inline: 'FROM x', retry: false }, y: { dockerfile_inline: 'FROM y', retry: false }, z: { dockerfile_inline: 'FROM z', needs: ['x', 'y'] } }));
    await tick();
    for (const att of a.ch.assigns()) await engine.frame(a.entry, frame('finished', infraFail(att.attempt_id)));
    await engine.idle();
    expect((await node(b.id, 'z')).state).toBe('skipped');
    await engine.retryNode(b.id, 'x');
    expect((await node(b.id, 'z')).state).toBe('skipped'); // y is still failed
    await tick();
    const x2 = a.ch.assigns().find((s) => s.node === 'x' && s.attempt === 2)!;
    await engine.retryNode(b.id, 'y'); // x is still running
    expect((await node(b.id, 'z')).state).toBe('pending');
    await tick();
    const y2 = a.ch.assigns().find((s) => s.node === 'y' && s.attempt === 2)!;
    await engine.frame(a.entry, frame('finished', finished(x2.attempt_id, 'success')));
    await engine.frame(a.entry, frame('finished', finished(y2.attempt_id, 'success')));
    await tick();
    const z = a.ch.assigns().find((s) => s.node === 'z')!;
    await engine.frame(a.entry, frame('finished', finished(z.attempt_id, 'success')));
    expect((await engine.getBuild(b.id))!.state).toBe('success');
  });

  it('writes an error report with the failing attempt and its last log lines', async () => {
    const a = await connect('a');
    const b = await engine.submit(spec({ bad: { dockerfile_inline: 'FROM a' }, down: { dockerfile_inline: 'FROM a', needs: ['bad'] } }));
    await tick();
    const att = a.ch.assigns()[0]!;
    const lines = Array.from({ length: 300 }, (_, i) => `line ${i + 1}`).join('\n') + '\n';
    await engine.frame(a.entry, frame('log', { attempt_id: att.attempt_id, seq: 0, offset: 0, data: Buffer.from(lines) }));
    await engine.frame(
      a.entry,
      frame('finished', finished(att.attempt_id, 'failed', { exit_code: 3, error: 'RUN exit 3 failed', failed_step: '[2/2] RUN exit 3', log_bytes: Buffer.byteLength(lines) })),
    );
    await settle();
    const report = (await engine.errorReport(b.id))!;
    expect(report).toMatchObject({ build_id: b.id, node: 'bad', attempt: 1, agent: 'a', exit_code: 3, failed_step: '[2/2] RUN exit 3', skipped: ['down'], dead_letter: false });
    expect(report.log_tail).toHaveLength(200);
    expect(report.log_tail[0]).toBe('line 101');
    expect(report.log_tail.at(-1)).toBe('line 300');
    if (TEST_STATE === 'embedded') {
      // the embedded state keeps a copy beside the archive
      const file = JSON.parse(await readFile(join(dir, 'builds', `error-${b.id}.json`), 'utf8'));
      expect(file).toEqual(report);
    }
    // A build without failures has no report.
    const ok = await engine.submit(spec({ fine: { dockerfile_inline: 'FROM a' } }));
    await tick();
    expect(await engine.errorReport(ok.id)).toBeNull();
    await expect(engine.errorReport('b-unknown')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });

  it('opens an agent’s circuit breaker after 3 infrastructure failures, then gives it one trial', async () => {
    const a = await connect('a', { max_jobs: 1 });
    const b = await engine.submit(spec(Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`n${i}`, { dockerfile_inline: `FROM a${i}` }]))));
    await tick();
    for (let i = 0; i < 3; i++) {
      const att = a.ch.assigns().at(-1)!;
      await engine.frame(a.entry, frame('finished', infraFail(att.attempt_id)));
      now += 1000;
      await tick();
    }
    expect(a.ch.assigns()).toHaveLength(3);
    const beat = () => engine.frame(a.entry, frame('heartbeat', { running: [] }));
    now += 10_000;
    await beat();
    await engine.sweep();
    await tick();
    expect(a.ch.assigns()).toHaveLength(3); // still open
    expect(a.entry.breaker.view(now).state).toBe('open');
    now += 30_000;
    await beat();
    await engine.sweep();
    await tick();
    expect(a.ch.assigns()).toHaveLength(4); // the trial
    const trial = a.ch.assigns().at(-1)!;
    await engine.frame(a.entry, frame('finished', finished(trial.attempt_id, 'success')));
    await tick();
    expect(a.ch.assigns()).toHaveLength(5); // closed again
    expect((await engine.getBuild(b.id))!.state).toBe('running');
  });

  it('gives paused and draining agents no work, resumes them, and keeps the control across a restart', async () => {
    const a = await connect('a');
    await engine.setAgentControl('a', 'paused', 'kernel upgrade');
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    expect(a.ch.assigns()).toHaveLength(0);
    await expect(engine.setAgentControl('ghost', 'paused', null)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    await store.drain();
    await engine.stop();
    engine = await makeEngine();
    const again = await connect('a', { session: 'a-session-2' });
    expect(again.entry.control).toBe('paused');
    await tick();
    expect(again.ch.assigns()).toHaveLength(0);
    await engine.setAgentControl('a', 'draining', null);
    await tick();
    expect(again.ch.assigns()).toHaveLength(0);
    await engine.setAgentControl('a', 'active', null);
    await tick();
    expect(again.ch.assigns().map((x) => x.node)).toEqual(['n']);
    expect(store.data.agentControls.get('a')).toBeUndefined();
    expect((await engine.getBuild(b.id))!.state).toBe('running');
  });

  it('assigns GPUs exclusively and sends the test command', async () => {
    const gpus = [0, 1].map((i) => ({ index: i, model: 'NVIDIA A100-SXM4-40GB', memory_mib: 40960, uuid: `GPU-${i}` }));
    const g = await connect('g', { gpus, max_jobs: 4 });
    const nodes = Object.fromEntries(
      ['t1', 't2', 't3'].map((n) => [n, { dockerfile_inline: `FROM ${n}`, gpus: { count: 1, model: 'a100', min_memory_mib: 40000 }, test: { command: 'nvidia-smi' } }]),
    );
    const b = await engine.submit(spec(nodes));
    await tick();
    const sent = g.ch.assigns();
    expect(sent).toHaveLength(2); // two GPUs, two nodes; the third waits
    expect(sent.map((x) => x.gpus).flat().sort()).toEqual([0, 1]);
    expect(sent[0]!.test).toEqual({ command: ['/bin/sh', '-c', 'nvidia-smi'], timeout_ms: 3_600_000, env: {} });
    await engine.frame(g.entry, frame('finished', finished(sent[0]!.attempt_id, 'success')));
    await tick();
    const third = g.ch.assigns()[2]!;
    expect(third.gpus).toEqual(sent[0]!.gpus);
    expect((await node(b.id, third.node)).attempts[0]!.gpus).toEqual(sent[0]!.gpus);
  });

  it('dispatches higher priority first, and reports a node nobody can run', async () => {
    const b = await engine.submit(spec({ low: { dockerfile_inline: 'FROM a' }, high: { dockerfile_inline: 'FROM a', priority: 10 }, s390x: { dockerfile_inline: 'FROM a', platform: 'linux/s390x' } }));
    const a = await connect('a', { max_jobs: 1 });
    await tick();
    expect(a.ch.assigns().map((x) => x.node)).toEqual(['high']);
    expect(engine.agents.whyNoMatch({ platform: 'linux/s390x', labels: {}, labelsNot: {}, allowEmulation: false, gpus: null })).toMatch(/linux\/s390x/);
    expect((await engine.getBuild(b.id))!.state).toBe('running');
  });

  it('re-queues the node of an agent that cancelled its build on its own (shutdown)', async () => {
    const a = await connect('a', { max_jobs: 1 });
    const c = await connect('c', { max_jobs: 1 });
    const b = await engine.submit(spec({ n: { dockerfile_inline: 'FROM a' } }));
    await tick();
    const holder = [a, c].find((x) => x.ch.assigns().length === 1)!;
    const other = holder === a ? c : a;
    const att = holder.ch.assigns()[0]!;
    await engine.frame(holder.entry, frame('finished', finished(att.attempt_id, 'cancelled', { error: 'the agent is shutting down' }) as Payload<'finished'>));
    await tick();
    const n = await node(b.id, 'n');
    expect(n.attempts[0]).toMatchObject({ state: 'cancelled', infra: true });
    expect(n.state).toBe('assigned');
    expect(other.ch.assigns()).toHaveLength(1);
  });
});
