/**
 * Placement of ready nodes: priority then FIFO, native before emulated (emulated only
 * with allow_emulation), labels, exclusive GPUs, least-loaded choice, max_jobs, avoid and
 * preferNot, paused/draining/unhealthy agents, the circuit breaker with a fake clock, lazy
 * removal of dead refs, and a randomized cross-check of the indexed agent choice against
 * a plain linear scan.
 */
import { describe, expect, it } from 'vitest';
import { AgentRegistry, type AgentEntry } from '../../coordinator/placement/agent-registry.js';
import { requirementKey, type Requirement } from '../../coordinator/placement/requirement.js';
import { Scheduler, type ReadyRef } from '../../coordinator/placement/scheduler.js';
import type { HelloPayload } from '../../shared/index.js';
import { FakeChannel, hello } from '../helpers/engine-harness.js';

type RefIn = Omit<ReadyRef, 'seq'>;

function ref(node: string, over: Partial<RefIn> = {}): RefIn {
  return { buildId: 'b1', node, platform: 'linux/amd64', labels: {}, labelsNot: {}, allowEmulation: false, gpus: null, priority: 0, ...over };
}

interface Placed {
  node: string;
  agent: string;
  gpus: number[];
}

class World {
  now = 1_000_000;
  readonly reg = new AgentRegistry();
  readonly sched = new Scheduler(this.reg, () => this.now);
  readonly dead = new Set<string>();
  readonly placed: Placed[] = [];
  private n = 0;

  join(name: string, opts: Partial<HelloPayload> = {}): AgentEntry {
    const { entry } = this.reg.connect(hello(name, opts), new FakeChannel(), this.now);
    this.reg.markWelcomed(entry);
    return entry;
  }

  /** Runs a placement pass; each assignment holds a slot under attempt id `<node>@<agent>`. */
  place(): Placed[] {
    const out: Placed[] = [];
    this.sched.placeAll(
      (r) => !this.dead.has(r.node),
      (r, agent, gpus) => {
        this.reg.hold(agent, `${r.node}@${agent.name}`, gpus, this.now);
        out.push({ node: r.node, agent: agent.name, gpus });
        this.n++;
      },
    );
    this.placed.push(...out);
    return out;
  }

  finish(p: Placed): void {
    this.reg.release(p.agent, `${p.node}@${p.agent}`);
  }
}

const nodes = (ps: Placed[]) => ps.map((p) => p.node);
const gpu = (index: number, model: string, memory_mib: number) => ({ index, model, memory_mib, uuid: null });

