/**
 * Idempotency keys: when two nodes would do the same work, the second reuses the first's
 * result instead of building.
 *
 *   spec digest = sha256(canonical JSON of what the build depends on: platform, context
 *                 digest, Dockerfile path or text, build args, target, inputs (name,
 *                 digest, mount, env), outputs (name, path) and the test command
 *                 (a node with a test succeeds only if it passes))
 *   key         = sha256(canonical JSON of {spec digest, base images as the agent's
 *                 engine resolved them: ref -> image id})
 *
 * Node name, needs, labels and timeout are not part of it: they do not change what is
 * built. Changing any input digest, the context (hence a Dockerfile in it), an inline
 * Dockerfile, a build arg or a base image's id gives a new key. A base image the engine
 * does not have gives no key (nothing to reuse: the build will fail or pull).
 */
import { sha256, type BaseImagePayload, type Digest } from '../../shared/index.js';
import type { NodeRecord } from '../state/records.js';
import { canonicalJson } from './canonical-json.js';

const KEY_VERSION = 1;

export function specDigest(node: NodeRecord, inputDigests: Record<string, string>): Digest {
  return sha256(
    canonicalJson({
      v: KEY_VERSION,
      platform: node.platform,
      context: node.context,
      dockerfile: node.dockerfile,
      dockerfile_inline: node.dockerfile_inline,
      build_args: node.build_args,
      target: node.target,
      inputs: [...node.inputs].sort((a, b) => (a.name < b.name ? -1 : 1)).map((i) => ({ name: i.name, digest: inputDigests[i.name] ?? null, mount: i.mount, env: i.env })),
      outputs: [...node.outputs].sort((a, b) => (a.name < b.name ? -1 : 1)),
      // Absent when the node has no test, so keys of nodes without one are unchanged.
      ...(node.test ? { test: { command: node.test.command, env: node.test.env } } : {}),
    }),
  );
}

export function idempotencyKey(spec: string, baseImages: readonly BaseImagePayload[]): Digest | null {
  if (baseImages.some((b) => b.digest === null)) return null;
  const bases = [...baseImages].sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0)).map((b) => [b.ref, b.digest]);
  return sha256(canonicalJson({ v: KEY_VERSION, spec, base_images: bases }));
}
