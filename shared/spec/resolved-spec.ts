/**
 * What a build spec is after validation and defaulting (build-spec.ts makes it): the nodes
 * the coordinator stores, schedules and sends, with every default filled in and every
 * reference resolved. Types only.
 */
import type { CacheMode } from './cache-spec.js';
import type { ResolvedBudget } from './budget-spec.js';
import type { ResolvedSecret } from './secrets-spec.js';
import type { ResolvedNotify } from './notify-spec.js';

export interface ResolvedInput {
  name: string;
  /** Upstream output this input is, or null for a fixed digest. */
  from: { node: string; output: string } | null;
  /** Fixed digest (`digest:` form), or null until the upstream node succeeded. */
  digest: string | null;
  mount: string | null;
  env: Record<string, string>;
}

export interface GpuRequirement {
  count: number;
  min_memory_mib: number;
  /** Case-insensitive substring of the model name, or null for any. */
  model: string | null;
}

export interface ResolvedTest {
  command: string[];
  timeout_ms: number;
  env: Record<string, string>;
}

export interface ResolvedOutput {
  name: string;
  path: string;
}

/** A node after validation and defaulting: what the coordinator stores and schedules. */
export interface ResolvedNode {
  name: string;
  platform: string;
  context: string | null;
  dockerfile: string | null;
  dockerfile_inline: string | null;
  build_args: Record<string, string>;
  /** Labels the agent must have with exactly these values. */
  labels: Record<string, string>;
  /** Label values the agent must not have (`key!=value`); an agent without the key matches. */
  labels_not: Record<string, string[]>;
  allow_emulation: boolean;
  gpus: GpuRequirement | null;
  priority: number;
  /** Infrastructure failures are retried (up to the attempt budget). */
  retry: boolean;
  test: ResolvedTest | null;
  needs: string[];
  timeout_ms: number;
  target: string | null;
  no_cache: boolean;
  inputs: ResolvedInput[];
  outputs: ResolvedOutput[];
  reuse: boolean;
  /** Normalised image refs the agent pushes after a successful build and test (absent: none). */
  images?: string[];
  /** An index node: puts one multi-platform index of these platform nodes' images at `images`. */
  index?: Array<{ node: string; platform: string }>;
  /** Axis values of the matrix combination the node was expanded for (absent: none). */
  matrix?: Record<string, string>;
  /** The spec node it was expanded from, when it is not that node itself. */
  origin?: string;
  /** Layer-cache mode the spec sets (node, else build); absent: the coordinator's `cache.mode`. */
  cache_mode?: CacheMode;
  /** The concurrency group the node itself names (absent: its build's, if any). */
  concurrency_group?: string;
  /** Build secrets the node names, with the coordinator's version of each at submit (absent: none). */
  secrets?: ResolvedSecret[];
}

export interface ResolvedSpec {
  name: string;
  nodes: ResolvedNode[];
  /** Concurrency, group and deadline of the build (absent: none). */
  budget?: ResolvedBudget;
  /** Webhooks of the build (absent: none); secret names only. */
  notify?: ResolvedNotify;
}