describe('Scheduler order', () => {
  it('places higher priority first, FIFO among equal priority', () => {
    const w = new World();
    w.join('a', { max_jobs: 1 });
    w.sched.enqueue(ref('low-1', { priority: -5 }));
    w.sched.enqueue(ref('mid-1'));
    w.sched.enqueue(ref('high-1', { priority: 10 }));
    w.sched.enqueue(ref('mid-2'));
    w.sched.enqueue(ref('high-2', { priority: 10 }));
    w.sched.enqueue(ref('mid-3', { labels: {} }));
    const order: string[] = [];
    for (;;) {
      const p = w.place();
      if (p.length === 0) break;
      expect(p).toHaveLength(1);
      order.push(p[0]!.node);
      w.finish(p[0]!);
    }
    expect(order).toEqual(['high-1', 'high-2', 'mid-1', 'mid-2', 'mid-3', 'low-1']);
    expect(w.sched.size).toBe(0);
  });

  it('orders across requirement queues too, and a queue no agent can serve does not block others', () => {
    const w = new World();
    w.join('a', { max_jobs: 10, labels: { zone: 'eu' } });
    w.sched.enqueue(ref('us-high', { priority: 5, labels: { zone: 'us' } }));
    w.sched.enqueue(ref('eu-old', { labels: { zone: 'eu' } }));
    w.sched.enqueue(ref('any-new'));
    w.sched.enqueue(ref('eu-high', { priority: 3, labels: { zone: 'eu' } }));
    expect(nodes(w.place())).toEqual(['eu-high', 'eu-old', 'any-new']);
    expect([...w.sched.pending()].map((r) => r.node)).toEqual(['us-high']);
  });

  it('drops dead refs lazily when they reach the head', () => {
    const w = new World();
    w.join('a', { max_jobs: 2 });
    for (const n of ['n1', 'n2', 'n3', 'n4']) w.sched.enqueue(ref(n));
    expect(w.sched.size).toBe(4);
    w.dead.add('n1');
    w.dead.add('n3');
    expect(nodes(w.place())).toEqual(['n2', 'n4']);
    expect(w.sched.size).toBe(0);
    expect([...w.sched.pending()]).toEqual([]);
  });

  it('lists pending refs in placement order', () => {
    const w = new World();
    w.sched.enqueue(ref('a'));
    w.sched.enqueue(ref('b', { priority: 2, platform: 'linux/arm64' }));
    w.sched.enqueue(ref('c', { priority: 2 }));
    expect([...w.sched.pending()].map((r) => r.node)).toEqual(['b', 'c', 'a']);
  });

  it('takes refs queued by an assign in the same pass, in order', () => {
    const w = new World();
    w.join('a', { max_jobs: 3 });
    w.sched.enqueue(ref('first'));
    w.sched.enqueue(ref('second'));
    const got: string[] = [];
    w.sched.placeAll(
      () => true,
      (r, agent) => {
        w.reg.hold(agent, r.node, [], w.now);
        got.push(r.node);
        if (r.node === 'first') w.sched.enqueue(ref('urgent', { priority: 9, platform: 'linux/amd64', labels: { x: 'y' } }));
        if (r.node === 'first') w.sched.enqueue(ref('retry', { priority: 5 }));
      },
    );
    // `urgent` matches no agent and does not block; `retry` outranks `second`
    expect(got).toEqual(['first', 'retry', 'second']);
    expect([...w.sched.pending()].map((r) => r.node)).toEqual(['urgent']);
  });

  it('keys requirements canonically, and label values cannot fake a separator', () => {
    const base: Requirement = { platform: 'linux/arm64/v8', labels: { a: '1', b: '2' }, labelsNot: { c: ['x', 'y'] }, allowEmulation: false, gpus: null };
    const same: Requirement = { platform: 'linux/arm64', labels: { b: '2', a: '1' }, labelsNot: { c: ['y', 'x'] }, allowEmulation: false, gpus: null };
    expect(requirementKey(same)).toBe(requirementKey(base));
    expect(requirementKey({ ...base, allowEmulation: true })).not.toBe(requirementKey(base));
    expect(requirementKey({ ...base, gpus: { count: 1, min_memory_mib: 0, model: 'A100' } })).toBe(requirementKey({ ...base, gpus: { count: 1, min_memory_mib: 0, model: 'a100' } }));
    expect(requirementKey({ ...base, gpus: { count: 1, min_memory_mib: 0, model: null } })).not.toBe(requirementKey({ ...base, gpus: { count: 2, min_memory_mib: 0, model: null } }));
    const tricky = (labels: Record<string, string>) => requirementKey({ platform: 'linux/amd64', labels, labelsNot: {}, allowEmulation: false, gpus: null });
    expect(tricky({ a: '1",b:"2' })).not.toBe(tricky({ a: '1', b: '2' }));
    expect(tricky({ 'a:': 'b' })).not.toBe(tricky({ a: ':b' }));
  });

  it('rejects a ref with a bad priority or GPU count', () => {
    const w = new World();
    expect(() => w.sched.enqueue(ref('x', { priority: Number.NaN }))).toThrow(/ready node b1\/x: priority must be a finite number/);
    expect(() => w.sched.enqueue(ref('x', { gpus: { count: 0, min_memory_mib: 0, model: null } }))).toThrow(/gpus.count must be an integer >= 1/);
  });
});

