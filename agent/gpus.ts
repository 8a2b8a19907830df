/**
 * GPUs through `nvidia-smi`: discovery at start (index, model, memory, UUID; no
 * nvidia-smi, or one that fails, means no GPUs) and use while running (memory used and
 * utilisation per GPU, for heartbeats). Both run nvidia-smi asynchronously with a time
 * limit, so a hung driver cannot stall the agent.
 */
import { execFile } from 'node:child_process';
import type { GpuInfoPayload, GpuUsePayload } from '../shared/core.js';

export const GPU_INFO_QUERY = ['--query-gpu=index,name,memory.total,uuid', '--format=csv,noheader,nounits'];
export const GPU_USE_QUERY = ['--query-gpu=index,memory.used,utilization.gpu', '--format=csv,noheader,nounits'];

/** A number nvidia-smi printed, or null for `[N/A]`, `[Not Supported]` and the like. */
function num(text: string | undefined): number | null {
  if (text === undefined || !/^\d+(\.\d+)?$/.test(text)) return null;
  return Number(text);
}

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

/** Parses `index, memory.used, utilization.gpu` lines; a GPU whose memory use is unknown is left out. */
export function parseGpuUse(csv: string): GpuUsePayload[] {
  const out: GpuUsePayload[] = [];
  for (const line of csv.split('\n')) {
    if (!line.trim()) continue;
    const [index, used, util] = line.split(',').map((s) => s.trim());
    const i = num(index);
    const mem = num(used);
    if (i === null || !Number.isInteger(i) || mem === null) continue;
    const pct = num(util);
    out.push({ index: i, memory_used_mib: Math.round(mem), utilization_pct: pct === null ? null : Math.min(100, pct) });
  }
  return out;
}

function nvidiaSmi(args: string[], env: Record<string, string | undefined>, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', args, { timeout: timeoutMs, env: env as NodeJS.ProcessEnv }, (err, stdout) => resolve(err ? null : stdout));
  });
}

export async function discoverGpus(env: Record<string, string | undefined>): Promise<GpuInfoPayload[]> {
  const out = await nvidiaSmi(GPU_INFO_QUERY, env, 10_000);
  return out === null ? [] : parseNvidiaSmi(out);
}

/** Current use of every GPU; null when nvidia-smi failed (the caller keeps its last sample). */
export async function queryGpuUse(env: Record<string, string | undefined>, timeoutMs = 5_000): Promise<GpuUsePayload[] | null> {
  const out = await nvidiaSmi(GPU_USE_QUERY, env, timeoutMs);
  return out === null ? null : parseGpuUse(out);
}
