/**
 * The agent registry's capability side: platform (native vs emulated), exact and `!=`
 * labels, GPU count/memory/model against what nvidia-smi reported, exclusive GPU
 * allocation, who gets slots (paused, draining, unhealthy agents get none), what a
 * reconnect keeps, heartbeats, the agent state table (illegal transitions throw, entries
 * are read-only outside the registry), and the `whyNoMatch` reasons.
 */
import { describe, expect, it } from 'vitest';
import { AgentRegistry, type AgentEntry } from '../../coordinator/placement/agent-registry.js';
import type { Requirement } from '../../coordinator/placement/requirement.js';
import { AGENT_STATES, agentTransition, canAgentTransition, type HelloPayload } from '../../shared/index.js';
import { FakeChannel, hello } from '../helpers/engine-harness.js';

function req(over: Partial<Requirement> = {}): Requirement {
  return { platform: 'linux/amd64', labels: {}, labelsNot: {}, allowEmulation: false, gpus: null, ...over };
}

function join(reg: AgentRegistry, name: string, opts: Partial<HelloPayload> = {}): AgentEntry {
  const { entry } = reg.connect(hello(name, opts), new FakeChannel(), 0);
  reg.markWelcomed(entry);
  return entry;
}

const gpu = (index: number, model: string, memory_mib: number) => ({ index, model, memory_mib, uuid: `GPU-${index}` });

describe('AgentRegistry matching', () => {
  it('matches platforms exactly, natively, or emulated only when the node allows it', () => {
    const reg = new AgentRegistry();
    const a = join(reg, 'x86', {
      platforms: [
        { platform: 'linux/amd64', emulated: false },
        { platform: 'linux/s390x', emulated: true },
      ],
    });
    expect(reg.matches(a, req())).toBe(true);
    expect(reg.isNative(a, 'linux/amd64')).toBe(true);
    expect(reg.matches(a, req({ platform: 'linux/arm64' }))).toBe(false);
    expect(reg.matches(a, req({ platform: 'linux/s390x' }))).toBe(false);
    expect(reg.matches(a, req({ platform: 'linux/s390x', allowEmulation: true }))).toBe(true);
    expect(reg.isNative(a, 'linux/s390x')).toBe(false);
    const arm = join(reg, 'arm', { platforms: [{ platform: 'linux/arm64/v8', emulated: false }] });
    expect(reg.matches(arm, req({ platform: 'linux/arm64' }))).toBe(true);
  });

  it('matches labels exactly, and key!=value (an agent without the key matches)', () => {
    const reg = new AgentRegistry();
    const eu = join(reg, 'eu', { labels: { zone: 'eu', tier: 'spot' } });
    const us = join(reg, 'us', { labels: { zone: 'us' } });
    expect(reg.matches(eu, req({ labels: { zone: 'eu' } }))).toBe(true);
    expect(reg.matches(us, req({ labels: { zone: 'eu' } }))).toBe(false);
    expect(reg.matches(eu, req({ labels: { zone: 'EU' } }))).toBe(false);
    expect(reg.matches(eu, req({ labelsNot: { tier: ['spot'] } }))).toBe(false);
    expect(reg.matches(us, req({ labelsNot: { tier: ['spot'] } }))).toBe(true);
    expect(reg.matches(eu, req({ labelsNot: { tier: ['ondemand', 'reserved'] } }))).toBe(true);
  });

  it('matches GPU count, memory per GPU and model (case-insensitive substring)', () => {
    const reg = new AgentRegistry();
    const g = join(reg, 'g', { gpus: [gpu(0, 'NVIDIA A100-SXM4-40GB', 40_960), gpu(1, 'NVIDIA A100-SXM4-40GB', 40_960), gpu(2, 'Tesla T4', 15_360)] });
    const plain = join(reg, 'plain');
    const gr = (count: number, min_memory_mib = 0, model: string | null = null) => req({ gpus: { count, min_memory_mib, model } });
    expect(reg.matches(g, gr(3))).toBe(true);
    expect(reg.matches(g, gr(4))).toBe(false);
    expect(reg.matches(g, gr(2, 40_000))).toBe(true);
    expect(reg.matches(g, gr(3, 40_000))).toBe(false);
    expect(reg.matches(g, gr(2, 0, 'a100'))).toBe(true);
    expect(reg.matches(g, gr(1, 0, 't4'))).toBe(true);
    expect(reg.matches(g, gr(2, 0, 't4'))).toBe(false);
    expect(reg.matches(g, gr(1, 20_000, 't4'))).toBe(false);
    expect(reg.matches(plain, gr(1))).toBe(false);
  });

  it('allocates free GPUs exclusively, smallest fitting first, and frees them on release', () => {
    const reg = new AgentRegistry();
    const g = join(reg, 'g', { max_jobs: 8, gpus: [gpu(0, 'A100', 81_920), gpu(1, 'A100', 40_960), gpu(2, 'A100', 40_960)] });
    const one = { count: 1, min_memory_mib: 0, model: null };
    expect(reg.allocateGpus(g, null)).toEqual([]);
    expect(reg.allocateGpus(g, one)).toEqual([1]);
    reg.hold(g, 'a1', [1], 0);
    expect(reg.allocateGpus(g, one)).toEqual([2]);
    reg.hold(g, 'a2', [2], 0);
    expect(reg.allocateGpus(g, one)).toEqual([0]);
    expect(reg.allocateGpus(g, { count: 2, min_memory_mib: 0, model: null })).toBeNull();
    expect(reg.allocateGpus(g, { count: 1, min_memory_mib: 50_000, model: null })).toEqual([0]);
    expect([...g.gpusInUse]).toEqual([
      ['a1', [1]],
      ['a2', [2]],
    ]);
    reg.release('g', 'a1');
    expect(g.gpusInUse.has('a1')).toBe(false);
    // 2 is still held: the two free ones are 0 and 1
    expect(reg.allocateGpus(g, { count: 2, min_memory_mib: 0, model: null })).toEqual([0, 1]);
  });

  it('frees GPUs when the attempt gives its slot back, also through a replaced entry of the agent', () => {
    const reg = new AgentRegistry();
    const g = join(reg, 'g', { gpus: [gpu(0, 'T4', 15_360)] });
    reg.hold(g, 'a1', [0], 0);
    expect(reg.allocateGpus(g, { count: 1, min_memory_mib: 0, model: null })).toBeNull();
    reg.release('g', 'a1');
    expect(reg.allocateGpus(g, { count: 1, min_memory_mib: 0, model: null })).toEqual([0]);
    // a hold through the replaced entry takes the current entry's slot and GPU
    const { entry: g2 } = reg.connect(hello('g', { gpus: [gpu(0, 'T4', 15_360)] }), new FakeChannel(), 1);
    reg.markWelcomed(g2);
    reg.hold(g, 'a2', [0], 1);
    expect([...g2.running]).toEqual(['a2']);
    expect(reg.allocateGpus(g2, { count: 1, min_memory_mib: 0, model: null })).toBeNull();
    reg.release('g', 'a2');
    expect(reg.allocateGpus(g2, { count: 1, min_memory_mib: 0, model: null })).toEqual([0]);
  });
});

