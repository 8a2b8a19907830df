/**
 * Timers (shared/timers.ts) driven by hand: `advance(ms)` runs, in time order, every
 * callback due by then. For the session modules' unit tests.
 */
import type { Timer, Timers } from '../../shared/index.js';

export class ManualTimers implements Timers {
  now = 0;
  private queue: Array<{ at: number; seq: number; fn: () => void; live: boolean }> = [];
  private seq = 0;

  after(ms: number, fn: () => void): Timer {
    const t = { at: this.now + ms, seq: ++this.seq, fn, live: true };
    this.queue.push(t);
    return { clear: () => (t.live = false) };
  }

  /** Moves the clock forward, running what falls due on the way. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      this.queue = this.queue.filter((t) => t.live);
      this.queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.queue[0];
      if (!next || next.at > end) break;
      this.queue.shift();
      this.now = next.at;
      next.fn();
    }
    this.now = end;
  }
}
