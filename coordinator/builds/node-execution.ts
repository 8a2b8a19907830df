/**
 * What a node asks of the farm, as functions of the node alone:
 *
 * - `nodeExecution`: every field that defines what gets built (platform, context,
 *   Dockerfile, build args, target, inputs with their digests, outputs, test command,
 *   the names and versions of its build secrets).
 *   The `assign` payload spreads it and the reuse key hashes it (idempotency.ts), so the
 *   two cannot disagree: a field added here is sent to the agent and changes the key,
 *   with nothing else to update (test/unit/engine.node-execution.test.ts checks it).
 * - `nodeRunLimits`: how the execution is run (time limits, cache use). Sent in the
 *   assignment, not part of the key: they do not change a successful result.
 * - `assignPayload`: the assignment, from the execution, the limits and the attempt.
 */
import type { AssignCachePayload, IndexEntryPayload, Payload } from '../../shared/index.js';
import type { BuildRecord, NodeRecord } from '../state/records.js';

export interface NodeExecution {
  platform: string;
  context: string | null;
  dockerfile: string | null;
  dockerfile_inline: string | null;
  build_args: Record<string, string>;
  target: string | null;
  inputs: Payload<'assign'>['inputs'];
  outputs: Payload<'assign'>['outputs'];
  /** Null when the node has no test (its key is then the same as before tests existed). */
  test: { command: string[]; env: Record<string, string> } | null;
  /** Refs the image is pushed to (absent when none, so keys of other nodes are unchanged). */
  images?: string[];
  /** An index node: the platform nodes' pushed images (absent for every other node). */
  index?: IndexEntryPayload[];
  /**
   * Build secrets: names and the version held at submit (absent when none, so keys of other
   * nodes are unchanged). Never values: those join the assignment as it is sent
   * (coordinator/secrets/assign-secrets.ts).
   */
  secrets?: Array<{ name: string; version: number }>;
}

/**
 * The execution a node defines, given its inputs' digests (input name -> digest) and, for
 * an index node, the build's nodes by name (its platform nodes' pushed images).
 */
export function nodeExecution(node: NodeRecord, inputDigests: Record<string, string>, nodes?: ReadonlyMap<string, NodeRecord>): NodeExecution {
  const exec: NodeExecution = {
    platform: node.platform,
    context: node.context,
    dockerfile: node.dockerfile,
    dockerfile_inline: node.dockerfile_inline,
    build_args: node.build_args,
    target: node.target,
    inputs: node.inputs.map((i) => ({ name: i.name, digest: inputDigests[i.name]!, mount: i.mount, env: i.env })),
    outputs: node.outputs,
    test: node.test ? { command: node.test.command, env: node.test.env } : null,
  };
  if (node.images && node.images.length > 0) exec.images = node.images;
  if (node.index) exec.index = indexEntries(node.index, nodes);
  if (node.secrets && node.secrets.length > 0) exec.secrets = node.secrets.map((x) => ({ name: x.name, version: x.version }));
  return exec;
}

/** Each platform node's images as its successful attempt pushed them (none when it has no result). */
function indexEntries(members: NonNullable<NodeRecord['index']>, nodes: ReadonlyMap<string, NodeRecord> | undefined): IndexEntryPayload[] {
  return members.map((m) => {
    const up = nodes?.get(m.node);
    const last = up?.attempts[up.attempts.length - 1];
    return { node: m.node, platform: m.platform, images: up?.state === 'success' && last?.state === 'success' ? (last.images ?? []) : [] };
  });
}

export interface NodeRunLimits {
  timeout_ms: number;
  no_cache: boolean;
  test_timeout_ms: number | null;
  /** Layer cache ref and mode (layer-cache-refs.ts `nodeCache`); null: none. */
  cache: AssignCachePayload | null;
}

export function nodeRunLimits(node: NodeRecord, cache: AssignCachePayload | null = null): NodeRunLimits {
  return { timeout_ms: node.timeout_ms, no_cache: node.no_cache, test_timeout_ms: node.test?.timeout_ms ?? null, cache };
}

/** Per attempt: which attempt, where it runs, and whether it resolves first. */
export interface AttemptAssignment {
  attempt_id: string;
  build_id: string;
  node: string;
  attempt: number;
  image_tag: string;
  resolve: boolean;
  gpus: number[];
}

export function assignPayload(a: AttemptAssignment, exec: NodeExecution, limits: NodeRunLimits): Payload<'assign'> {
  // Object.assign, not object spread: spreads were ~10x slower here, on the dispatch hot path.
  const test = exec.test ? Object.assign({ timeout_ms: limits.test_timeout_ms! }, exec.test) : null;
  const payload: Payload<'assign'> = Object.assign(
    { attempt_id: a.attempt_id, build_id: a.build_id, node: a.node, attempt: a.attempt, image_tag: a.image_tag, resolve: a.resolve, gpus: a.gpus, timeout_ms: limits.timeout_ms, no_cache: limits.no_cache },
    exec,
    { test },
  );
  // Layer cache: only when there is one (an assignment without it is what it was before).
  if (limits.cache) payload.cache = limits.cache;
  return payload;
}

/** The image tag an attempt's result is given on its agent. */
export function imageTag(build: BuildRecord, node: NodeRecord): string {
  return `kiln-build/${build.id}:${node.name}`;
}