describe('AgentRegistry slots', () => {
  it('gives slots only to connected, welcomed, active, healthy agents, up to max_jobs', () => {
    const reg = new AgentRegistry();
    const { entry: a } = reg.connect(hello('a', { max_jobs: 2 }), new FakeChannel(), 0);
    expect(reg.freeSlots(a, 0)).toBe(0); // not welcomed yet
    reg.markWelcomed(a);
    expect(reg.freeSlots(a, 0)).toBe(2);
    reg.hold(a, 'x1', [], 0);
    reg.hold(a, 'x2', [], 0);
    expect(reg.freeSlots(a, 0)).toBe(0);
    expect(reg.pick(req(), 0)).toBeNull();
    reg.release('a', 'x1');
    expect(reg.freeSlots(a, 0)).toBe(1);
    reg.setControl(a, 'paused');
    expect(reg.freeSlots(a, 0)).toBe(0);
    expect(reg.pick(req(), 0)).toBeNull();
    reg.setControl(a, 'draining');
    expect(reg.pick(req(), 0)).toBeNull();
    reg.setControl(a, 'active');
    expect(reg.pick(req(), 0)?.agent).toBe(a);
    reg.setHeartbeat(a, { running: ['x2'], health: { accepting: false, problem: 'disk full: 120 MiB free' } }, 5);
    expect(a.health).toEqual({ accepting: false, problem: 'disk full: 120 MiB free' });
    expect(reg.freeSlots(a, 5)).toBe(0);
    expect(reg.pick(req(), 5)).toBeNull();
    reg.setHeartbeat(a, { running: ['x2'], health: { accepting: true, problem: null } }, 6);
    expect(reg.pick(req(), 6)?.agent).toBe(a);
    reg.markDisconnected(a, 7 + 30_000);
    expect(a.state).toBe('disconnected');
    expect(a.lostAt).toBe(30_007);
    expect(reg.freeSlots(a, 7)).toBe(0);
    expect(reg.pick(req(), 7)).toBeNull();
  });

  it('starts unhealthy when the hello says so', () => {
    const reg = new AgentRegistry();
    const a = join(reg, 'a', { health: { accepting: false, problem: 'Docker Engine unreachable' } });
    expect(reg.freeSlots(a, 0)).toBe(0);
    expect(reg.pick(req(), 0)).toBeNull();
  });

  it('keeps control, running attempts and their GPUs across a reconnect', () => {
    const reg = new AgentRegistry();
    const a = join(reg, 'a', { max_jobs: 3, gpus: [gpu(0, 'T4', 15_360)] });
    reg.hold(a, 'x1', [0], 0);
    reg.setControl(a, 'draining');
    reg.markDisconnected(a, 30_000);
    const { entry: b, previousSession } = reg.connect(hello('a', { max_jobs: 3, gpus: [gpu(0, 'T4', 15_360)] }), new FakeChannel(), 10);
    reg.markWelcomed(b);
    expect(previousSession).toBe('a-session-1');
    expect(b).not.toBe(a);
    expect(b.control).toBe('draining');
    expect([...b.running]).toEqual(['x1']);
    expect(b.gpusInUse.get('x1')).toEqual([0]);
    expect(reg.pick(req(), 10)).toBeNull();
    reg.setControl(b, 'active');
    expect(reg.pick(req(), 10)?.agent).toBe(b);
    // the replaced entry no longer takes part: changing it moves nothing
    reg.setControl(a, 'paused');
    reg.markLost(a);
    expect(a.state).toBe('lost');
    expect(reg.connected()).toEqual([b]);
    expect(reg.pick(req(), 10)?.agent).toBe(b);
  });

  it('stores heartbeat load and GPU use', () => {
    const reg = new AgentRegistry();
    const a = join(reg, 'a');
    expect(a.metrics).toBeNull();
    const load = { load1: 1.5, cpus: 4, mem_used_mib: 1000, mem_total_mib: 8000, disk_free_mib: 50_000 };
    reg.setHeartbeat(a, { running: [], load, gpus: [{ index: 0, memory_used_mib: 100, utilization_pct: 12 }] }, 42);
    expect(a.metrics).toEqual({ at: 42, load, gpus: [{ index: 0, memory_used_mib: 100, utilization_pct: 12 }] });
    // a heartbeat without load keeps the last one
    reg.setHeartbeat(a, { running: [] }, 50);
    expect(a.metrics?.at).toBe(42);
  });
});

