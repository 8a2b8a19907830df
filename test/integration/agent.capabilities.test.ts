/**
 * What an agent advertises in its hello, as the coordinator reports it: native platform
 * from the Docker Engine, extra platforms marked emulated, labels, max jobs, the engine's
 * version, and GPUs as `nvidia-smi` reports them. There is no GPU on these machines: a
 * fake `nvidia-smi` on PATH prints what a two-GPU host would.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startAgent, useCluster } from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

interface AgentView {
  name: string;
  state: string;
  platforms: Array<{ platform: string; emulated: boolean }>;
  labels: Record<string, string>;
  max_jobs: number;
  docker: { version: string; api_version: string; arch: string } | null;
  gpus: Array<{ index: number; model: string; memory_mib: number; uuid: string | null }>;
}

describe('agent capabilities', () => {
  const c = useCluster('caps');

  it('reports platforms, labels, slots, engine version and GPUs from nvidia-smi', async () => {
    const bin = join(c.dir, 'bin');
    await mkdir(bin);
    const fake = join(bin, 'nvidia-smi');
    await writeFile(
      fake,
      [
        '#!/bin/sh',
        '# fake nvidia-smi: answers the query kiln makes, like a host with two GPUs',
        'case "$*" in',
        '  *--query-gpu=index,name,memory.total,uuid*--format=csv,noheader,nounits*)',
        '    echo "0, NVIDIA A100-SXM4-40GB, 40960, GPU-1111aaaa"',
        '    echo "1, NVIDIA A100-SXM4-40GB, 40960, GPU-2222bbbb" ;;',
        '  *) echo "unexpected arguments: $*" >&2; exit 2 ;;',
        'esac',
      ].join('\n'),
    );
    await chmod(fake, 0o755);
    c.track(
      await startAgent({
        coordinator: c.coord,
        name: 'gpu-box',
        workDir: join(c.dir, 'w'),
        platforms: ['linux/s390x', 'linux/arm64'],
        labels: 'gpu=true,pool=ml',
        maxJobs: 3,
        env: { PATH: `${bin}:${process.env.PATH}` },
      }),
    );
    c.track(await startAgent({ coordinator: c.coord, name: 'plain', workDir: join(c.dir, 'p') }));
    const r = await c.coord.api<{ items: AgentView[] }>(apiPath.agents());
    const gpu = r.body.items.find((a) => a.name === 'gpu-box')!;
    expect(gpu.platforms).toEqual([
      { platform: 'linux/amd64', emulated: false },
      { platform: 'linux/s390x', emulated: true },
      { platform: 'linux/arm64', emulated: true },
    ]);
    expect(gpu.labels).toEqual({ gpu: 'true', pool: 'ml' });
    expect(gpu.max_jobs).toBe(3);
    expect(gpu.docker?.version).toMatch(/^\d+\.\d+/);
    expect(gpu.docker?.arch).toBe('amd64');
    expect(gpu.gpus).toEqual([
      { index: 0, model: 'NVIDIA A100-SXM4-40GB', memory_mib: 40960, uuid: 'GPU-1111aaaa' },
      { index: 1, model: 'NVIDIA A100-SXM4-40GB', memory_mib: 40960, uuid: 'GPU-2222bbbb' },
    ]);
    const plain = r.body.items.find((a) => a.name === 'plain')!;
    expect(plain.gpus).toEqual([]);
    expect(plain.platforms).toEqual([{ platform: 'linux/amd64', emulated: false }]);
  });
});
