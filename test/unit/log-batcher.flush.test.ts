/**
 * Log frames leave at 64 KiB or 50 ms after their first byte, with contiguous offsets
 * and increasing sequence numbers.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LogBatcher, type LogChunk } from '../../agent/log-batcher.js';

describe('log batcher', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('flushes by time and by size, with contiguous offsets', () => {
    const chunks: LogChunk[] = [];
    const b = new LogBatcher({ onChunk: (c) => chunks.push(c) });
    b.write('hello ');
    b.write('world\n');
    expect(chunks).toHaveLength(0);
    vi.advanceTimersByTime(49);
    expect(chunks).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(chunks.map((c) => [c.seq, c.offset, c.data.toString()])).toEqual([[0, 0, 'hello world\n']]);
    b.write(Buffer.alloc(200 * 1024, 97));
    expect(chunks.map((c) => c.data.length)).toEqual([12, 65536, 65536, 65536]);
    vi.advanceTimersByTime(50);
    expect(chunks.map((c) => c.data.length)).toEqual([12, 65536, 65536, 65536, 200 * 1024 - 3 * 65536]);
    let offset = 0;
    chunks.forEach((c, i) => {
      expect(c.seq).toBe(i);
      expect(c.offset).toBe(offset);
      offset += c.data.length;
    });
    expect(b.offset).toBe(12 + 200 * 1024);
  });

  it('flush() sends what waits and cancels the timer', () => {
    const chunks: LogChunk[] = [];
    const b = new LogBatcher({ onChunk: (c) => chunks.push(c) });
    b.write('x');
    b.flush();
    vi.advanceTimersByTime(100);
    expect(chunks).toHaveLength(1);
    b.flush();
    expect(chunks).toHaveLength(1);
  });
});
