/**
 * The log batcher's flush policy: output after a quiet time leaves at once; while output
 * keeps coming it is coalesced in a window that grows under heavy load (up to 50 ms) and
 * shrinks back (to 5 ms) when the load drops; batchers sharing a frame budget lengthen their
 * windows together; 64 KiB leave at once; offsets are contiguous and sequence numbers
 * increase. All on fake timers.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FrameBudget, LogBatcher, type LogChunk } from '../../agent/log-batcher.js';

function contiguous(chunks: LogChunk[]): void {
  let offset = 0;
  chunks.forEach((c, i) => {
    expect(c.seq).toBe(i);
    expect(c.offset).toBe(offset);
    offset += c.data.length;
  });
}

/**
 * Writes `perMs` numbered lines every millisecond for `ms` ms and records, per line, how
 * long it waited before its frame left (in fake time).
 */
function drive(b: LogBatcher, sent: Map<number, number>, state: { next: number }, perMs: number, ms: number): void {
  for (let t = 0; t < ms; t++) {
    for (let i = 0; i < perMs; i++) {
      sent.set(state.next, Date.now());
      b.write(`line ${state.next++}\n`);
    }
    vi.advanceTimersByTime(1);
  }
}

function recorder(): { chunks: LogChunk[]; waits: number[]; sent: Map<number, number>; onChunk: (c: LogChunk) => void } {
  const chunks: LogChunk[] = [];
  const waits: number[] = [];
  const sent = new Map<number, number>();
  return {
    chunks,
    waits,
    sent,
    onChunk: (c) => {
      chunks.push(c);
      for (const m of c.data.toString().matchAll(/line (\d+)\n/g)) waits.push(Date.now() - sent.get(Number(m[1]))!);
    },
  };
}

