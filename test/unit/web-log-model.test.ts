/**
 * The dashboard's log model (web/src/logs/): lines from chunks cut anywhere, partial lines,
 * `\r` rewrites, ANSI SGR to styled spans (16/256/truecolor, decorations, state carried
 * across lines), other escapes removed, the line cap, the first-error rule with BuildKit's
 * error blocks, and search over the lines.
 */
import { describe, expect, it } from 'vitest';
import { keepOnlySgr, paletteColour } from '../../web/src/logs/ansi-line.js';
import { isErrorLine, LINE_ERROR, LINE_ERROR_CONTEXT, LINE_PLAIN } from '../../web/src/logs/log-errors.js';
import { LogModel } from '../../web/src/logs/log-model.js';
import { LogSearch, makeMatcher, markMatches, matchRanges } from '../../web/src/logs/log-search.js';

const ESC = '\x1b';

function texts(m: LogModel): string[] {
  return Array.from({ length: m.lineCount }, (_, i) => m.text(i));
}

/** Line i as [text, className, color, background] per segment. */
function styled(m: LogModel, i: number): Array<[string, string, string | null, string | null]> {
  return m.segments(i).map((s) => [s.text, s.style.className, s.style.color, s.style.background]);
}

describe('log model: lines', () => {
  it('splits chunks cut anywhere into the same lines as one chunk', () => {
    const log = 'alpha\nbeta gamma\n\ndelta\nepsilon';
    const whole = new LogModel();
    whole.append(log);
    for (let cut = 1; cut < log.length; cut++) {
      const m = new LogModel();
      m.append(log.slice(0, cut));
      m.append(log.slice(cut));
      expect(texts(m)).toEqual(texts(whole));
    }
    expect(texts(whole)).toEqual(['alpha', 'beta gamma', '', 'delta', 'epsilon']);
  });

  it('shows a partial line as the last line until its newline, then keeps it', () => {
    const m = new LogModel();
    m.append('one\ntw');
    expect(texts(m)).toEqual(['one', 'tw']);
    expect(m.completeLines).toBe(1);
    const r = m.append('o\nthr');
    expect(r.firstChanged).toBe(1);
    expect(texts(m)).toEqual(['one', 'two', 'thr']);
    m.append('ee\n');
    expect(texts(m)).toEqual(['one', 'two', 'three']);
    expect(m.lineCount).toBe(3);
    m.append('last');
    m.finish();
    expect(m.completeLines).toBe(4);
    expect(m.text(3)).toBe('last');
  });

  it('keeps the last \\r segment, or the one before an empty last one; \\r\\n ends a line', () => {
    const m = new LogModel();
    m.append('progress 10%\rprogress 50%\rprogress 100%\n');
    m.append('windows line\r\n');
    m.append('spinner |\r');
    expect(m.text(2)).toBe('spinner |');
    m.append('spinner /\r');
    expect(m.text(2)).toBe('spinner /');
    m.append('done\n');
    expect(texts(m)).toEqual(['progress 100%', 'windows line', 'done']);
  });

  it('carries the colour of a \\r segment that is replaced into the next one', () => {
    const m = new LogModel();
    m.append(`${ESC}[32mgreen\rstill green${ESC}[0m\n`);
    expect(styled(m, 0)).toEqual([['still green', 'ansi-green-fg', null, null]]);
  });

  it('cuts a long line with a marker saying how much was cut', () => {
    const m = new LogModel({ maxLineChars: 10 });
    m.append(`${'x'.repeat(25)}\nshort\n`);
    expect(m.text(0)).toBe(`${'x'.repeat(10)} … [15 more characters cut]`);
    expect(m.segments(0).map((s) => s.style.className)).toEqual(['', 'log-cut']);
    expect(m.text(1)).toBe('short');
  });

  it('bounds the raw text kept of a line being written, counting what it drops', () => {
    const m = new LogModel({ maxLineChars: 10, maxPendingChars: 100 });
    for (let k = 0; k < 50; k++) m.append('y'.repeat(20));
    m.append('\n');
    expect(m.text(0)).toBe(`${'y'.repeat(10)} … [990 more characters cut]`);
  });
});

