/**
 * The streaming log redactor (agent/log-redactor.ts): whatever way a log is cut into
 * chunks, the concatenated output never holds a secret's value, equals the one-piece
 * redaction of the whole log, and text that cannot start a secret is never held back.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LogRedactor, MIN_LINE_CHARS } from '../../agent/log-redactor.js';

/** Cuts `text` at the given fractions (sorted, deduplicated). */
function cut(text: string, points: number[]): string[] {
  const at = [...new Set(points.map((p) => Math.floor(p * (text.length + 1))))].sort((a, b) => a - b);
  const out: string[] = [];
  let prev = 0;
  for (const i of at) {
    out.push(text.slice(prev, i));
    prev = i;
  }
  out.push(text.slice(prev));
  return out;
}

function streamed(secrets: Array<{ name: string; value: string }>, chunks: string[]): string {
  const r = new LogRedactor(secrets);
  let out = '';
  for (const c of chunks) out += r.push(c);
  return out + r.end();
}

// Secrets and noise over a small alphabet, so prefixes, overlaps and repeats are common.
const alphabet = fc.constantFrom('a', 'b', 'c', 'x', '\n', ' ');
const secretArb = fc.string({ unit: fc.constantFrom('a', 'b', 'c', 'x'), minLength: 1, maxLength: 8 });
const textArb = fc.array(fc.oneof(fc.string({ unit: alphabet, maxLength: 12 }), fc.constant('<S0>'), fc.constant('<S1>')), { maxLength: 12 });

describe('log redactor', () => {
  it('never shows a value, however the log is split, and gives the same text as redacting it whole', () => {
    fc.assert(
      fc.property(secretArb, secretArb, textArb, fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 20 }), (s0, s1, parts, points) => {
        const secrets = [
          { name: 'zero', value: s0 },
          { name: 'one', value: s1 },
        ];
        const text = parts.map((p) => (p === '<S0>' ? s0 : p === '<S1>' ? s1 : p)).join('');
        const out = streamed(secrets, cut(text, points));
        const whole = new LogRedactor(secrets).redact(text);
        expect(out).toBe(whole);
        // Between the marks, no value is left.
        for (const gap of out.split(/\[secret:(?:zero|one)\]/)) {
          expect(gap.includes(s0)).toBe(false);
          expect(gap.includes(s1)).toBe(false);
        }
        if (!text.includes(s0) && !text.includes(s1)) expect(out).toBe(text);
      }),
      { numRuns: 2000 },
    );
  });

  it('a value printed one character per chunk is redacted', () => {
    const value = 'tok-3f9a1c';
    const text = `before ${value} after\n`;
    const out = streamed([{ name: 'tok', value }], [...text]);
    expect(out).toBe('before [secret:tok] after\n');
  });

  it('a value split across a chunk boundary at every position is redacted', () => {
    const value = 'hunter2-xyz';
    const text = `#5 0.1 ${value}\n#5 0.2 again ${value}`;
    for (let i = 0; i <= text.length; i++) {
      for (let j = i; j <= text.length; j += 3) {
        const out = streamed([{ name: 'pw', value }], [text.slice(0, i), text.slice(i, j), text.slice(j)]);
        expect(out).toBe('#5 0.1 [secret:pw]\n#5 0.2 again [secret:pw]');
      }
    }
  });

  it('holds back only a tail that could start a value, and nothing else', () => {
    const r = new LogRedactor([{ name: 'k', value: 'secret' }]);
    expect(r.push('plain text\n')).toBe('plain text\n');
    expect(r.pending).toBe('');
    expect(r.push('ends with se')).toBe('ends with ');
    expect(r.pending).toBe('se');
    expect(r.push('ssion')).toBe('session');
    expect(r.pending).toBe('');
    expect(r.push('x secre')).toBe('x ');
    expect(r.push('t!')).toBe('[secret:k]!');
    // at the end, a held start of a value is shown (it is not the value)
    expect(r.push('sec')).toBe('');
    expect(r.end()).toBe('sec');
  });

  it('a value another value starts with: the longer one wins, even when split between them', () => {
    const secrets = [
      { name: 'short', value: 'abcd' },
      { name: 'long', value: 'abcdefgh' },
    ];
    expect(streamed(secrets, ['xx abcd', 'efgh yy'])).toBe('xx [secret:long] yy');
    expect(streamed(secrets, ['xx abcd', ' yy'])).toBe('xx [secret:short] yy');
  });

  it('overlapping values (one starts inside another and reaches further) are hidden whole, also split', () => {
    const secrets = [
      { name: 'A', value: 'abcd' },
      { name: 'B', value: 'cdefgh' },
    ];
    expect(streamed(secrets, ['xxabcdefghyy'])).toBe('xx[secret:A][secret:B]yy');
    for (let cut = 1; cut < 12; cut++) {
      const text = 'xxabcdefghyy';
      const out = streamed(secrets, [text.slice(0, cut), text.slice(cut)]);
      expect(out, `split at ${cut}`).not.toMatch(/ef|gh|ab/);
    }
  });

  it('a value with a trailing newline is found without it; each line of a multi-line value on its own', () => {
    const r = new LogRedactor([
      { name: 'nl', value: Buffer.from('token-123\n') },
      { name: 'pem', value: '-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\nab\n-----END KEY-----\n' },
    ]);
    expect(r.redact('use token-123 now')).toBe('use [secret:nl] now');
    const log = '#5 0.1 -----BEGIN KEY-----\n#5 0.1 MIIBOgIBAAJBAKj34GkxFhD9\n#5 0.1 ab\n';
    const out = r.redact(log);
    expect(out).not.toContain('MIIBOgIBAAJBAKj34GkxFhD9');
    expect(out).toContain('#5 0.1 [secret:pem]\n');
    // lines shorter than MIN_LINE_CHARS are not redacted on their own
    expect('ab'.length).toBeLessThan(MIN_LINE_CHARS);
    expect(out).toContain('#5 0.1 ab\n');
  });

  it('takes the largest values there can be (32 of 64 KiB, a thousand lines each) and redacts them in pieces', () => {
    const values = Array.from({ length: 32 }, (_, k) => ({ name: `s${k}`, value: randomBytes(48 * 1024).toString('base64').replace(/(.{64})/g, '$1\n') }));
    expect(values[0]!.value.length).toBeGreaterThan(64_000);
    const r = new LogRedactor(values);
    const line = values[7]!.value.split('\n')[500]!;
    const log = `#5 1.0 ${line}\n`.repeat(3);
    let out = '';
    for (let i = 0; i < log.length; i += 7) out += r.push(log.slice(i, i + 7));
    out += r.end();
    expect(out).toBe('#5 1.0 [secret:s7]\n'.repeat(3));
  });

  it('without secrets it passes everything through', () => {
    const r = new LogRedactor([]);
    expect(r.active).toBe(false);
    expect(r.push('anything')).toBe('anything');
    expect(r.end()).toBe('');
  });
});
