/**
 * Batches a build's log output into frames. Each frame carries the attempt's sequence
 * number and the byte offset of its first byte, so the coordinator can drop duplicates and
 * detect gaps.
 *
 * Flush policy: send at once when the stream is quiet, batch only under load.
 * - Output that arrives while no window is open (the stream was quiet) leaves at once, and
 *   opens a window of `window` ms.
 * - Output that arrives while a window is open waits for its end. When the window ends with
 *   something waiting, that leaves as one frame and a new window opens; when it ends with
 *   nothing waiting, the stream is quiet again.
 * - The window adapts to the load: it doubles (up to `maxDelayMs`) after a window in which
 *   output came at `busyLinesPerSec` lines/s or `busyBytesPerSec` bytes/s or faster, and
 *   halves (down to `minDelayMs`) after one in which it came at less than half of both.
 *   So a step printing 1,000 lines/s sees at most `minDelayMs` of added latency, while
 *   one printing 10,000 lines/s goes out in frames of hundreds of lines, as with a fixed
 *   50 ms window, and costs the coordinator no more per line.
 * - All the batchers of a process share a frame budget (`FrameBudget`, default 1,000
 *   frames/s) and, while their streams are busy, one clock: a batcher whose window ended
 *   with output waiting sends it and joins the budget's tick, and from then on its frames
 *   leave on that tick (when its own window is over) until a window ends with nothing
 *   waiting. The tick's period is the shortest window a joined batcher wants, but with n
 *   batchers joined no shorter than n / budget seconds. So one step keeps the short
 *   window, and so do sparse lines (their windows end empty), while 10 steps at 1,000
 *   lines/s each get 10 ms windows and 50 steps 50 ms, instead of flooding the coordinator
 *   with a frame per step every 5 ms; and the frames of all busy steps leave together, so
 *   the coordinator reads them and writes them to a follower in one pass, not one per frame.
 * - A frame also leaves as soon as `maxBytes` are waiting.
 */
import { systemTimers, traceLog, type Timer, type Timers } from '../shared/core.js';

export interface LogChunk {
  seq: number;
  offset: number;
  data: Buffer;
}

/** What the shared tick of a FrameBudget drives: a batcher whose stream is busy. */
interface Streaming {
  /** The window it wants now (ms). */
  readonly windowMs: number;
  readonly maxDelayMs: number;
  /** `ms` passed since the last tick: send what waits if its window is over. */
  tick(ms: number, period: number): void;
}

/**
 * The frame rate the batchers of one process aim to stay under together, and the clock
 * their busy streams share: a batcher whose window ended with output waiting joins one
 * tick, so the frames of all busy steps leave together (the coordinator then reads and
 * sends them to followers in one pass, not one pass per frame). The tick's period is the
 * shortest window a joined batcher wants, but no shorter than 1 s per budget per joined
 * batcher.
 */
export class FrameBudget {
  private readonly open = new Set<Streaming>();
  private timer: Timer | null = null;
  private period = 0;

  constructor(readonly framesPerSec = 1000) {}

  /** The shortest window (ms) a batcher may use now: 1 s per budget, per streaming batcher. */
  minWindowMs(): number {
    return (1000 * this.open.size) / this.framesPerSec;
  }

  /** `b` streams: it leaves on the shared tick from now on (started with `timers` if not running). */
  join(b: Streaming, timers: Timers): void {
    this.open.add(b);
    if (this.timer === null) this.arm(timers);
  }

  leave(b: Streaming): void {
    this.open.delete(b);
    if (this.open.size === 0 && this.timer !== null) {
      this.timer.clear();
      this.timer = null;
    }
  }

  private arm(timers: Timers): void {
    let want = Infinity;
    let cap = Infinity;
    for (const b of this.open) {
      want = Math.min(want, b.windowMs);
      cap = Math.min(cap, b.maxDelayMs);
    }
    this.period = Math.min(cap, Math.max(want, this.minWindowMs()));
    this.timer = timers.after(this.period, () => {
      this.timer = null;
      const period = this.period;
      for (const b of [...this.open]) b.tick(period, period);
      if (this.open.size > 0 && this.timer === null) this.arm(timers);
    });
  }
}

/** Shared by every batcher that is not given its own. */
const processBudget = new FrameBudget();

export interface LogBatcherOptions {
  /** A frame leaves when this many bytes wait (default 64 KiB). */
  maxBytes?: number;
  /** The shortest coalescing window, under light load (default 5 ms). */
  minDelayMs?: number;
  /** The longest coalescing window, under heavy load: no byte waits longer (default 50 ms). */
  maxDelayMs?: number;
  /** Output at this many lines/s (default 4,000) or bytes/s (default 512 KiB) is heavy load. */
  busyLinesPerSec?: number;
  busyBytesPerSec?: number;
  onChunk: (chunk: LogChunk) => void;
  /** Defaults to one budget for the whole process. */
  budget?: FrameBudget;
  /** @default systemTimers (the simulation passes its own) */
  timers?: Timers;
}

