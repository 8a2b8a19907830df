/**
 * Pool views: which pool a node is in, the agents of each pool (native, emulated, paused,
 * draining, unhealthy, breaker), slots and GPUs, queued and running nodes, the oldest
 * wait and the wait percentiles of recent dispatches.
 */
import { describe, expect, it } from 'vitest';
import { AgentRegistry } from '../../coordinator/placement/agent-registry.js';
import { PoolStats, poolOf, type PoolNode } from '../../coordinator/placement/pools.js';
import { PoolView } from '../../shared/index.js';
import { FakeChannel, hello } from '../helpers/engine-harness.js';

const gpus = { count: 1, min_memory_mib: 0, model: null };

describe('poolOf', () => {
  it('puts GPU nodes in the gpu pool, others in their (normalized) platform', () => {
    expect(poolOf({ platform: 'linux/s390x', gpus: null })).toBe('linux/s390x');
    expect(poolOf({ platform: 'linux/arm64/v8' })).toBe('linux/arm64');
    expect(poolOf({ platform: 'linux/amd64', gpus })).toBe('gpu');
  });
});

describe('PoolStats.view', () => {
  it('counts agents, slots, GPUs, queued and running nodes, and waits per pool', () => {
    const reg = new AgentRegistry();
    const join = (name: string, opts: Parameters<typeof hello>[1]) => {
      const { entry } = reg.connect(hello(name, opts), new FakeChannel(), 0);
      reg.markWelcomed(entry);
      return entry;
    };
    const x86 = join('x86', {
      max_jobs: 4,
      platforms: [
        { platform: 'linux/amd64', emulated: false },
        { platform: 'linux/s390x', emulated: true },
      ],
    });
    const g = join('gpu-1', { max_jobs: 2, gpus: [0, 1].map((index) => ({ index, model: 'T4', memory_mib: 15_360, uuid: null })) });
    const arm = join('arm', { max_jobs: 2, platforms: [{ platform: 'linux/arm64', emulated: false }] });
    const gone = join('gone', { max_jobs: 8 });
    reg.markDisconnected(gone, 30_000);
    reg.setControl(arm, 'paused');
    reg.setHeartbeat(x86, { running: [], health: { accepting: false, problem: 'disk full' } }, 0);
    for (const t of [1, 2, 3]) reg.recordInfraFailure('gpu-1', t);
    reg.hold(x86, 'a1', [], 0);
    reg.hold(g, 'a2', [1], 0);

    const now = 100_000;
    const nodes: PoolNode[] = [
      { state: 'ready', platform: 'linux/amd64', gpus: null, ready_at: now - 5_000 },
      { state: 'ready', platform: 'linux/amd64', gpus: null, ready_at: now - 12_000 },
      { state: 'running', platform: 'linux/amd64', gpus: null, ready_at: 0 },
      { state: 'assigned', platform: 'linux/amd64', gpus, ready_at: 0 },
      { state: 'ready', platform: 'linux/s390x', gpus: null, ready_at: now - 1_000 },
      { state: 'pending', platform: 'linux/s390x', gpus: null, ready_at: null },
      { state: 'ready', platform: 'windows/amd64', gpus: null, ready_at: now - 7 },
    ];
    const stats = new PoolStats();
    for (const ms of [10, 20, 30, 40, 1000]) stats.recordDispatch('linux/amd64', ms);
    stats.recordDispatch('gpu', 250);

    const views = stats.view(reg, nodes, now);
    for (const v of views) PoolView.parse(v);
    expect(views.map((v) => v.name)).toEqual(['linux/amd64', 'linux/arm64', 'linux/s390x', 'gpu', 'windows/amd64']);
    const by = Object.fromEntries(views.map((v) => [v.name, v]));

    expect(by['linux/amd64']).toEqual({
      name: 'linux/amd64',
      // x86 and gpu-1 (the disconnected agent does not count)
      agents: { connected: 2, native: 2, emulated: 0, paused: 0, draining: 0, unhealthy: 1, breaker_open: 1 },
      slots: { total: 6, busy: 2 },
      gpus: { total: 0, busy: 0 },
      queued: 2,
      running: 1,
      oldest_wait_ms: 12_000,
      wait_p50_ms: 30,
      wait_p95_ms: 1000,
      dispatched: 5,
    });
    expect(by['linux/s390x']).toMatchObject({ agents: { connected: 1, native: 0, emulated: 1 }, queued: 1, running: 0, oldest_wait_ms: 1000, wait_p50_ms: null, dispatched: 0 });
    expect(by['linux/arm64']).toMatchObject({ agents: { connected: 1, native: 1, paused: 1 }, slots: { total: 2, busy: 0 }, queued: 0, oldest_wait_ms: null });
    expect(by['gpu']).toMatchObject({
      agents: { connected: 1, native: 1, breaker_open: 1 },
      slots: { total: 2, busy: 1 },
      gpus: { total: 2, busy: 1 },
      running: 1,
      wait_p50_ms: 250,
      dispatched: 1,
    });
    expect(by['windows/amd64']).toMatchObject({ agents: { connected: 0 }, queued: 1, oldest_wait_ms: 7 });
  });

  it('keeps only the last `keep` waits for the percentiles, but counts every dispatch', () => {
    const stats = new PoolStats(10);
    for (let i = 0; i < 10; i++) stats.recordDispatch('linux/arm64', 5000);
    for (let i = 0; i < 10; i++) stats.recordDispatch('linux/arm64', i + 1);
    const arm = stats.view(new AgentRegistry(), [], 0).find((v) => v.name === 'linux/arm64')!;
    expect(arm.dispatched).toBe(20);
    expect(arm.wait_p50_ms).toBe(5);
    expect(arm.wait_p95_ms).toBe(10);
  });

  it('lists the standard pools even when there is nothing', () => {
    const views = new PoolStats().view(new AgentRegistry(), [], 0);
    expect(views.map((v) => [v.name, v.queued, v.agents.connected, v.wait_p50_ms])).toEqual([
      ['linux/amd64', 0, 0, null],
      ['linux/arm64', 0, 0, null],
      ['linux/s390x', 0, 0, null],
      ['gpu', 0, 0, null],
    ]);
  });

  it('rejects a nonsensical window size', () => {
    expect(() => new PoolStats(0)).toThrow(/keep must be an integer >= 1/);
  });
});
