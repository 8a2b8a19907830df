/**
 * `kiln prewarm`'s spec (cli/prewarm.ts): the pool's nodes with the upstream nodes they need
 * (needs and inputs), result reuse off, the layer cache readwrite unless a node turns it off.
 */
import { describe, expect, it } from 'vitest';
import { prewarmSpec } from '../../cli/prewarm.js';

const spec = {
  name: 'fleet',
  cache: { mode: 'read' },
  nodes: {
    base: { platform: 'linux/s390x', dockerfile_inline: 'FROM x', outputs: { lib: '/lib' } },
    tool: { platform: 'linux/amd64', dockerfile_inline: 'FROM x' },
    app: { platform: 'linux/s390x', dockerfile_inline: 'FROM x', needs: ['tool'], inputs: { lib: { from: 'base.lib' } }, cache: 'off' },
    web: { platform: 'linux/amd64', dockerfile_inline: 'FROM x', cache: { mode: 'read' } },
    any: { dockerfile_inline: 'FROM x' },
  },
};

describe('kiln prewarm spec', () => {
  it('keeps the pool\'s nodes and what they need, reuse off, cache readwrite unless off', () => {
    const s390x = prewarmSpec(spec, 'linux/s390x') as { name: string; nodes: Record<string, Record<string, unknown>> };
    expect(Object.keys(s390x.nodes).sort()).toEqual(['app', 'base', 'tool']);
    expect(s390x.name).toBe('fleet');
    expect(s390x.nodes.base).toMatchObject({ reuse: false, cache: { mode: 'readwrite' } });
    expect(s390x.nodes.app!.cache).toBe('off');
    const amd64 = prewarmSpec(spec, 'linux/amd64') as { nodes: Record<string, Record<string, unknown>> };
    expect(Object.keys(amd64.nodes).sort()).toEqual(['tool', 'web']);
    expect(amd64.nodes.web!.cache).toEqual({ mode: 'readwrite' });
    const all = prewarmSpec(spec, null) as { nodes: Record<string, unknown> };
    expect(Object.keys(all.nodes).sort()).toEqual(['any', 'app', 'base', 'tool', 'web']);
    expect(Object.keys((prewarmSpec(spec, 'linux/arm64') as { nodes: object }).nodes)).toEqual([]);
  });
});