describe('log model: ANSI', () => {
  it('turns 16-colour, bright, background and decorations into classes', () => {
    const m = new LogModel();
    m.append(`plain ${ESC}[31mred${ESC}[0m ${ESC}[1;92mbold bright${ESC}[22;39m ${ESC}[44;4munder${ESC}[m end\n`);
    expect(styled(m, 0)).toEqual([
      ['plain ', '', null, null],
      ['red', 'ansi-red-fg', null, null],
      [' ', '', null, null],
      ['bold bright', 'ansi-bright-green-fg ansi-bold', null, null],
      [' ', '', null, null],
      ['under', 'ansi-blue-bg ansi-underline', null, null],
      [' end', '', null, null],
    ]);
    expect(m.text(0)).toBe('plain red bold bright under end');
  });

  it('gives 256-colour and truecolor (also with colons) as inline colours', () => {
    const m = new LogModel();
    m.append(`${ESC}[38;5;196ma${ESC}[38;5;244mb${ESC}[38;2;10;20;30mc${ESC}[48:2::1:2:3md${ESC}[0m\n`);
    expect(styled(m, 0)).toEqual([
      ['a', '', paletteColour(196), null],
      ['b', '', 'rgb(128,128,128)', null],
      ['c', '', 'rgb(10,20,30)', null],
      ['d', '', 'rgb(10,20,30)', 'rgb(1,2,3)'],
    ]);
    expect(paletteColour(196)).toBe('rgb(255,0,0)');
  });

  it('carries the SGR state across lines, as a terminal does', () => {
    const m = new LogModel();
    m.append(`${ESC}[33mwarn starts\nstill yellow\n${ESC}[0mplain\n`);
    expect(styled(m, 0)).toEqual([['warn starts', 'ansi-yellow-fg', null, null]]);
    expect(styled(m, 1)).toEqual([['still yellow', 'ansi-yellow-fg', null, null]]);
    expect(styled(m, 2)).toEqual([['plain', '', null, null]]);
  });

  it('parses a partial coloured line again from its start state when it grows', () => {
    const m = new LogModel();
    m.append(`${ESC}[35mmagenta\npart `);
    expect(styled(m, 1)).toEqual([['part ', 'ansi-magenta-fg', null, null]]);
    m.append(`one ${ESC}[0mtwo\n`);
    expect(styled(m, 1)).toEqual([
      ['part one ', 'ansi-magenta-fg', null, null],
      ['two', '', null, null],
    ]);
  });

  it('survives an escape sequence cut between chunks', () => {
    const m = new LogModel();
    m.append(`a ${ESC}[3`);
    m.append(`1mred${ESC}[0m\n`);
    expect(styled(m, 0)).toEqual([
      ['a ', '', null, null],
      ['red', 'ansi-red-fg', null, null],
    ]);
  });

  it('removes other escapes and control characters, keeps tabs', () => {
    expect(keepOnlySgr(`a${ESC}[2Kb${ESC}[1Ac${ESC}]0;title\x07d${ESC}]8;;http://x${ESC}\\e${ESC}_bk;t=123\x07f${ESC}(Bg\x08h\x07i\tj`)).toBe('abcdefghi\tj');
    expect(keepOnlySgr(`${ESC}[?25lhidden cursor${ESC}[?25h`)).toBe('hidden cursor');
    const m = new LogModel();
    m.append(`${ESC}[2K${ESC}[1G#5 [2/3] RUN make${ESC}[0K\n`);
    expect(texts(m)).toEqual(['#5 [2/3] RUN make']);
  });

  it('renders reverse video as swapped colours', () => {
    const m = new LogModel();
    m.append(`${ESC}[7mrev${ESC}[0m\n`);
    expect(styled(m, 0)).toEqual([['rev', 'ansi-black-fg ansi-white-bg', null, null]]);
  });
});

