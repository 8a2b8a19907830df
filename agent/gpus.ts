/**
 * GPU discovery: asks `nvidia-smi` (when it is on PATH) for each GPU's index, model,
 * memory and UUID. No nvidia-smi, or one that fails, means no GPUs.
 */
import { execFile } from 'node:child_process';
import type { GpuInfoPayload } from '../shared/index.js';

export function parseNvidiaSmi(csv: string): GpuInfoPayload[] {
  const out: GpuInfoPayload[] = [];
  for (const line of csv.split('\n')) {
    if (!line.trim()) continue;
    const [index, name, memory, uuid] = line.split(',').map((s) => s.trim());
    const i = Number(index);
    const mem = Number(memory);
    if (!Number.isInteger(i) || !name || !Number.isFinite(mem)) continue;
    out.push({ index: i, model: name, memory_mib: Math.round(mem), uuid: uuid && uuid !== '[N/A]' ? uuid : null });
  }
  return out;
}

export function discoverGpus(env: Record<string, string | undefined>): Promise<GpuInfoPayload[]> {
  return new Promise((resolve) => {
    execFile(
      'nvidia-smi',
      ['--query-gpu=index,name,memory.total,uuid', '--format=csv,noheader,nounits'],
      { timeout: 10_000, env: env as NodeJS.ProcessEnv },
      (err, stdout) => resolve(err ? [] : parseNvidiaSmi(stdout)),
    );
  });
}