describe('Scheduler agent choice', () => {
  it('prefers a native agent and uses an emulating one only when none is free and the node allows it', () => {
    const w = new World();
    w.join('emu', { max_jobs: 4, platforms: [{ platform: 'linux/arm64', emulated: true }] });
    w.join('native', { max_jobs: 1, platforms: [{ platform: 'linux/arm64', emulated: false }] });
    w.sched.enqueue(ref('n1', { platform: 'linux/arm64', allowEmulation: true }));
    w.sched.enqueue(ref('n2', { platform: 'linux/arm64', allowEmulation: true }));
    w.sched.enqueue(ref('strict', { platform: 'linux/arm64' }));
    const p = w.place();
    expect(p.map((x) => `${x.node}:${x.agent}`)).toEqual(['n1:native', 'n2:emu']);
    // `strict` does not allow emulation: it waits for the native agent
    expect([...w.sched.pending()].map((r) => r.node)).toEqual(['strict']);
    w.finish(p[0]!);
    expect(w.place().map((x) => `${x.node}:${x.agent}`)).toEqual(['strict:native']);
  });

  it('matches labels exactly and with !=', () => {
    const w = new World();
    w.join('spot', { max_jobs: 5, labels: { zone: 'eu', tier: 'spot' } });
    w.join('plain', { max_jobs: 5, labels: { zone: 'eu' } });
    w.sched.enqueue(ref('not-spot-1', { labelsNot: { tier: ['spot'] } }));
    w.sched.enqueue(ref('not-spot-2', { labels: { zone: 'eu' }, labelsNot: { tier: ['spot'] } }));
    w.sched.enqueue(ref('spot', { labels: { tier: 'spot' } }));
    w.sched.enqueue(ref('us', { labels: { zone: 'us' } }));
    const p = w.place();
    expect(p.map((x) => `${x.node}:${x.agent}`)).toEqual(['not-spot-1:plain', 'not-spot-2:plain', 'spot:spot']);
    expect([...w.sched.pending()].map((r) => r.node)).toEqual(['us']);
  });

  it('picks the least-loaded agent (running / max_jobs), then fewer running, then name', () => {
    const w = new World();
    const big = w.join('big', { max_jobs: 4 });
    w.join('small', { max_jobs: 1 });
    w.join('aaa', { max_jobs: 4 });
    w.reg.hold(big, 'pre-1', [], w.now); // big at 1/4
    for (let i = 0; i < 6; i++) w.sched.enqueue(ref(`n${i}`));
    const p = w.place();
    // aaa 0/4 (name before small 0/1), small 0/1, then aaa 1/4 = big 1/4 -> fewer running tie -> name aaa, ...
    expect(p.map((x) => x.agent)).toEqual(['aaa', 'small', 'aaa', 'big', 'aaa', 'big']);
  });

  it('respects max_jobs: nothing more is placed while all slots are held', () => {
    const w = new World();
    w.join('a', { max_jobs: 2 });
    w.join('b', { max_jobs: 3 });
    for (let i = 0; i < 10; i++) w.sched.enqueue(ref(`n${i}`));
    const p = w.place();
    expect(p).toHaveLength(5);
    expect(p.filter((x) => x.agent === 'a')).toHaveLength(2);
    expect(p.filter((x) => x.agent === 'b')).toHaveLength(3);
    expect(w.place()).toEqual([]);
    w.finish(p[0]!);
    expect(w.place()).toHaveLength(1);
  });

  it('never offers a node to agents it must avoid, and to preferNot agents only when nothing else is free', () => {
    const w = new World();
    w.join('a', { max_jobs: 1 });
    w.join('b', { max_jobs: 1 });
    w.join('c', { max_jobs: 1 });
    w.sched.enqueue(ref('avoid-ab', { avoid: new Set(['a', 'b']) }));
    w.sched.enqueue(ref('prefer-not-b', { preferNot: new Set(['a']) }));
    w.sched.enqueue(ref('prefer-not-all', { preferNot: new Set(['a', 'b', 'c']) }));
    const p = w.place();
    expect(p.map((x) => `${x.node}:${x.agent}`)).toEqual(['avoid-ab:c', 'prefer-not-b:b', 'prefer-not-all:a']);

    const w2 = new World();
    w2.join('a', { max_jobs: 1 });
    w2.sched.enqueue(ref('hard', { avoid: new Set(['a']) }));
    w2.sched.enqueue(ref('other'));
    // the avoided node waits without blocking the one behind it
    expect(w2.place().map((x) => `${x.node}:${x.agent}`)).toEqual(['other:a']);
    expect([...w2.sched.pending()].map((r) => r.node)).toEqual(['hard']);
  });

  it('gives paused, draining and unhealthy agents nothing', () => {
    const w = new World();
    const paused = w.join('paused', { max_jobs: 4 });
    const draining = w.join('draining', { max_jobs: 4 });
    const sick = w.join('sick', { max_jobs: 4 });
    w.reg.setControl(paused, 'paused');
    w.reg.setControl(draining, 'draining');
    w.reg.setHeartbeat(sick, { running: [], health: { accepting: false, problem: 'disk full' } }, w.now);
    for (let i = 0; i < 3; i++) w.sched.enqueue(ref(`n${i}`));
    expect(w.place()).toEqual([]);
    w.reg.setControl(draining, 'active');
    expect(w.place().map((x) => x.agent)).toEqual(['draining', 'draining', 'draining']);
  });

  it('a disconnected agent gets nothing; back and welcomed, it does', () => {
    const w = new World();
    const a = w.join('a');
    w.reg.markDisconnected(a, w.now + 30_000);
    w.sched.enqueue(ref('n'));
    expect(w.place()).toEqual([]);
    const { entry } = w.reg.connect(hello('a'), new FakeChannel(), w.now);
    expect(w.place()).toEqual([]); // not welcomed yet
    w.reg.markWelcomed(entry);
    expect(nodes(w.place())).toEqual(['n']);
  });
});

