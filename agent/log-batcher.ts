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
 *   frames/s): with n batchers streaming (their last window ended with output waiting), no
 *   window is shorter than n / budget seconds. So one step keeps the short window, and so
 *   do sparse lines (their windows end empty), while 10 steps at 1,000 lines/s each get
 *   10 ms windows and 50 steps 50 ms, instead of flooding the coordinator with a frame per
 *   step every 5 ms.
 * - A frame also leaves as soon as `maxBytes` are waiting.
 */
import { systemTimers, type Timer, type Timers } from '../shared/core.js';

export interface LogChunk {
  seq: number;
  offset: number;
  data: Buffer;
}

/** The frame rate the batchers of one process aim to stay under together. */
export class FrameBudget {
  private readonly open = new Set<object>();

  constructor(readonly framesPerSec = 1000) {}

  /** The shortest window (ms) a batcher may use now: 1 s per budget, per streaming batcher. */
  minWindowMs(): number {
    return (1000 * this.open.size) / this.framesPerSec;
  }

  opened(batcher: object): void {
    this.open.add(batcher);
  }

  closed(batcher: object): void {
    this.open.delete(batcher);
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

export class LogBatcher {
  private parts: Buffer[] = [];
  private pending = 0;
  /** Lines and bytes written since the window opened. */
  private gatheredLines = 0;
  private gatheredBytes = 0;
  /** The open window's timer; null while the stream is quiet. */
  private timer: Timer | null = null;
  private seq = 0;
  /** The window length the load calls for (ms), and the length of the one open now. */
  private window: number;
  private openedFor = 0;
  /** Bytes handed to onChunk so far. */
  offset = 0;
  private readonly maxBytes: number;
  private readonly minDelayMs: number;
  private readonly maxDelayMs: number;
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
    if (this.timer === null) {
      // Quiet until now: what came leaves at once, and a window opens for what follows.
      this.send();
      this.openWindow(false);
    }
  }

  /** Sends what is waiting now and closes the window (the next output leaves at once). */
  flush(): void {
    if (this.timer !== null) {
      this.timer.clear();
      this.timer = null;
      this.budget.closed(this);
    }
    this.send();
  }

  /** Opens a window; `streaming`: the last one ended with output waiting. */
  private openWindow(streaming: boolean): void {
    this.gatheredLines = 0;
    this.gatheredBytes = 0;
    if (streaming) this.budget.opened(this);
    else this.budget.closed(this);
    const ms = Math.min(this.maxDelayMs, Math.max(this.window, this.budget.minWindowMs()));
    this.openedFor = ms;
    this.timer = this.timers.after(ms, () => this.windowEnded());
  }

  private windowEnded(): void {
    this.timer = null;
    const perSec = 1000 / this.openedFor;
    const lines = this.gatheredLines * perSec;
    const bytes = this.gatheredBytes * perSec;
    if (lines >= this.busyLinesPerSec || bytes >= this.busyBytesPerSec) {
      this.window = Math.min(this.maxDelayMs, this.window * 2);
    } else if (lines * 2 < this.busyLinesPerSec && bytes * 2 < this.busyBytesPerSec) {
      this.window = Math.max(this.minDelayMs, this.window / 2);
    }
    if (this.pending === 0) {
      this.budget.closed(this); // quiet: the window closes
      return;
    }
    this.send();
    this.openWindow(true);
  }

  private send(): void {
    if (this.pending === 0) return;
    const data = Buffer.concat(this.parts, this.pending);
    this.parts = [];
    this.pending = 0;
    const chunk = { seq: this.seq++, offset: this.offset, data };
    this.offset += data.length;
    this.opts.onChunk(chunk);
  }
}
