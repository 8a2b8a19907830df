/**
 * The Agent class against a protocol double on a real WebSocket (noop executor): hello
 * and heartbeats carry health, load and GPU use; a change of health is sent at once (the
 * heartbeat interval here is a minute, so any heartbeat seen is that one); while not
 * accepting, and for GPU indexes it does not have, it rejects assignments with the
 * reason; and the cut-off rule: attempts held longer than S without a frame from the
 * coordinator are forgotten, never before (time is injected).
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent, DEFAULT_CUTOFF_CANCEL_MS, cutoffCheckInterval } from '../../agent/agent.js';
import { NoopExecutor } from '../../agent/executors/noop-executor.js';
import { HealthMonitor } from '../../agent/health.js';
import { waitFor } from '../helpers/cluster.js';
import { FakeCoordinator, type FakeCoordinatorOptions } from '../helpers/fake-coordinator.js';
import { AGENT_SOCKET_PATH } from '../../shared/index.js';

const MIB = 1024 * 1024;
const logger = pino({ level: 'silent' });

describe('agent assignments, heartbeats and cut-off', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(o: FakeCoordinatorOptions & { free?: () => number; now?: () => number } = {}) {
    const fake = await new FakeCoordinator({ heartbeatIntervalMs: 60_000, ...o }).start();
    const health = new HealthMonitor({ workDir: '/w', minFreeBytes: 100 * MIB, space: async () => ({ free: (o.free ?? (() => 1000 * MIB))(), total: 10_000 * MIB }), ping: null, logger });
    await health.start();
    const agent = new Agent({
      url: `${fake.url.replace('http', 'ws')}${AGENT_SOCKET_PATH}`,
      token: 't',
      name: 'unit',
      labels: {},
      maxJobs: 2,
      extraPlatforms: [],
      executor: new NoopExecutor('x64'),
      gpus: [
        { index: 0, model: 'T4', memory_mib: 15360, uuid: null },
        { index: 2, model: 'T4', memory_mib: 15360, uuid: null },
      ],
      gpuUse: { latest: () => [{ index: 0, memory_used_mib: 7, utilization_pct: 3 }], poke: () => {} },
      logger,
      health,
      ...(o.now ? { now: o.now } : {}),
    });
    const running = agent.run();
    cleanups.push(async () => {
      health.stop();
      await agent.stop();
      await running;
      await fake.stop();
      expect(fake.errors).toEqual([]);
    });
    await waitFor('the hello', () => fake.connected && fake.hellos.length > 0);
    return { fake, agent, health };
  }

  it('hello and heartbeats carry health, load and GPU use; a health change is sent at once', async () => {
    let free = 1000 * MIB;
    const { fake, agent, health } = await setup({ free: () => free });
    expect(fake.hellos[0]!.health).toEqual({ accepting: true, problem: null });
    const hb = agent.heartbeatPayload();
    expect(hb.health).toEqual({ accepting: true, problem: null });
    expect(hb.gpus).toEqual([{ index: 0, memory_used_mib: 7, utilization_pct: 3 }]);
    expect(hb.load?.disk_free_mib).toBe(1000);
    expect(hb.load?.cpus).toBeGreaterThan(0);
    free = 10 * MIB;
    await health.check();
    await fake.waitFrame('heartbeat'); // one goes out right after the welcome
    const sent = await fake.waitFrame('heartbeat', undefined, (h) => h.health?.accepting === false);
    expect(sent.health).toEqual({ accepting: false, problem: 'only 10 MiB free in /w (min_free_disk is 100 MiB)' });
    expect(sent.load?.disk_free_mib).toBe(10);

    fake.assign({ attempt_id: 'a-1' });
    expect((await fake.waitFrame('reject', 'a-1')).reason).toBe('the agent is not taking work: only 10 MiB free in /w (min_free_disk is 100 MiB)');

    free = 1000 * MIB;
    await health.check();
    await fake.waitFrame('heartbeat', undefined, (h) => h.health?.accepting === true);
    fake.assign({ attempt_id: 'a-2' });
    expect((await fake.waitFrame('finished', 'a-2')).status).toBe('success');
  });

  it('rejects GPU indexes it does not have and takes the ones it has', async () => {
    const { fake } = await setup();
    fake.assign({ attempt_id: 'g-1', gpus: [1] });
    expect((await fake.waitFrame('reject', 'g-1')).reason).toBe('GPU 1 is not on this agent (it has GPU 0, 2)');
    fake.assign({ attempt_id: 'g-2', gpus: [0, 2] });
    expect((await fake.waitFrame('finished', 'g-2')).status).toBe('success');
  });

  it('forgets what it holds once the coordinator was silent longer than S, not before', async () => {
    let now = 1_000_000;
    const { fake, agent } = await setup({ cutoffCancelMs: 1500, now: () => now });
    fake.blackhole = true; // nothing acked: the finished report stays held
    fake.assign({ attempt_id: 'c-1' });
    await waitFor('the agent to hold the attempt', () => agent.attempts().includes('c-1'));
    await waitFor('the build to end', () => agent.runningJobs() === 0);
    now += 1500;
    agent.checkCutoff();
    expect(agent.attempts()).toEqual(['c-1']);
    now += 1;
    agent.checkCutoff();
    expect(agent.attempts()).toEqual([]);
    fake.blackhole = false;
    fake.dropConnection();
    await waitFor('the reconnect', () => fake.hellos.length === 2);
    expect(fake.hellos[1]!.running).toEqual([]);
  });

  it('checks the cut-off on an interval derived from S', () => {
    expect(DEFAULT_CUTOFF_CANCEL_MS).toBe(300_000);
    expect(cutoffCheckInterval(300_000)).toBe(10_000);
    expect(cutoffCheckInterval(1500)).toBe(150);
    expect(cutoffCheckInterval(100)).toBe(50);
  });
});