describe('Scheduler GPUs', () => {
  it('gives two 1-GPU nodes different GPUs of a 2-GPU agent; the third waits until one is released', () => {
    const w = new World();
    w.join('g', { max_jobs: 8, gpus: [gpu(0, 'NVIDIA A100', 40_960), gpu(1, 'NVIDIA A100', 40_960)] });
    const one = { count: 1, min_memory_mib: 16_000, model: 'a100' };
    for (const n of ['t1', 't2', 't3']) w.sched.enqueue(ref(n, { gpus: one }));
    const p = w.place();
    expect(p.map((x) => x.node)).toEqual(['t1', 't2']);
    expect(p.map((x) => x.gpus).sort()).toEqual([[0], [1]]);
    expect(w.place()).toEqual([]);
    w.finish(p[1]!);
    const next = w.place();
    expect(next).toEqual([{ node: 't3', agent: 'g', gpus: p[1]!.gpus }]);
  });

  it('places a GPU node only where enough GPUs of the model and memory are free', () => {
    const w = new World();
    w.join('t4', { max_jobs: 4, gpus: [gpu(0, 'Tesla T4', 15_360), gpu(1, 'Tesla T4', 15_360)] });
    w.join('a100', { max_jobs: 4, gpus: [gpu(0, 'A100-SXM4-80GB', 81_920)] });
    w.join('cpu', { max_jobs: 4 });
    w.sched.enqueue(ref('big', { gpus: { count: 1, min_memory_mib: 40_000, model: null } }));
    w.sched.enqueue(ref('pair', { gpus: { count: 2, min_memory_mib: 0, model: 'T4' } }));
    w.sched.enqueue(ref('triple', { gpus: { count: 3, min_memory_mib: 0, model: null } }));
    const p = w.place();
    expect(p).toEqual([
      { node: 'big', agent: 'a100', gpus: [0] },
      { node: 'pair', agent: 't4', gpus: [0, 1] },
    ]);
    expect(w.reg.whyNoMatch({ platform: 'linux/amd64', labels: {}, labelsNot: {}, allowEmulation: false, gpus: { count: 3, min_memory_mib: 0, model: null } })).toBe(
      'no connected agent has 3 GPUs (the most on one agent is 2, on t4)',
    );
  });
});

