/**
 * GPUs in placement: whether one GPU fits a node's GPU requirement (memory per GPU, model
 * as a case-insensitive substring), how a requirement is described to a person, and the
 * exclusive allocation of an agent's free GPUs to an attempt (smallest fitting first).
 */
import type { GpuInfoPayload, GpuRequirement } from '../../shared/index.js';

/** One GPU as matching sees it (the model lower-cased once). */
export interface GpuCap {
  index: number;
  modelLower: string;
  memory: number;
}

/** true when the GPU meets the memory and model parts of `req`; `modelLower` is `req.model` lower-cased (or null). */
export function gpuFits(g: { modelLower: string; memory: number }, req: GpuRequirement, modelLower: string | null): boolean {
  return g.memory >= req.min_memory_mib && (modelLower === null || g.modelLower.includes(modelLower));
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** E.g. `2 GPUs with >= 16000 MiB of model 'a100'`. */
export function describeGpus(req: GpuRequirement): string {
  return `${plural(req.count, 'GPU')}${req.min_memory_mib > 0 ? ` with >= ${req.min_memory_mib} MiB` : ''}${req.model ? ` of model '${req.model}'` : ''}`;
}

/**
 * Free GPUs of an agent (`gpus` as its hello reported them, `inUse` attempt id -> the GPU
 * indexes it holds) meeting `req`, or null when there are not enough; [] when `req` is
 * null. Prefers the smallest GPUs that fit, keeping big ones for nodes that need them.
 */
export function allocateGpus(gpus: readonly GpuInfoPayload[] | undefined, inUse: ReadonlyMap<string, readonly number[]>, req: GpuRequirement | null): number[] | null {
  if (!req) return [];
  if (!gpus || gpus.length < req.count) return null;
  let used: Set<number> | null = null;
  if (inUse.size > 0) {
    used = new Set();
    for (const list of inUse.values()) for (const i of list) used.add(i);
  }
  const modelLower = req.model ? req.model.toLowerCase() : null;
  const fit: GpuInfoPayload[] = [];
  for (const g of gpus) {
    if (used?.has(g.index)) continue;
    if (gpuFits({ modelLower: g.model.toLowerCase(), memory: g.memory_mib }, req, modelLower)) fit.push(g);
  }
  if (fit.length < req.count) return null;
  fit.sort((x, y) => x.memory_mib - y.memory_mib || x.index - y.index);
  return fit
    .slice(0, req.count)
    .map((g) => g.index)
    .sort((x, y) => x - y);
}

/** How many distinct GPUs the attempts in `inUse` hold. */
export function busyGpuCount(inUse: ReadonlyMap<string, readonly number[]>): number {
  const busy = new Set<number>();
  for (const list of inUse.values()) for (const i of list) busy.add(i);
  return busy.size;
}
