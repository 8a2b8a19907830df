/**
 * Pure parts of the dashboard's log pane (web/src/logs/): line deep links (`#L12`,
 * `#L10-L20`), when the pane follows the tail, which text becomes a link, and the timing
 * marks the browser tests read.
 */
import { describe, expect, it } from 'vitest';
import { extendRange, lineHash, parseLineHash } from '../../web/src/logs/log-anchor.js';
import { LogModel } from '../../web/src/logs/log-model.js';
import { cutSegments, linkRanges } from '../../web/src/logs/log-search.js';
import { LOG_MARK_APPEND, LOG_MARK_VISIBLE, markAppend, markVisible, readLogTimings } from '../../web/src/logs/log-timings.js';
import { followAfterScroll } from '../../web/src/logs/tail-follow.js';

describe('log deep links', () => {
  it('reads #L12 and #L10-L20 (either order), nothing else', () => {
    expect(parseLineHash('#L12')).toEqual({ first: 12, last: 12 });
    expect(parseLineHash('#L20-L10')).toEqual({ first: 10, last: 20 });
    for (const bad of ['', '#', '#L0', '#L-3', '#L12x', '#l12', '#L1-', '#L1234567890', '#L5-L', '#x=1']) expect(parseLineHash(bad), bad).toBeNull();
    expect(lineHash({ first: 7, last: 7 })).toBe('#L7');
    expect(lineHash({ first: 7, last: 9 })).toBe('#L7-L9');
  });

  it('extends a selection with shift-click from its first line', () => {
    expect(extendRange(null, 5, true)).toEqual({ first: 5, last: 5 });
    expect(extendRange({ first: 5, last: 5 }, 9, true)).toEqual({ first: 5, last: 9 });
    expect(extendRange({ first: 5, last: 9 }, 2, true)).toEqual({ first: 2, last: 5 });
    expect(extendRange({ first: 5, last: 9 }, 2, false)).toEqual({ first: 2, last: 2 });
  });
});

describe('following the tail', () => {
  const at = (scrollTop: number, scrollHeight = 10_000, clientHeight = 500) => ({ scrollTop, scrollHeight, clientHeight });
  it('stops when the user scrolls up, resumes at the bottom, ignores growth', () => {
    expect(followAfterScroll(true, 9500, at(9400), 18)).toBe(false);
    expect(followAfterScroll(false, 9000, at(9490), 18)).toBe(true);
    expect(followAfterScroll(false, 100, at(200), 18)).toBe(false);
    // the content grew by many rows while following; the pane's scroll down keeps following
    expect(followAfterScroll(true, 9500, at(9600, 20_000), 18)).toBe(true);
  });
});

describe('links in log lines', () => {
  it('finds http(s) URLs without trailing punctuation', () => {
    const text = 'see https://example.com/a?b=1, (http://x.test/p). and ftp://no javascript:alert(1)';
    expect(linkRanges(text).map(([a, b]) => text.slice(a, b))).toEqual(['https://example.com/a?b=1', 'http://x.test/p']);
    expect(linkRanges('no links here')).toEqual([]);
  });

  it('cuts styled segments at the link edges', () => {
    const m = new LogModel();
    m.append('get \x1b[34mhttps://h.test/x\x1b[0m now\n');
    const text = m.text(0);
    const pieces = cutSegments(m.segments(0), linkRanges(text)).map((p) => [p.text, p.style.className, p.range]);
    expect(pieces).toEqual([
      ['get ', '', -1],
      ['https://h.test/x', 'ansi-blue-fg', 0],
      [' now', '', -1],
    ]);
  });
});

describe('log timing marks', () => {
  it('leaves append and visible marks with the node, lines and wall-clock time', () => {
    performance.clearMarks();
    const before = Date.now();
    markAppend('compile', 1, 40);
    markVisible('compile', 40);
    const t = readLogTimings();
    expect(t.map((e) => [e.name, e.detail.node, e.detail.firstLine, e.detail.lastLine])).toEqual([
      [LOG_MARK_APPEND, 'compile', 1, 40],
      [LOG_MARK_VISIBLE, 'compile', undefined, 40],
    ]);
    expect(t[0]!.detail.epochMs).toBeGreaterThanOrEqual(before);
  });

  it('keeps the timeline bounded', () => {
    performance.clearMarks();
    for (let i = 0; i < 2500; i++) markAppend('n', i, i);
    expect(performance.getEntriesByName(LOG_MARK_APPEND).length).toBeLessThanOrEqual(2000);
    expect(readLogTimings().at(-1)?.detail.lastLine).toBe(2499);
  });
});