describe('Scheduler with the circuit breaker (fake clock)', () => {
  it('skips an agent whose breaker is open, sends one trial after 30 s, and closes on a healthy end', () => {
    const w = new World();
    w.join('flaky', { max_jobs: 4 });
    w.join('other', { max_jobs: 1 });
    for (let i = 0; i < 3; i++) w.reg.recordInfraFailure('flaky', w.now + i);
    for (let i = 0; i < 4; i++) w.sched.enqueue(ref(`n${i}`));
    expect(w.place().map((x) => `${x.node}:${x.agent}`)).toEqual(['n0:other']);
    w.now += 29_000;
    expect(w.place()).toEqual([]);
    w.now += 2_000; // 31 s after opening: half-open, one trial
    const trial = w.place();
    expect(trial.map((x) => `${x.node}:${x.agent}`)).toEqual(['n1:flaky']);
    expect(w.place()).toEqual([]);
    w.finish(trial[0]!);
    w.reg.recordHealthy('flaky', w.now);
    expect(w.place().map((x) => `${x.node}:${x.agent}`)).toEqual(['n2:flaky', 'n3:flaky']);
  });

  it('reopens when the trial fails for infrastructure reasons', () => {
    const w = new World();
    w.join('flaky', { max_jobs: 4 });
    for (let i = 0; i < 3; i++) w.reg.recordInfraFailure('flaky', w.now);
    for (let i = 0; i < 3; i++) w.sched.enqueue(ref(`n${i}`));
    w.now += 30_000;
    const trial = w.place();
    expect(nodes(trial)).toEqual(['n0']);
    w.finish(trial[0]!);
    w.reg.recordInfraFailure('flaky', w.now);
    expect(w.reg.get('flaky')!.breaker.view(w.now).state).toBe('open');
    expect(w.place()).toEqual([]);
    w.now += 29_999;
    expect(w.place()).toEqual([]);
    w.now += 1;
    expect(nodes(w.place())).toEqual(['n1']);
  });
});

