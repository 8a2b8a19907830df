/**
 * `secrets:` in the build spec (shared/spec/secrets-spec.ts) and in the reuse key
 * (coordinator/builds/node-execution.ts): names checked and bounded, a name the
 * coordinator does not hold refused naming the node and the secret, versions recorded at
 * submit, and names and versions (never values) part of the node's key and assignment.
 */
import { describe, expect, it } from 'vitest';
import { specDigest } from '../../coordinator/builds/idempotency.js';
import { assignPayload, nodeExecution, nodeRunLimits } from '../../coordinator/builds/node-execution.js';
import type { NodeRecord } from '../../coordinator/state/records.js';
import { MAX_NODE_SECRETS, validateSpec, type ResolvedSpec } from '../../shared/index.js';

const held = new Map([
  ['tok', 3],
  ['npm_token', 7],
]);
const store = { version: (n: string) => held.get(n) };

function check(node: Record<string, unknown>, withStore = true) {
  return validateSpec({ nodes: { n: { dockerfile_inline: 'FROM x\n', ...node } } }, { form: 'submitted', defaultPlatform: 'linux/amd64', ...(withStore ? { secrets: store } : {}) });
}

function nodeOf(r: ReturnType<typeof check>): NodeRecord {
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const n = (r.value as ResolvedSpec).nodes[0]!;
  return { ...n, state: 'ready', attempts: [], ready_at: null, started_at: null, finished_at: null, reason: null } as NodeRecord;
}

describe('spec: secrets', () => {
  it('records each secret with the version the coordinator holds', () => {
    const n = nodeOf(check({ secrets: ['tok', 'npm_token'] }));
    expect(n.secrets).toEqual([
      { name: 'tok', version: 3 },
      { name: 'npm_token', version: 7 },
    ]);
    expect('secrets' in nodeOf(check({}))).toBe(false);
    expect('secrets' in nodeOf(check({ secrets: [] }))).toBe(false);
  });

  it('refuses a secret the coordinator does not hold, naming the node and the secret', () => {
    const r = check({ secrets: ['tok', 'nope'] });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors).toEqual([{ path: 'nodes.n.secrets', message: "node 'n': field 'secrets': secret 'nope' is not held by the coordinator (an admin sets it with: kiln secrets set nope)" }]);
  });

  it('checks names, repeats and the count; without a coordinator (the CLI) names pass with version 0', () => {
    const bad = check({ secrets: ['../etc', 'tok', 'tok'] });
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.errors.map((e) => e.message)).toEqual([expect.stringContaining("invalid secret name '../etc'"), expect.stringContaining("secret 'tok' is listed twice")]);
    const many = check({ secrets: Array.from({ length: MAX_NODE_SECRETS + 1 }, (_, i) => `s${i}`) });
    expect(many.ok).toBe(false);
    if (!many.ok) expect(many.errors[0]!.message).toContain(`at most ${MAX_NODE_SECRETS} secrets`);
    expect(check({ secrets: 'tok' }).ok).toBe(false);
    expect(nodeOf(check({ secrets: ['anything'] }, false)).secrets).toEqual([{ name: 'anything', version: 0 }]);
  });

  it('makes names and versions part of the reuse key and the assignment, and leaves keys of other nodes unchanged', () => {
    const plain = nodeOf(check({}));
    const withTok = nodeOf(check({ secrets: ['tok'] }));
    const e0 = nodeExecution(plain, {});
    const e1 = nodeExecution(withTok, {});
    expect('secrets' in e0).toBe(false);
    expect(e1.secrets).toEqual([{ name: 'tok', version: 3 }]);
    expect(specDigest(e1)).not.toBe(specDigest(e0));
    // a new version of the secret (set again) is a new key; the same version, the same key
    expect(specDigest({ ...e1, secrets: [{ name: 'tok', version: 4 }] })).not.toBe(specDigest(e1));
    expect(specDigest(nodeExecution(nodeOf(check({ secrets: ['tok'] })), {}))).toBe(specDigest(e1));
    const a = assignPayload({ attempt_id: 'a-1', build_id: 'b-1', node: 'n', attempt: 1, image_tag: 't', resolve: false, gpus: [] }, e1, nodeRunLimits(withTok));
    expect(a.secrets).toEqual([{ name: 'tok', version: 3 }]);
    expect('secret_values' in a).toBe(false);
  });
});