describe('log batcher', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('sends the first output after a quiet time at once and coalesces what follows in the window', () => {
    const chunks: LogChunk[] = [];
    const b = new LogBatcher({ onChunk: (c) => chunks.push(c), budget: new FrameBudget() });
    b.write('hello\n');
    expect(chunks.map((c) => c.data.toString())).toEqual(['hello\n']);
    b.write('a\n');
    b.write('b\n');
    expect(chunks).toHaveLength(1);
    vi.advanceTimersByTime(4);
    expect(chunks).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(chunks.map((c) => c.data.toString())).toEqual(['hello\n', 'a\nb\n']);
    // A window with nothing in it ends the burst: the next output leaves at once again.
    vi.advanceTimersByTime(5);
    b.write('later\n');
    expect(chunks.map((c) => c.data.toString())).toEqual(['hello\n', 'a\nb\n', 'later\n']);
    contiguous(chunks);
    expect(b.offset).toBe('hello\na\nb\nlater\n'.length);
  });

  it('sends 64 KiB at once, whatever the window, with contiguous offsets', () => {
    const chunks: LogChunk[] = [];
    const b = new LogBatcher({ onChunk: (c) => chunks.push(c), budget: new FrameBudget() });
    b.write('x\n');
    b.write(Buffer.alloc(200 * 1024, 97));
    // 2 bytes already left; the window is open, so the rest waits but for full frames.
    expect(chunks.map((c) => c.data.length)).toEqual([2, 65536, 65536, 65536]);
    vi.advanceTimersByTime(5);
    expect(chunks.map((c) => c.data.length)).toEqual([2, 65536, 65536, 65536, 200 * 1024 - 3 * 65536]);
    contiguous(chunks);
    expect(b.offset).toBe(2 + 200 * 1024);
    // From quiet, a large write leaves entirely at once.
    vi.advanceTimersByTime(100);
    const before = chunks.length;
    b.write(Buffer.alloc(70 * 1024, 98));
    expect(chunks.slice(before).map((c) => c.data.length)).toEqual([65536, 70 * 1024 - 65536]);
    contiguous(chunks);
  });

  it('a line at 100 lines/s leaves at once', () => {
    const r = recorder();
    const b = new LogBatcher({ onChunk: r.onChunk, budget: new FrameBudget() });
    const state = { next: 0 };
    for (let i = 0; i < 100; i++) {
      drive(b, r.sent, state, 1, 1);
      vi.advanceTimersByTime(9);
    }
    expect(r.waits).toHaveLength(100);
    expect(Math.max(...r.waits)).toBe(0);
    expect(r.chunks).toHaveLength(100);
  });

  it('at 1,000 lines/s the window stays short: no line waits more than 5 ms', () => {
    const r = recorder();
    const b = new LogBatcher({ onChunk: r.onChunk, budget: new FrameBudget() });
    const state = { next: 0 };
    drive(b, r.sent, state, 1, 2000);
    b.flush();
    expect(r.waits).toHaveLength(2000);
    expect(Math.max(...r.waits)).toBeLessThanOrEqual(5);
    expect(b.windowMs).toBe(5);
    // still batched: about one frame per window, not one per line
    expect(r.chunks.length).toBeLessThan(2000 / 4);
  });

  it('at 10,000 lines/s frames of hundreds of lines form, no line waits more than 50 ms, and the window shrinks again after', () => {
    const r = recorder();
    const b = new LogBatcher({ onChunk: r.onChunk, budget: new FrameBudget() });
    const state = { next: 0 };
    drive(b, r.sent, state, 10, 2000);
    expect(b.windowMs).toBe(50);
    const busy = r.chunks.length;
    // 20,000 lines in 2 s: at most 20 frames/s once the window has grown, as with a fixed 50 ms window
    expect(busy).toBeLessThanOrEqual(2 * 20 + 10);
    expect(Math.max(...r.waits)).toBeLessThanOrEqual(50);
    // the load drops to 1,000 lines/s: the window shrinks back within a few windows
    drive(b, r.sent, state, 1, 500);
    expect(b.windowMs).toBe(5);
    const tail = r.waits.slice(-300);
    expect(Math.max(...tail)).toBeLessThanOrEqual(5);
    b.flush();
    expect(r.waits).toHaveLength(state.next);
    contiguous(r.chunks);
  });

  it('a heavy byte stream (few, long lines) also counts as load', () => {
    const chunks: LogChunk[] = [];
    const b = new LogBatcher({ onChunk: (c) => chunks.push(c), budget: new FrameBudget() });
    const line = `${'y'.repeat(2047)}\n`;
    for (let t = 0; t < 1000; t++) {
      b.write(line); // 2 MiB/s in 1,000 lines/s
      vi.advanceTimersByTime(1);
    }
    expect(b.windowMs).toBe(50);
    b.flush();
    contiguous(chunks);
  });

  it('flush() sends what waits and closes the window', () => {
    const chunks: LogChunk[] = [];
    const b = new LogBatcher({ onChunk: (c) => chunks.push(c), budget: new FrameBudget() });
    b.write('x');
    b.write('y');
    expect(chunks).toHaveLength(1);
    b.flush();
    expect(chunks.map((c) => c.data.toString())).toEqual(['x', 'y']);
    vi.advanceTimersByTime(100);
    expect(chunks).toHaveLength(2);
    b.flush();
    expect(chunks).toHaveLength(2);
    b.write('z');
    expect(chunks.map((c) => c.data.toString())).toEqual(['x', 'y', 'z']);
    b.flush();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('uses the timers it is given', () => {
    const pending: (() => void)[] = [];
    const chunks: LogChunk[] = [];
    const b = new LogBatcher({
      onChunk: (c) => chunks.push(c),
      budget: new FrameBudget(),
      timers: {
        after: (_ms, fn) => {
          pending.push(fn);
          return { clear: () => {} };
        },
      },
    });
    b.write('a\n');
    b.write('b\n');
    expect(chunks).toHaveLength(1);
    expect(pending).toHaveLength(1);
    pending.shift()!();
    expect(chunks.map((c) => c.data.toString())).toEqual(['a\n', 'b\n']);
  });

  it('ten batchers at 1,000 lines/s each share the frame budget: 10 ms windows, about 1,000 frames/s in all', () => {
    const budget = new FrameBudget(1000);
    const steps = Array.from({ length: 10 }, () => {
      const r = recorder();
      return { r, b: new LogBatcher({ onChunk: r.onChunk, budget }), state: { next: 0 } };
    });
    for (let t = 0; t < 2000; t++) {
      for (const s of steps) {
        s.r.sent.set(s.state.next, Date.now());
        s.b.write(`line ${s.state.next++}\n`);
      }
      vi.advanceTimersByTime(1);
    }
    let frames = 0;
    for (const s of steps) {
      s.b.flush();
      expect(s.r.waits).toHaveLength(2000);
      expect(Math.max(...s.r.waits)).toBeLessThanOrEqual(10);
      frames += s.r.chunks.length;
      contiguous(s.r.chunks);
    }
    // 2 s: at most ~1,000 frames/s together (a 5 ms window each would be 4,000)
    expect(frames).toBeLessThanOrEqual(2 * 1000 + 100);
    expect(budget.minWindowMs()).toBe(0);
  });

  it('busy batchers sharing a budget send their frames on one tick, whenever each started', () => {
    const budget = new FrameBudget(1000);
    const when: number[] = [];
    const steps = Array.from({ length: 10 }, () => ({ b: new LogBatcher({ onChunk: () => when.push(Date.now()), budget }), next: 0 }));
    for (let t = 0; t < 1000; t++) {
      // step i starts at i * 3 ms, then prints a line every millisecond
      steps.forEach((s, i) => {
        if (t >= i * 3) s.b.write(`line ${s.next++}\n`);
      });
      vi.advanceTimersByTime(1);
    }
    // After the start, the frames of all ten leave at the same moments, ~10 per moment
    // (one timer: 100 moments/s), not at ten different ones per window.
    const late = when.filter((t) => t >= when[0]! + 100);
    const moments = new Set(late);
    expect(late.length).toBeGreaterThan(700);
    expect(late.length / moments.size).toBeGreaterThanOrEqual(9);
    for (const s of steps) s.b.flush();
    expect(budget.minWindowMs()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('sparse lines from many batchers do not count against the budget: each leaves at once', () => {
    const budget = new FrameBudget(1000);
    const steps = Array.from({ length: 10 }, () => {
      const r = recorder();
      return { r, b: new LogBatcher({ onChunk: r.onChunk, budget }), state: { next: 0 } };
    });
    for (let t = 0; t < 1000; t++) {
      const s = steps[t % 10]!; // each step prints a line every 10 ms, the steps staggered by 1 ms
      s.r.sent.set(s.state.next, Date.now());
      s.b.write(`line ${s.state.next++}\n`);
      vi.advanceTimersByTime(1);
    }
    for (const s of steps) {
      s.b.flush();
      expect(s.r.waits).toHaveLength(100);
      expect(Math.max(...s.r.waits)).toBe(0);
    }
  });
});

