/**
 * The `cache:` override in the build spec (shared/spec/cache-spec.ts): on the build and on
 * a node, `off` or `{mode}`, the node's winning; absent leaves the coordinator's mode; bad
 * values name the node and field.
 */
import { describe, expect, it } from 'vitest';
import { validateSpec } from '../../shared/index.js';

const OPTS = { form: 'file' as const, defaultPlatform: 'linux/amd64' };
const df = { dockerfile_inline: 'FROM scratch\n' };

describe('build spec: layer cache override', () => {
  it('resolves node over build, and leaves cache_mode out when neither sets one', () => {
    const r = validateSpec(
      { cache: { mode: 'read' }, nodes: { a: df, b: { ...df, cache: 'off' }, c: { ...df, cache: { mode: 'readwrite' } } } },
      OPTS,
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(Object.fromEntries(r.value.nodes.map((n) => [n.name, n.cache_mode]))).toEqual({ a: 'read', b: 'off', c: 'readwrite' });
    const plain = validateSpec({ nodes: { a: df } }, OPTS);
    if (!plain.ok) throw new Error(JSON.stringify(plain.errors));
    expect('cache_mode' in plain.value.nodes[0]!).toBe(false);
    const buildOff = validateSpec({ cache: 'off', nodes: { a: df } }, OPTS);
    expect(buildOff.ok && buildOff.value.nodes[0]!.cache_mode).toBe('off');
  });

  it('refuses bad values, naming the node and field', () => {
    const bad = validateSpec({ nodes: { a: { ...df, cache: { mode: 'max' } }, b: { ...df, cache: 'on' }, c: { ...df, cache: { mode: 'read', ttl: 1 } } } }, OPTS);
    expect(bad.ok).toBe(false);
    const paths = bad.ok ? [] : bad.errors.map((e) => e.path);
    expect(paths.some((p) => p.startsWith('nodes.a.cache'))).toBe(true);
    expect(paths.some((p) => p.startsWith('nodes.b.cache'))).toBe(true);
    expect(paths.some((p) => p.startsWith('nodes.c.cache'))).toBe(true);
    const top = validateSpec({ cache: true, nodes: { a: df } }, OPTS);
    expect(top.ok ? [] : top.errors.map((e) => e.path)).toContain('cache');
  });
});