const NEWLINE = 10;

function countLines(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(NEWLINE); i >= 0; i = buf.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

export class LogBatcher implements Streaming {
  private parts: Buffer[] = [];
  private pending = 0;
  /** Lines and bytes written since the last frame left (or the window opened). */
  private gatheredLines = 0;
  private gatheredBytes = 0;
  /** The timer of the first window after a quiet time; null otherwise. */
  private timer: Timer | null = null;
  /** On the budget's shared tick: the stream is busy (a window ended with output waiting). */
  private streaming = false;
  /** While streaming: ms of ticks since the last frame left. */
  private waited = 0;
  private seq = 0;
  /** The window length the load calls for (ms). */
  private window: number;
  /** Bytes handed to onChunk so far. */
  offset = 0;
  private readonly maxBytes: number;
  private readonly minDelayMs: number;
  readonly maxDelayMs: number;
  private readonly busyLinesPerSec: number;
  private readonly busyBytesPerSec: number;
  private readonly timers: Timers;
  private readonly budget: FrameBudget;

  constructor(private readonly opts: LogBatcherOptions) {
    this.maxBytes = opts.maxBytes ?? 64 * 1024;
    this.maxDelayMs = opts.maxDelayMs ?? 50;
    this.minDelayMs = Math.min(opts.minDelayMs ?? 5, this.maxDelayMs);
    this.busyLinesPerSec = opts.busyLinesPerSec ?? 4000;
    this.busyBytesPerSec = opts.busyBytesPerSec ?? 512 * 1024;
    this.timers = opts.timers ?? systemTimers;
    this.budget = opts.budget ?? processBudget;
    this.window = this.minDelayMs;
  }

  /** The current coalescing window in ms (for tests and diagnostics). */
  get windowMs(): number {
    return this.window;
  }

  write(data: string | Uint8Array): void {
    let buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (buf.length === 0) return;
    traceLog('agent-in', buf);
    while (buf.length > 0) {
      const room = this.maxBytes - this.pending;
      const part = buf.subarray(0, room);
      this.parts.push(part);
      this.pending += part.length;
      this.gatheredLines += countLines(part);
      this.gatheredBytes += part.length;
      buf = buf.subarray(part.length);
      if (this.pending >= this.maxBytes) this.send();
    }
    if (this.timer === null && !this.streaming) {
      // Quiet until now: what came leaves at once, and a window opens for what follows.
      this.send();
      this.openWindow();
    }
  }

  /** Sends what is waiting now and ends the window (the next output leaves at once). */
  flush(): void {
    if (this.timer !== null) {
      this.timer.clear();
      this.timer = null;
    }
    this.stopStreaming();
    this.send();
  }

  /** The first window after a quiet time: its own timer, as long as the load and the budget say. */
  private openWindow(): void {
    this.gatheredLines = 0;
    this.gatheredBytes = 0;
    const ms = Math.min(this.maxDelayMs, Math.max(this.window, this.budget.minWindowMs()));
    this.timer = this.timers.after(ms, () => {
      this.timer = null;
      this.windowEnded(ms);
    });
  }

  /** The budget's tick, `ms` after the last one: the window ends now if waiting one more `period` would make it too long. */
  tick(ms: number, period: number): void {
    this.waited += ms;
    if (this.waited + period <= this.window) return;
    this.windowEnded(this.waited);
  }

  /** A window of `ms` ended: adapt the window to the load in it, then send what waits (and
   * stream on the shared tick), or go quiet if nothing came. */
  private windowEnded(ms: number): void {
    const perSec = 1000 / Math.max(1, ms);
    const lines = this.gatheredLines * perSec;
    const bytes = this.gatheredBytes * perSec;
    if (lines >= this.busyLinesPerSec || bytes >= this.busyBytesPerSec) {
      this.window = Math.min(this.maxDelayMs, this.window * 2);
    } else if (lines * 2 < this.busyLinesPerSec && bytes * 2 < this.busyBytesPerSec) {
      this.window = Math.max(this.minDelayMs, this.window / 2);
    }
    this.gatheredLines = 0;
    this.gatheredBytes = 0;
    this.waited = 0;
    if (this.pending === 0) {
      this.stopStreaming(); // quiet: the next output leaves at once
      return;
    }
    this.send();
    if (!this.streaming) {
      this.streaming = true;
      this.budget.join(this, this.timers);
    }
  }

  private stopStreaming(): void {
    if (!this.streaming) return;
    this.streaming = false;
    this.waited = 0;
    this.budget.leave(this);
  }

  private send(): void {
    if (this.pending === 0) return;
    const data = Buffer.concat(this.parts, this.pending);
    this.parts = [];
    this.pending = 0;
    traceLog('agent-out', data);
    const chunk = { seq: this.seq++, offset: this.offset, data };
    this.offset += data.length;
    this.opts.onChunk(chunk);
  }
}
