/**
 * Heartbeat metrics: load from the os counters (rounded, clamped to what the protocol
 * accepts), GPU use parsed from nvidia-smi (the fake one in test/fixtures, run as a real
 * process; `[N/A]` values handled), and the GPU sampler running at most one nvidia-smi
 * per interval in the background while heartbeats take the last sample without waiting.
 */
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverGpus, parseGpuUse, queryGpuUse } from '../../agent/gpus.js';
import { GpuSampler, diskSpace, sampleLoad } from '../../agent/host-metrics.js';
import { Load, type GpuUsePayload } from '../../shared/index.js';
import { REPO } from '../helpers/cluster.js';

const MIB = 1024 * 1024;

describe('host load', () => {
  it('reports load, CPUs, memory and free disk in the protocol’s units', () => {
    const load = sampleLoad(1536 * MIB + 5, { loadavg: () => [1.234, 0.5, 0.1], cpus: () => 8, totalmem: () => 16_384 * MIB, freemem: () => 4096 * MIB });
    expect(load).toEqual({ load1: 1.23, cpus: 8, mem_used_mib: 12_288, mem_total_mib: 16_384, disk_free_mib: 1536 });
    expect(Load.safeParse(load).success).toBe(true);
  });

  it('stays valid for odd counters and unknown disk space', () => {
    const load = sampleLoad(null, { loadavg: () => [Number.NaN], cpus: () => 0, totalmem: () => 100 * MIB, freemem: () => 200 * MIB });
    expect(load).toEqual({ load1: 0, cpus: 1, mem_used_mib: 0, mem_total_mib: 100, disk_free_mib: null });
    expect(Load.safeParse(load).success).toBe(true);
  });

  it('measures this host for real', async () => {
    const space = await diskSpace(tmpdir());
    expect(space.total).toBeGreaterThan(0);
    expect(space.free).toBeLessThanOrEqual(space.total);
    expect(Load.safeParse(sampleLoad(space.free)).success).toBe(true);
  });
});

describe('GPU use', () => {
  let dir: string;
  let env: Record<string, string | undefined>;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-gpu-'));
    await mkdir(join(dir, 'bin'));
    await symlink(join(REPO, 'test', 'fixtures', 'fake-nvidia-smi'), join(dir, 'bin', 'nvidia-smi'));
    env = { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` };
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('parses memory used and utilisation; [N/A] utilisation is null, unknown memory leaves the GPU out', () => {
    expect(parseGpuUse('0, 1200, 35\n1, 80, [N/A]\n2, [N/A], 10\n\ngarbage\n')).toEqual([
      { index: 0, memory_used_mib: 1200, utilization_pct: 35 },
      { index: 1, memory_used_mib: 80, utilization_pct: null },
    ]);
  });

  it('asks the (fake) nvidia-smi on PATH, and gets nothing from one that fails', async () => {
    const e = { ...env, FAKE_GPUS: '0,Tesla T4,15360,GPU-x,900,12;3,Tesla T4,15360,[N/A],0,[N/A]' };
    expect(await discoverGpus(e)).toEqual([
      { index: 0, model: 'Tesla T4', memory_mib: 15360, uuid: 'GPU-x' },
      { index: 3, model: 'Tesla T4', memory_mib: 15360, uuid: null },
    ]);
    expect(await queryGpuUse(e)).toEqual([
      { index: 0, memory_used_mib: 900, utilization_pct: 12 },
      { index: 3, memory_used_mib: 0, utilization_pct: null },
    ]);
    expect(await queryGpuUse({ ...e, FAKE_NVIDIA_SMI_FAIL: '1' })).toBeNull();
    expect(await discoverGpus({ ...e, FAKE_NVIDIA_SMI_FAIL: '1' })).toEqual([]);
  });

  it('samples at most once per interval, in the background, keeping the last good sample', async () => {
    let now = 0;
    let calls = 0;
    let release: (s: GpuUsePayload[] | null) => void = () => {};
    const sampler = new GpuSampler(
      () => {
        calls++;
        return new Promise((r) => (release = r));
      },
      1000,
      () => now,
    );
    expect(sampler.latest()).toEqual([]);
    sampler.poke();
    sampler.poke(); // one in flight: no second query
    expect(calls).toBe(1);
    expect(sampler.latest()).toEqual([]); // the heartbeat does not wait
    release([{ index: 0, memory_used_mib: 5, utilization_pct: 1 }]);
    await sampler.settled();
    expect(sampler.latest()).toEqual([{ index: 0, memory_used_mib: 5, utilization_pct: 1 }]);
    now = 999;
    sampler.poke();
    expect(calls).toBe(1);
    now = 1000;
    sampler.poke();
    expect(calls).toBe(2);
    release(null); // nvidia-smi failed: the last sample stays
    await sampler.settled();
    expect(sampler.latest()).toEqual([{ index: 0, memory_used_mib: 5, utilization_pct: 1 }]);
  });
});
