/**
 * The build log cursor (shared/log-cursor.ts): what the coordinator writes as event ids
 * reads back to the same position, in both forms; a build of 10,000 nodes gets a cursor
 * that fits a request head (the name form would not); malformed cursors are refused with
 * a reason, never read as "from the start".
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CURSOR_RE, MAX_CURSOR_CHARS, formatCursor, parseCursor, type ParsedCursor } from '../../shared/index.js';

/** What a parsed cursor means for a build (as the coordinator resolves it): offsets by node. */
function resolve(p: ParsedCursor, nodes: string[], totals: Map<string, number>): Map<string, number> {
  if (p.kind === 'names') return p.offsets;
  const out = new Map<string, number>();
  for (const i of p.complete) out.set(nodes[i]!, totals.get(nodes[i]!)!);
  for (const [i, o] of p.partial) out.set(nodes[i]!, o);
  return out;
}

describe('log cursor', () => {
  it('reads back what it wrote, in the name form for small builds and the compact one for large', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 0, max: 2 ** 32 }), (n, seed) => {
        const nodes = Array.from({ length: n }, (_, i) => `node-${i}.${'x'.repeat(seed % 20)}`);
        const totals = new Map<string, number>();
        const offsets = new Map<string, number>();
        const complete = new Set<string>();
        nodes.forEach((name, i) => {
          const total = ((seed >>> (i % 24)) * (i + 1)) % 1_000_000;
          totals.set(name, total);
          const k = (seed + i) % 5;
          if (k === 0) return; // nothing received
          if (k === 1 && complete.size < 100) offsets.set(name, Math.floor(total / 2)); // mid-log
          else {
            offsets.set(name, total);
            complete.add(name);
          }
        });
        const text = formatCursor(offsets, { nodes, complete });
        expect(CURSOR_RE.test(text)).toBe(true);
        const parsed = parseCursor(text);
        if (typeof parsed === 'string') throw new Error(parsed);
        const got = resolve(parsed, nodes, totals);
        for (const name of nodes) expect(got.get(name) ?? 0).toBe(offsets.get(name) ?? 0);
      }),
      { seed: 4, numRuns: 60 },
    );
  });

  it('fits 10,000 finished nodes with long names into a request head', () => {
    const nodes = Array.from({ length: 10_000 }, (_, i) => `a-rather-long-node-name-for-the-build-${i}`);
    const offsets = new Map(nodes.map((n, i) => [n, 100_000 + i] as const));
    const complete = new Set(nodes.slice(0, 9_800));
    const byName = formatCursor(offsets);
    expect(byName.length).toBeGreaterThan(MAX_CURSOR_CHARS);
    const compact = formatCursor(offsets, { nodes, complete });
    expect(compact.startsWith('~')).toBe(true);
    expect(compact.length).toBeLessThan(MAX_CURSOR_CHARS);
    expect(CURSOR_RE.test(compact)).toBe(true);
    expect(formatCursor(new Map([['a', 5]]), { nodes: ['a'], complete: new Set() })).toBe('a:5');
  });

  it('refuses malformed cursors with a reason', () => {
    for (const [text, why] of [
      ['a:1,,b:2', /part '' is not/],
      ['a:-1', /is not <node>:<byte offset>/],
      ['a:01', /is not <node>:<byte offset>/],
      ['__proto__:1', /is not <node>:<byte offset>/],
      ['a:99999999999999999', /is not/],
      ['~!!~', /is not ~<bitmap>/],
      ['~AA~1:-', /base 36/],
      ['x'.repeat(MAX_CURSOR_CHARS + 1), /longer than/],
    ] as const) {
      const r = parseCursor(text);
      expect(typeof r === 'string' ? r : 'parsed', text).toMatch(why);
    }
    expect(parseCursor('')).toEqual({ kind: 'names', offsets: new Map() });
    expect(parseCursor('a:1,a:2')).toEqual({ kind: 'names', offsets: new Map([['a', 2]]) });
    expect(parseCursor('a:9999999999999999')).toEqual({ kind: 'names', offsets: new Map([['a', Number.MAX_SAFE_INTEGER]]) });
  });
});
