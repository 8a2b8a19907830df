/**
 * The assign payload and the reuse key come from one function of the node
 * (coordinator/builds/node-execution.ts): every field of `nodeExecution` is sent to the
 * agent and changes the spec digest (hence the idempotency key), and every node-derived
 * field of the assign payload comes from it or is a declared run limit. A new field that
 * defines what is built is therefore added in exactly one place, `nodeExecution`; adding
 * it to the payload any other way fails here.
 */
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../coordinator/builds/canonical-json.js';
import { idempotencyKey, specDigest } from '../../coordinator/builds/idempotency.js';
import { assignPayload, imageTag, nodeExecution, nodeRunLimits, type AttemptAssignment, type NodeExecution } from '../../coordinator/builds/node-execution.js';
import type { BuildRecord, NodeRecord } from '../../coordinator/state/records.js';
import { nodeCache } from '../../coordinator/builds/layer-cache-refs.js';
import { sha256, validateSpec } from '../../shared/index.js';

/** Per-attempt fields of the payload: not derived from the node's definition. */
const ATTEMPT_FIELDS = ['attempt_id', 'build_id', 'node', 'attempt', 'image_tag', 'resolve', 'gpus'] as const;
/** How the execution is run; deliberately not part of the key (they do not change a result). */
const RUN_LIMIT_FIELDS = ['timeout_ms', 'no_cache', 'cache'] as const;