describe('log model: errors', () => {
  it('flags error lines by the documented rule, not counts of none', () => {
    for (const l of ['#8 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1', 'main.c:3:5: error: expected ;', 'ERROR: failed to solve', '[kiln] attempt 1 failed: exit code 2', 'npm ERR! code E404', 'Fatal: no such file', 'thread main panic: boom', 'Tests: 3 failed, 0 errors']) {
      expect(isErrorLine(l), l).toBe(true);
    }
    for (const l of ['#6 0.1 compiling error.c', 'CFLAGS=-Wall -Werror', 'Tests: 12 passed, 0 failed', 'no errors found', 'errors: 0', 'failed=0 ok=3', 'terrorist tribute', 'all good']) {
      expect(isErrorLine(l), l).toBe(false);
    }
  });

  it("finds the first error and flags BuildKit's error blocks as context", () => {
    const m = new LogModel();
    const log = [
      '#7 [3/4] RUN make',
      '#7 0.2 building',
      '#8 [4/4] RUN false',
      '#8 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1',
      '------',
      ' > [4/4] RUN false:',
      '------',
      'Dockerfile:4',
      '--------------------',
      '   4 | >>> RUN false',
      '--------------------',
      'later line',
      'more',
      'and more',
      '------',
      'ERROR: failed to solve: exit code: 1',
    ];
    m.append(`${log.join('\n')}\n`);
    expect(m.firstError).toBe(3);
    expect(Array.from({ length: log.length }, (_, i) => m.flag(i))).toEqual([
      LINE_PLAIN, LINE_PLAIN, LINE_PLAIN, LINE_ERROR,
      LINE_ERROR_CONTEXT, LINE_ERROR_CONTEXT, LINE_ERROR_CONTEXT,
      LINE_PLAIN, LINE_ERROR_CONTEXT, LINE_ERROR_CONTEXT, LINE_ERROR_CONTEXT,
      LINE_PLAIN, LINE_PLAIN, LINE_PLAIN, LINE_PLAIN, LINE_ERROR,
    ]);
    expect(m.errorLines).toEqual([3, 15]);
  });

  it("finds the noop executor's marker line (KILN_NOOP_LOG's format) as the first error, in red", () => {
    const m = new LogModel();
    const n = 20;
    for (let k = 1; k <= n; k++) {
      const at = 1796458331000 + k;
      m.append(k === n / 2 ? `${ESC}[31mERROR: noop marker line ${k}/${n} t=${at}${ESC}[0m\n` : `noop ${ESC}[36mbuild${ESC}[0m line ${k}/${n} t=${at} ${ESC}[32mok${ESC}[0m\n`);
    }
    expect(m.firstError).toBe(n / 2 - 1);
    expect(m.errorLines).toEqual([n / 2 - 1]);
    expect(styled(m, n / 2 - 1)).toEqual([[`ERROR: noop marker line 10/20 t=1796458331010`, 'ansi-red-fg', null, null]]);
    expect(styled(m, 0).map((x) => x[1])).toEqual(['', 'ansi-cyan-fg', '', 'ansi-green-fg']);
  });

  it('has no first error in a clean log, and judges a partial line only once complete', () => {
    const m = new LogModel();
    m.append('ok\nall fine\nERROR: almost');
    expect(m.firstError).toBe(-1);
    expect(m.flag(2)).toBe(LINE_PLAIN);
    m.finish();
    expect(m.firstError).toBe(2);
  });
});

describe('log search', () => {
  it('finds lines case-insensitively, extends over appended lines, steps with wrap', () => {
    const m = new LogModel();
    m.append('Needle one\nhay\nneedle two\npartial need');
    const matcher = makeMatcher('needle');
    if (!(matcher instanceof RegExp)) throw new Error('no matcher');
    const s = new LogSearch(matcher);
    expect(s.update(m)).toBe(true);
    expect(s.hits).toEqual([0, 2]);
    m.append('le\n');
    expect(s.update(m)).toBe(true);
    expect(s.hits).toEqual([0, 2, 3]);
    expect(s.update(m)).toBe(false);
    expect(s.step(0, 1)).toBe(2);
    expect(s.step(3, 1)).toBe(0);
    expect(s.step(0, -1)).toBe(3);
  });

  it('escapes the query unless asked for a regex, and names a bad regex', () => {
    expect((makeMatcher('a.c') as RegExp).test('abc')).toBe(false);
    expect((makeMatcher('a.c', { regex: true }) as RegExp).test('abc')).toBe(true);
    expect(makeMatcher('(', { regex: true })).toMatchObject({ error: expect.stringContaining('not a valid regular expression') });
    expect(makeMatcher('x'.repeat(201))).toMatchObject({ error: expect.stringContaining('longer than 200') });
    expect(makeMatcher('')).toBeNull();
  });

  it('cuts styled segments at match ranges for highlighting', () => {
    const m = new LogModel();
    m.append(`ab${ESC}[31mcdef${ESC}[0mgh\n`);
    const ranges = matchRanges(m.text(0), makeMatcher('bcd') as RegExp);
    expect(ranges).toEqual([[1, 4]]);
    const marked = markMatches(m.segments(0), ranges).map((s) => [s.text, s.style.className, s.match]);
    expect(marked).toEqual([
      ['a', '', false],
      ['b', '', true],
      ['cd', 'ansi-red-fg', true],
      ['ef', 'ansi-red-fg', false],
      ['gh', '', false],
    ]);
  });
});

describe('log model: size', () => {
  it('holds 200,000 coloured lines with spans for the coloured ones only', () => {
    const m = new LogModel();
    let chunk = '';
    for (let i = 0; i < 200_000; i++) {
      chunk += i % 10 === 0 ? `#${i} ${ESC}[36mstep ${i}${ESC}[0m done\n` : `#${i} 0.${i} output line ${i}\n`;
      if (chunk.length > 65536) {
        m.append(chunk);
        chunk = '';
      }
    }
    m.append(chunk);
    expect(m.lineCount).toBe(200_000);
    expect(m.text(199_990)).toBe('#199990 step 199990 done');
    expect(styled(m, 199_990)[1]).toEqual(['step 199990', 'ansi-cyan-fg', null, null]);
    expect(styled(m, 199_991)).toEqual([['#199991 0.199991 output line 199991', '', null, null]]);
  });
});
