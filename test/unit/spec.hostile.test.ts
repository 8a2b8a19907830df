/**
 * Hostile specs get a clear 400-style error and cost little: a billion-laughs YAML
 * document, nesting thousands deep (JSON and YAML), bytes that are not UTF-8 (with the
 * offset of the first bad byte), NUL characters, `__proto__` keys (refused by name, never
 * silently dropped) and names that are Object.prototype members (kept as names like any
 * other: `constructor` is an unknown node, not a function).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeSpecBytes, firstInvalidUtf8, parseSpecText, validateSpec } from '../../shared/index.js';

const submitted = { form: 'submitted' as const, defaultPlatform: 'linux/amd64' };
const messages = (r: { ok: boolean; errors?: Array<{ message: string }> }) => (r.ok ? [] : r.errors!.map((e) => e.message));

describe('hostile specs', () => {
  it('refuses a YAML alias bomb without expanding it', () => {
    const lol = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (const [i, k] of ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'].entries()) lol.push(`${k}: &${k} [${Array(9).fill(`*${'abcdefghi'[i]}`).join(',')}]`);
    const r = parseSpecText(`${lol.join('\n')}\nnodes: {}\n`);
    expect(messages(r)).toEqual([expect.stringMatching(/expands YAML aliases too often .*billion laughs/)]);
    // a few aliases are fine
    expect(parseSpecText('x: &x {dockerfile_inline: FROM a}\nnodes: {a: *x, b: *x}\n')).toMatchObject({ ok: true, value: { nodes: { a: { dockerfile_inline: 'FROM a' } } } });
  });

  it('refuses nesting deeper than 64 levels, in JSON and in YAML, without overflowing the stack', () => {
    for (const depth of [65, 5_000, 100_000]) {
      expect(messages(parseSpecText(`{"nodes":${'['.repeat(depth)}${']'.repeat(depth)}}`))).toEqual([expect.stringMatching(/nests deeper than 64 levels/)]);
      expect(messages(parseSpecText(`nodes: ${'['.repeat(depth)}${']'.repeat(depth)}`))).toEqual([expect.stringMatching(/nests deeper than 64 levels|nests too deeply/)]);
    }
    // compact block nesting: one level per 2 bytes on one line (the YAML composer would overflow, or worse)
    for (let round = 0; round < 3; round++) {
      for (const ind of ['- ', '? ']) expect(messages(parseSpecText(`nodes:\n  ${ind.repeat(10_000)}x`))).toEqual([expect.stringMatching(/nests deeper than 64 levels/)]);
    }
    expect(parseSpecText(`nodes:\n  a:\n    labels:\n      ${'- '.repeat(50)}x`).ok).toBe(true);
    const block = ['nodes:', ...Array.from({ length: 100 }, (_, i) => `${' '.repeat(i + 1)}k${i}:`)].join('\n');
    expect(messages(parseSpecText(block))).toEqual([expect.stringMatching(/nests deeper than 64 levels/)]);
    expect(parseSpecText(`{"nodes":{"a":{"dockerfile_inline":"FROM x","build_args":{"A":"[[[[{{{{"}}}}`).ok).toBe(true);
  });

  it('refuses bytes that are not UTF-8, naming where the bad sequence starts', () => {
    const withByte = (prefix: string, bytes: number[], suffix = '') => Buffer.concat([Buffer.from(prefix), Buffer.from(bytes), Buffer.from(suffix)]);
    expect(messages(decodeSpecBytes(withByte('nodes: ', [0xff])))).toEqual(['spec is not valid UTF-8 (first bad byte at offset 7)']);
    // Latin-1 é (a lead byte followed by a non-continuation): the offset of the é
    expect(messages(decodeSpecBytes(withByte('name: caf', [0xe9], '"')))).toEqual(['spec is not valid UTF-8 (first bad byte at offset 9)']);
    expect(messages(decodeSpecBytes(withByte('x', [0xe2, 0x82])))).toEqual(['spec is not valid UTF-8 (first bad byte at offset 1)']); // truncated
    expect(messages(decodeSpecBytes(withByte('x', [0xed, 0xa0, 0x80])))).toEqual(['spec is not valid UTF-8 (first bad byte at offset 1)']); // a surrogate
    expect(decodeSpecBytes(Buffer.from('name: café ✓ 🚀\nnodes: {}'))).toMatchObject({ ok: true, value: 'name: café ✓ 🚀\nnodes: {}' });
  });

  it('finds invalid UTF-8 exactly where the platform decoder does', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
        const at = firstInvalidUtf8(bytes);
        const fatal = new TextDecoder('utf-8', { fatal: true });
        let valid = true;
        try {
          fatal.decode(bytes);
        } catch {
          valid = false;
        }
        expect(at === bytes.length).toBe(valid);
        if (!valid) {
          // everything before `at` decodes; the sequence at `at` does not
          fatal.decode(bytes.subarray(0, at));
          expect(() => new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, Math.min(bytes.length, at + 4)))).toThrow();
        }
      }),
      { seed: 9, numRuns: 2000 },
    );
  });

  it('refuses NUL characters and __proto__ keys anywhere, naming the field', () => {
    const r = validateSpec(JSON.parse('{"nodes":{"a":{"dockerfile_inline":"FROM x","build_args":{"A":"x\\u0000y"},"labels":{"__proto__":"gpu"}}}}'), submitted);
    expect(messages(r).sort()).toEqual(["node 'a': field 'build_args.A': must not contain a NUL character", "node 'a': field 'labels': the key '__proto__' is not allowed"]);
    const y = parseSpecText('nodes:\n  a:\n    dockerfile_inline: FROM x\n    build_args:\n      __proto__: x\n');
    expect(y.ok).toBe(true);
    expect(messages(validateSpec(y.ok ? y.value : null, submitted))).toEqual(["node 'a': field 'build_args': the key '__proto__' is not allowed"]);
    expect(messages(validateSpec({ nodes: { __proto__: null, a: { dockerfile_inline: 'FROM x' } } }, submitted))).toEqual([]); // an object literal's __proto__ is its prototype, not a key
    expect(messages(validateSpec(JSON.parse('{"nodes":{"__proto__":{"dockerfile_inline":"FROM x"}}}'), submitted))).toEqual(["field 'nodes': the key '__proto__' is not allowed"]);
  });

  it('treats Object.prototype member names as plain names', () => {
    const needs = validateSpec({ nodes: { a: { dockerfile_inline: 'FROM x', needs: ['constructor', 'toString'] } } }, submitted);
    expect(messages(needs)).toEqual(["node 'a': field 'needs': unknown node 'constructor'", "node 'a': field 'needs': unknown node 'toString'"]);
    const from = validateSpec({ nodes: { a: { dockerfile_inline: 'FROM x', inputs: { i: { from: 'hasOwnProperty.out' } } } } }, submitted);
    expect(messages(from)).toEqual(["node 'a': field 'inputs.i.from': unknown node 'hasOwnProperty'"]);
    const ok = validateSpec({ nodes: { constructor: { dockerfile_inline: 'FROM x', labels: { constructor: 'x', toString: 'y' }, build_args: { constructor: '1' } } } }, submitted);
    expect(ok.ok).toBe(true);
    if (ok.ok) {
      expect(ok.value.nodes[0]!.labels).toEqual({ constructor: 'x', toString: 'y' });
      expect(ok.value.nodes[0]!.build_args).toEqual({ constructor: '1' });
    }
    const not = validateSpec({ nodes: { a: { dockerfile_inline: 'FROM x', labels: ['constructor!=x', 'constructor!=y', 'valueOf=1'] } } }, submitted);
    expect(not.ok && not.value.nodes[0]!.labels_not.constructor).toEqual(['x', 'y']);
  });
});
