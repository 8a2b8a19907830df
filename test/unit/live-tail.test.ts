/**
 * The in-memory tail of an attempt log (coordinator/logs/live-tail.ts): it keeps about its
 * budget of the last writes (whole writes, at least the budget when it has had that much), says exactly which windows
 * it holds, and gives the same bytes as the whole log for every window it holds.
 */
import { describe, expect, it } from 'vitest';
import { LiveTail } from '../../coordinator/logs/live-tail.js';

describe('LiveTail', () => {
  it('holds the last writes within its budget and reads every window it covers as the whole log has it', () => {
    const tail = new LiveTail(100);
    const header = 7;
    let log = Buffer.alloc(header, 0x68); // a header the tail never saw
    expect(tail.covers(0, 1)).toBe(false);
    for (let i = 0; i < 60; i++) {
      const data = Buffer.from(`w${i}:${'x'.repeat(i % 13)}\n`);
      tail.add(log.length, data);
      log = Buffer.concat([log, data]);
      // the last write is always held; nothing before what the tail kept is claimed
      expect(tail.covers(log.length - data.length, log.length)).toBe(true);
      expect(tail.covers(header - 1, log.length)).toBe(false);
      expect(tail.covers(log.length - 1, log.length + 1)).toBe(false);
      let first = log.length;
      while (first > 0 && tail.covers(first - 1, log.length)) first--;
      // about the budget: less than the budget plus one write, and more than the budget minus one write, once full
      expect(log.length - first).toBeLessThan(100 + 20);
      if (log.length - header > 140) expect(log.length - first).toBeGreaterThanOrEqual(100 - 20);
      for (let s = first; s < log.length; s += 3) {
        for (let e = s + 1; e <= log.length; e += 5) expect(tail.read(s, e).equals(log.subarray(s, e))).toBe(true);
      }
    }
  });

  it('keeps a write larger than its budget whole, and drops it once the later writes fill the budget', () => {
    const tail = new LiveTail(10);
    tail.add(0, Buffer.alloc(50, 0x61));
    expect(tail.covers(0, 50)).toBe(true);
    tail.add(50, Buffer.from('b'));
    expect(tail.covers(0, 51)).toBe(true); // without it less than the budget would be left
    tail.add(51, Buffer.from('c'.repeat(9)));
    expect(tail.covers(49, 60)).toBe(false);
    expect(tail.covers(50, 60)).toBe(true);
    expect(tail.read(50, 60).toString()).toBe(`b${'c'.repeat(9)}`);
  });
});