describe('AgentRegistry agent states', () => {
  it('follows the agent state table and rejects transitions it does not list', () => {
    const reg = new AgentRegistry();
    const a = join(reg, 'a');
    expect(a.state).toBe('connected');
    reg.markDisconnected(a, 100);
    expect([a.state, a.welcomed, a.channel, a.lostAt]).toEqual(['disconnected', false, null, 100]);
    expect(() => reg.markDisconnected(a, 200)).toThrow(/illegal agent a transition disconnected -> disconnected/);
    reg.markLost(a);
    expect([a.state, a.lostAt]).toEqual(['lost', null]);
    expect(() => reg.markLost(a)).toThrow(/illegal agent a transition lost -> lost/);
    expect(() => reg.markDisconnected(a, 300)).toThrow(/illegal agent a transition lost -> disconnected/);
    // only a hello brings a lost agent back
    const { entry: b } = reg.connect(hello('a', { session: 'a-session-2' }), new FakeChannel(), 400);
    expect(b.state).toBe('connected');
    // an agent known only from the state file starts disconnected, lost at the end of the grace
    const p = reg.placeholder('p', 'p-session-1', 0, 5_000);
    expect([p.state, p.lostAt, p.hello]).toEqual(['disconnected', 5_000, null]);
    reg.markLost(p);
    expect(p.state).toBe('lost');
  });

  it('lists every agent state with its transitions in shared/states.ts', () => {
    expect([...AGENT_STATES]).toEqual(['connected', 'disconnected', 'lost']);
    for (const from of AGENT_STATES) expect(canAgentTransition(from, 'connected')).toBe(true);
    expect(canAgentTransition('connected', 'disconnected')).toBe(true);
    expect(canAgentTransition('connected', 'lost')).toBe(true);
    expect(canAgentTransition('disconnected', 'lost')).toBe(true);
    expect(canAgentTransition('lost', 'disconnected')).toBe(false);
    expect(canAgentTransition('disconnected', 'disconnected')).toBe(false);
    expect(() => agentTransition('lost', 'disconnected', 'agent x')).toThrow('illegal agent x transition lost -> disconnected');
  });

  it('keeps entries read-only from outside: writing a field throws', () => {
    const reg = new AgentRegistry();
    const a = join(reg, 'a');
    const w = a as unknown as Record<string, unknown>;
    for (const field of ['state', 'welcomed', 'control', 'health', 'channel', 'lostAt', 'lastSeenAt', 'running', 'gpusInUse', 'metrics']) {
      expect(() => {
        w[field] = null;
      }, field).toThrow(TypeError);
    }
    expect(a.state).toBe('connected');
    reg.markSeen(a, 77);
    expect(a.lastSeenAt).toBe(77);
    expect(() => reg.markWelcomed({ ...a } as AgentEntry)).toThrow(/not an entry of the agent registry/);
  });
});