function node(over: Record<string, unknown> = {}): NodeRecord {
  const r = validateSpec(
    {
      name: 't',
      nodes: {
        up: { dockerfile_inline: 'FROM scratch\n', outputs: { bin: '/out/bin' } },
        n: {
          dockerfile_inline: 'FROM busybox\nRUN true\n',
          build_args: { A: '1' },
          target: 'final',
          inputs: { src: { from: 'up.bin', mount: '/src' } },
          outputs: { out: '/out/x', log: '/out/log' },
          test: { command: ['sh', '-c', 'true'], env: { T: '1' } },
          ...over,
        },
      },
    },
    { form: 'submitted', defaultPlatform: 'linux/amd64' },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const n = r.value.nodes.find((x) => x.name === 'n')!;
  return { ...n, state: 'ready', attempts: [], ready_at: null, started_at: null, finished_at: null, reason: null, reused_from: null, waiting_on: null } as NodeRecord;
}

const DIGESTS = { src: sha256('up output') };
const ATTEMPT: AttemptAssignment = { attempt_id: 'a-1', build_id: 'b-1', node: 'n', attempt: 1, image_tag: 'kiln-build/b-1:n', resolve: true, gpus: [] };

/** A different value of the same shape, for one field of the execution. */
function other(key: keyof NodeExecution, exec: NodeExecution): unknown {
  switch (key) {
    case 'platform':
      return 'linux/arm64';
    case 'context':
      return sha256('another context');
    case 'dockerfile':
      return 'other/Dockerfile';
    case 'dockerfile_inline':
      return 'FROM busybox\nRUN false\n';
    case 'build_args':
      return { A: '2' };
    case 'target':
      return 'other';
    case 'inputs':
      return exec.inputs.map((i) => ({ ...i, digest: sha256('another upstream output') }));
    case 'outputs':
      return [...exec.outputs, { name: 'extra', path: '/out/extra' }];
    case 'test':
      return { command: ['sh', '-c', 'false'], env: exec.test!.env };
    case 'images':
      return ['r.io/other:2'];
    case 'index':
      return [];
    case 'secrets':
      return [...(exec.secrets ?? []), { name: 'other', version: 7 }];
  }
}

describe('node execution: one definition for the assign payload and the reuse key', () => {
  const n = node();
  const exec = nodeExecution(n, DIGESTS);
  const payload = assignPayload(ATTEMPT, exec, nodeRunLimits(n)) as Record<string, unknown>;

  it('sends every field of the execution to the agent', () => {
    for (const [key, value] of Object.entries(exec)) {
      if (key === 'test') expect(payload.test).toMatchObject(value as object);
      else expect(payload[key], key).toEqual(value);
    }
  });

  it('changes the spec digest (and so the idempotency key) when any field of the execution changes', () => {
    const base = specDigest(exec);
    const bases = [{ ref: 'busybox', digest: sha256('busybox image') }];
    for (const key of Object.keys(exec) as Array<keyof NodeExecution>) {
      const changed = { ...exec, [key]: other(key, exec) } as NodeExecution;
      expect(specDigest(changed), key).not.toBe(base);
      expect(idempotencyKey(specDigest(changed), bases), key).not.toBe(idempotencyKey(base, bases));
    }
    // No test at all is a change too (and keeps keys made before tests existed).
    expect(specDigest({ ...exec, test: null })).not.toBe(base);
  });

  it('derives every other payload field from the attempt or the declared run limits only', () => {
    const known = new Set<string>([...Object.keys(exec), ...ATTEMPT_FIELDS, ...RUN_LIMIT_FIELDS]);
    const stray = Object.keys(payload).filter((k) => !known.has(k));
    // A field here is node-derived but bypasses nodeExecution: add it there (or, if it does
    // not change what is built, to nodeRunLimits and RUN_LIMIT_FIELDS).
    expect(stray).toEqual([]);
    expect(payload.test).toEqual({ ...exec.test, timeout_ms: n.test!.timeout_ms });
  });

  it('leaves the key unchanged by what does not change the result: name, labels, timeouts, no_cache', () => {
    const base = specDigest(exec);
    const relaxed = node({ timeout: '2h', labels: { gpu: 'yes' }, no_cache: true, test: { command: ['sh', '-c', 'true'], env: { T: '1' }, timeout: '1h' } });
    expect(specDigest(nodeExecution({ ...relaxed, name: 'renamed' }, DIGESTS))).toBe(base);
  });

  it('keeps the spec digest of earlier releases (reuse records on disk stay valid)', () => {
    // The digest as it was computed before nodeExecution existed (issue 9), field by field.
    const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : 1);
    const before = (nd: NodeRecord, digests: Record<string, string>) =>
      sha256(
        canonicalJson({
          v: 1,
          platform: nd.platform,
          context: nd.context,
          dockerfile: nd.dockerfile,
          dockerfile_inline: nd.dockerfile_inline,
          build_args: nd.build_args,
          target: nd.target,
          inputs: [...nd.inputs].sort(byName).map((i) => ({ name: i.name, digest: digests[i.name] ?? null, mount: i.mount, env: i.env })),
          outputs: [...nd.outputs].sort(byName),
          ...(nd.test ? { test: { command: nd.test.command, env: nd.test.env } } : {}),
        }),
      );
    expect(specDigest(exec)).toBe(before(n, DIGESTS));
    const plain = node({ test: undefined, target: undefined, build_args: undefined });
    expect(specDigest(nodeExecution(plain, DIGESTS))).toBe(before(plain, DIGESTS));
    // Output order does not matter.
    expect(specDigest({ ...exec, outputs: [...exec.outputs].reverse() })).toBe(specDigest(exec));
  });

  it('sends the refs to push and makes them part of the key (absent when a node pushes none)', () => {
    expect('images' in exec).toBe(false);
    const pushing = nodeExecution(node({ image: 'r.io/app:1' }), DIGESTS);
    expect(pushing.images).toEqual(['r.io/app:1']);
    expect(assignPayload(ATTEMPT, pushing, nodeRunLimits(n)).images).toEqual(['r.io/app:1']);
    expect(specDigest(pushing)).not.toBe(specDigest({ ...pushing, images: ['r.io/app:2'] }));
  });

  it('leaves the key unchanged by the layer-cache mode, and sends the cache ref as a run setting', () => {
    const base = specDigest(exec);
    for (const cache of ['off', { mode: 'read' }, { mode: 'readwrite' }]) {
      const withCache = node({ cache });
      expect(specDigest(nodeExecution(withCache, DIGESTS)), JSON.stringify(cache)).toBe(base);
    }
    const config = { registry: '127.0.0.1:5000/kiln-cache', mode: 'readwrite' as const, keep: 0 };
    const build = { name: 't' };
    expect(assignPayload(ATTEMPT, exec, nodeRunLimits(n))).not.toHaveProperty('cache');
    expect(assignPayload(ATTEMPT, exec, nodeRunLimits(n, nodeCache(config, build, n))).cache).toEqual({ ref: '127.0.0.1:5000/kiln-cache:linux-amd64-n--t', mode: 'readwrite' });
    expect(nodeCache(config, build, node({ cache: { mode: 'read' } }))).toEqual({ ref: '127.0.0.1:5000/kiln-cache:linux-amd64-n--t', mode: 'read' });
    expect(nodeCache(config, build, node({ cache: 'off' }))).toBeNull();
    expect(nodeCache({ ...config, mode: 'off' }, build, n)).toBeNull();
    expect(nodeCache({ ...config, mode: 'off' }, build, node({ cache: { mode: 'readwrite' } }))?.mode).toBe('readwrite');
    expect(nodeCache(null, build, n)).toBeNull();
    // with retention: a versioned ref per push, sorting by dispatch time
    const kept = nodeCache({ ...config, keep: 3 }, build, n, 1_700_000_000_000);
    expect(kept).toEqual({ ref: '127.0.0.1:5000/kiln-cache:linux-amd64-n--t', mode: 'readwrite', keep_ref: `127.0.0.1:5000/kiln-cache:linux-amd64-n--t.t${(1_700_000_000_000).toString(36).padStart(9, '0')}` });
    expect(nodeCache({ ...config, keep: 3 }, build, node({ cache: { mode: 'read' } }), 1)).not.toHaveProperty('keep_ref');
  });

  it('tags the image by build and node', () => {
    expect(imageTag({ id: 'b-1' } as BuildRecord, n)).toBe('kiln-build/b-1:n');
  });
});