describe('Scheduler agent choice matches a linear scan', () => {
  /** Deterministic PRNG (mulberry32). */
  function rng(seed: number) {
    return () => {
      seed |= 0;
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function linearPick(reg: AgentRegistry, req: Requirement, now: number, avoid?: ReadonlySet<string>, preferNot?: ReadonlySet<string>): string | null {
    const better = (a: AgentEntry, b: AgentEntry) => {
      const la = a.running.size / a.maxJobs;
      const lb = b.running.size / b.maxJobs;
      if (la !== lb) return la < lb;
      if (a.running.size !== b.running.size) return a.running.size < b.running.size;
      return a.name < b.name;
    };
    const tiers = (skip: (a: AgentEntry) => boolean) => {
      for (const native of [true, false]) {
        if (!native && !req.allowEmulation) break;
        let best: AgentEntry | null = null;
        for (const a of reg.all()) {
          if (skip(a) || !reg.matches(a, req) || reg.isNative(a, req.platform) !== native || reg.freeSlots(a, now) === 0) continue;
          if (reg.allocateGpus(a, req.gpus) === null) continue;
          if (!best || better(a, best)) best = a;
        }
        if (best) return best.name;
      }
      return null;
    };
    if (preferNot && preferNot.size > 0) {
      const r = tiers((a) => preferNot.has(a.name) || (avoid?.has(a.name) ?? false));
      if (r) return r;
    }
    return tiers((a) => avoid?.has(a.name) ?? false);
  }

  it('agrees on 3000 random picks while agents connect, fill, drain, fail and recover', () => {
    const rand = rng(12345);
    const pickOf = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
    const reg = new AgentRegistry();
    const platforms = ['linux/amd64', 'linux/arm64', 'linux/s390x'];
    const zones = ['eu', 'us'];
    let now = 0;
    const names: string[] = [];
    for (let i = 0; i < 60; i++) {
      const name = `ag${String(i).padStart(2, '0')}`;
      names.push(name);
      const native = pickOf(platforms);
      const plats = [{ platform: native, emulated: false }];
      if (rand() < 0.5) plats.push({ platform: pickOf(platforms.filter((p) => p !== native)), emulated: true });
      const gpus = rand() < 0.2 ? [0, 1].map((ix) => gpu(ix, pickOf(['Tesla T4', 'A100']), pickOf([15_360, 40_960]))) : [];
      const { entry } = reg.connect(hello(name, { max_jobs: 1 + Math.floor(rand() * 4), platforms: plats, labels: { zone: pickOf(zones) }, gpus }), new FakeChannel(), 0);
      reg.markWelcomed(entry);
    }
    let attempt = 0;
    const held: Array<[string, string]> = [];
    let compared = 0;
    for (let step = 0; step < 3000; step++) {
      now += Math.floor(rand() * 2000);
      reg.tick(now);
      const r = rand();
      const a = reg.get(pickOf(names))!;
      if (r < 0.03) reg.setControl(a, pickOf(['active', 'active', 'paused', 'draining'] as const));
      else if (r < 0.05) reg.setHeartbeat(a, { running: [], health: { accepting: rand() < 0.7, problem: null } }, now);
      else if (r < 0.07) reg.recordInfraFailure(a.name, now);
      else if (r < 0.08) reg.recordHealthy(a.name, now);
      else if (r < 0.09) {
        if (a.state === 'connected') reg.markDisconnected(a, now + 30_000);
      } else if (r < 0.1 && a.hello) {
        const { entry } = reg.connect(a.hello, new FakeChannel(), now);
        reg.markWelcomed(entry);
      } else if (r < 0.35 && held.length > 0) {
        const [agent, id] = held.splice(Math.floor(rand() * held.length), 1)[0]!;
        reg.release(agent, id);
      }
      const req: Requirement = {
        platform: pickOf(platforms),
        labels: rand() < 0.4 ? { zone: pickOf(zones) } : {},
        labelsNot: rand() < 0.2 ? { zone: [pickOf(zones)] } : {},
        allowEmulation: rand() < 0.5,
        gpus: rand() < 0.15 ? { count: 1 + Math.floor(rand() * 2), min_memory_mib: pickOf([0, 20_000]), model: pickOf([null, 't4', 'A100']) } : null,
      };
      const avoid = rand() < 0.2 ? new Set([pickOf(names), pickOf(names)]) : undefined;
      const preferNot = rand() < 0.2 ? new Set([pickOf(names)]) : undefined;
      const got = reg.pick(req, now, undefined, avoid, preferNot);
      const want = linearPick(reg, req, now, avoid, preferNot);
      expect(got?.agent.name ?? null, `step ${step}: ${JSON.stringify(req)}`).toBe(want);
      if (got) {
        compared++;
        expect(got.gpus).toEqual(reg.allocateGpus(got.agent, req.gpus));
        const id = `x${++attempt}`;
        reg.hold(got.agent, id, got.gpus, now);
        held.push([got.agent.name, id]);
      }
    }
    // the run exercised real choices, not only "nothing free"
    expect(compared).toBeGreaterThan(500);
  });
});
