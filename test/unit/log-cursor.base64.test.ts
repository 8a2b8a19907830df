/**
 * The compact log cursor's bitmap is base64url read and written without Node's Buffer (the
 * dashboard loads shared/log-cursor.ts in the browser): it decodes every bitmap exactly as
 * Buffer.from(s, 'base64url') does (unpadded, a last lone character ignored, trailing bits
 * ignored), and formatCursor's bitmap is Buffer's encoding.
 */
import { describe, expect, it } from 'vitest';
import { formatCursor, parseCursor } from '../../shared/index.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function bufferBits(s: string): number[] {
  const out: number[] = [];
  Buffer.from(s, 'base64url').forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) out.push(i * 8 + b);
  });
  return out;
}

describe('log cursor bitmap (base64url)', () => {
  it('decodes every bitmap as Buffer does', () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let k = 0; k < 500; k++) {
      const len = rand(40);
      let s = '';
      for (let i = 0; i < len; i++) s += ALPHABET[rand(64)];
      const parsed = parseCursor(`~${s}~`);
      expect(parsed, s).toMatchObject({ kind: 'compact', complete: bufferBits(s) });
    }
  });

  it("writes Buffer's base64url", () => {
    const nodes = Array.from({ length: 300 }, (_, i) => `node-with-a-long-name-${i}`);
    const complete = new Set(nodes.filter((_, i) => i % 3 === 0));
    const offsets = new Map(nodes.map((n, i) => [n, i + 1]));
    const cursor = formatCursor(offsets, { nodes, complete });
    const bits = Buffer.alloc(Math.ceil(nodes.length / 8));
    nodes.forEach((n, i) => {
      if (complete.has(n)) bits[i >> 3]! |= 1 << (i & 7);
    });
    expect(cursor.startsWith(`~${bits.toString('base64url')}~`)).toBe(true);
  });
});
