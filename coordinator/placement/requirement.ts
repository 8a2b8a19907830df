/**
 * What a node needs of an agent (its *requirement*: platform, exact and `!=` labels,
 * whether emulation is allowed, GPUs), built from the node record, and the stable key
 * that names equal requirements: the ready queues are keyed by it, and the agent registry
 * caches which capability classes match it.
 */
import { normalizePlatform, type GpuRequirement } from '../../shared/index.js';
import type { NodeRecord } from '../state/records.js';

/** What a node needs of an agent. */
export interface Requirement {
  platform: string;
  /** Labels the agent must have with exactly these values. */
  labels: Record<string, string>;
  /** Label values the agent must not have; an agent without the key matches. */
  labelsNot: Record<string, string[]>;
  /** An agent emulating the platform may run it (only when no native agent is free). */
  allowEmulation: boolean;
  gpus: GpuRequirement | null;
}

/** What a node needs from an agent, as the scheduler matches it. */
export function requirementOf(node: NodeRecord): Requirement {
  return {
    platform: node.platform,
    labels: node.labels,
    labelsNot: node.labels_not ?? {},
    allowEmulation: node.allow_emulation ?? false,
    gpus: node.gpus ?? null,
  };
}

/** A stable key for a requirement: equal requirements, equal keys (strings JSON-quoted, so none can fake a separator). */
export function requirementKey(req: Requirement): string {
  let key = `${JSON.stringify(normalizePlatform(req.platform))} ${req.allowEmulation ? 1 : 0} =`;
  const lk = Object.keys(req.labels);
  if (lk.length > 1) lk.sort();
  for (const k of lk) key += `${JSON.stringify(k)}:${JSON.stringify(req.labels[k])},`;
  key += ' !=';
  const nk = Object.keys(req.labelsNot);
  if (nk.length > 1) nk.sort();
  for (const k of nk) key += `${JSON.stringify(k)}:${JSON.stringify([...req.labelsNot[k]!].sort())},`;
  const g = req.gpus;
  if (g) key += ` gpus=${g.count}:${g.min_memory_mib}:${g.model === null ? 'any' : JSON.stringify(g.model.toLowerCase())}`;
  return key;
}
