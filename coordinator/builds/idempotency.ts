/**
 * Idempotency keys: when two nodes would do the same work, the second reuses the first's
 * result instead of building.
 *
 *   spec digest = sha256(canonical JSON of the node's execution (node-execution.ts): platform, context
 *                 digest, Dockerfile path or text, build args, target, inputs (name,
 *                 digest, mount, env), outputs (name, path), the test command
 *                 (a node with a test succeeds only if it passes), and the names and
 *                 versions of its build secrets (never their values))
 *   key         = sha256(canonical JSON of {spec digest, base images as the agent's
 *                 engine resolved them: ref -> image id})
 *
 * Node name, needs, labels and timeout are not part of it: they do not change what is
 * built. Changing any input digest, the context (hence a Dockerfile in it), an inline
 * Dockerfile, a build arg or a base image's id gives a new key. A base image the engine
 * does not have gives no key (nothing to reuse: the build will fail or pull).
 */
import { sha256, type BaseImagePayload, type Digest } from '../../shared/index.js';
import { canonicalJson } from './canonical-json.js';
import type { NodeExecution } from './node-execution.js';

const KEY_VERSION = 1;

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : 1);

/**
 * The digest of a node's execution (node-execution.ts): every field of it, with inputs and
 * outputs in name order and `test` absent when there is none, so keys made before tests
 * existed are unchanged.
 */
export function specDigest(exec: NodeExecution): Digest {
  // canonicalJson drops undefined members: `test` is absent when there is none.
  return sha256(canonicalJson(Object.assign({ v: KEY_VERSION }, exec, { inputs: [...exec.inputs].sort(byName), outputs: [...exec.outputs].sort(byName), test: exec.test ?? undefined })));
}

export function idempotencyKey(spec: string, baseImages: readonly BaseImagePayload[]): Digest | null {
  if (baseImages.some((b) => b.digest === null)) return null;
  const bases = [...baseImages].sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0)).map((b) => [b.ref, b.digest]);
  return sha256(canonicalJson({ v: KEY_VERSION, spec, base_images: bases }));
}
