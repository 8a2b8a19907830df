/**
 * The CLI's log printer: complete lines get the node prefix; a partial line (a prompt) shows
 * at once and its rest continues it; another node's output ends the open line first; no
 * text is lost or repeated.
 */
import { describe, expect, it } from 'vitest';
import { LinePrinter } from '../../cli/render.js';

function printer() {
  let text = '';
  const p = new LinePrinter({ write: (t) => (text += t), isTTY: false }, false, ['a', 'b']);
  return { p, out: () => text };
}

describe('LinePrinter', () => {
  it('prints complete lines with the node prefix, CR before LF dropped', () => {
    const { p, out } = printer();
    p.log('a', 'one\r\ntwo\n');
    expect(out()).toBe('a | one\na | two\n');
  });

  it('shows a partial line at once and continues it on the same line', () => {
    const { p, out } = printer();
    p.log('a', 'Continue? [y/N] ');
    expect(out()).toBe('a | Continue? [y/N] ');
    p.log('a', '...');
    p.log('a', 'y\nnext\n');
    expect(out()).toBe('a | Continue? [y/N] ...y\na | next\n');
  });

  it("ends an open line before another node's output or a note, and nothing is lost", () => {
    const { p, out } = printer();
    p.log('a', 'downloading');
    p.log('b', 'hello\n');
    p.log('a', ' done\n');
    p.note('b', '=> success');
    p.log('a', 'tail');
    p.flush();
    expect(out()).toBe('a | downloading\nb | hello\na |  done\nb | => success\na | tail\n');
  });

  it('flush ends only the open line of the node asked for', () => {
    const { p, out } = printer();
    p.log('a', 'x');
    p.flush('b');
    expect(out()).toBe('a | x');
    p.flush('a');
    p.flush();
    expect(out()).toBe('a | x\n');
  });
});