describe('AgentRegistry.whyNoMatch', () => {
  it('names the missing platform, emulation, labels and GPUs', () => {
    const reg = new AgentRegistry();
    expect(reg.whyNoMatch(req())).toBe('no connected agent has platform linux/amd64');
    join(reg, 'x86', {
      labels: { zone: 'eu', tier: 'spot' },
      platforms: [
        { platform: 'linux/amd64', emulated: false },
        { platform: 'linux/s390x', emulated: true },
      ],
      gpus: [gpu(0, 'Tesla T4', 15_360)],
    });
    expect(reg.whyNoMatch(req())).toBeNull();
    expect(reg.whyNoMatch(req({ platform: 'linux/arm64' }))).toBe('no connected agent has platform linux/arm64');
    expect(reg.whyNoMatch(req({ platform: 'linux/s390x' }))).toBe(
      'no connected agent has platform linux/s390x natively (agent x86 emulates it; set allow_emulation: true)',
    );
    expect(reg.whyNoMatch(req({ platform: 'linux/s390x', allowEmulation: true }))).toBeNull();
    expect(reg.whyNoMatch(req({ labels: { zone: 'us' } }))).toBe('no connected agent with platform linux/amd64 has label zone=us');
    expect(reg.whyNoMatch(req({ labelsNot: { tier: ['spot'] } }))).toBe(
      'every connected agent with platform linux/amd64 has tier=spot (the node requires tier!=spot)',
    );
    expect(reg.whyNoMatch(req({ gpus: { count: 2, min_memory_mib: 16_000, model: null } }))).toBe('no connected agent has 2 GPUs with >= 16000 MiB');
    expect(reg.whyNoMatch(req({ gpus: { count: 2, min_memory_mib: 0, model: 't4' } }))).toBe(
      "no connected agent has 2 GPUs of model 't4' (the most on one agent is 1, on x86)",
    );
    expect(reg.whyNoMatch(req({ gpus: { count: 1, min_memory_mib: 0, model: 't4' } }))).toBeNull();
  });

  it('says when labels exist only on different agents, and ignores disconnected agents', () => {
    const reg = new AgentRegistry();
    join(reg, 'a', { labels: { zone: 'eu' } });
    const b = join(reg, 'b', { labels: { disk: 'ssd' } });
    expect(reg.whyNoMatch(req({ labels: { zone: 'eu', disk: 'ssd' } }))).toBe('no connected agent with platform linux/amd64 has labels zone=eu, disk=ssd together');
    reg.markDisconnected(b, 30_000);
    expect(reg.whyNoMatch(req({ labels: { disk: 'ssd' } }))).toBe('no connected agent with platform linux/amd64 has label disk=ssd');
    // paused or busy agents still match: that is a wait, not a mismatch
    const a = reg.get('a')!;
    reg.setControl(a, 'paused');
    expect(reg.whyNoMatch(req({ labels: { zone: 'eu' } }))).toBeNull();
  });

  it('lists the emulating agents by name', () => {
    const reg = new AgentRegistry();
    for (const n of ['e1', 'e2']) join(reg, n, { platforms: [{ platform: 'linux/s390x', emulated: true }] });
    expect(reg.whyNoMatch(req({ platform: 'linux/s390x' }))).toBe(
      'no connected agent has platform linux/s390x natively (agents e1, e2 emulate it; set allow_emulation: true)',
    );
  });
});
