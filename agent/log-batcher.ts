/**
 * Batches a build's log output into frames: a frame leaves when 64 KiB are waiting or
 * 50 ms after its first byte, whichever comes first. Each frame carries the attempt's
 * sequence number and the byte offset of its first byte, so the coordinator can drop
 * duplicates and detect gaps.
 */
import { systemTimers, type Timer, type Timers } from '../shared/index.js';

export interface LogChunk {
  seq: number;
  offset: number;
  data: Buffer;
}

export interface LogBatcherOptions {
  maxBytes?: number;
  maxDelayMs?: number;
  onChunk: (chunk: LogChunk) => void;
  /** @default systemTimers (the simulation passes its own) */
  timers?: Timers;
}

export class LogBatcher {
  private parts: Buffer[] = [];
  private pending = 0;
  private timer: Timer | null = null;
  private seq = 0;
  /** Bytes handed to onChunk so far. */
  offset = 0;
  private readonly maxBytes: number;
  private readonly maxDelayMs: number;

  constructor(private readonly opts: LogBatcherOptions) {
    this.maxBytes = opts.maxBytes ?? 64 * 1024;
    this.maxDelayMs = opts.maxDelayMs ?? 50;
  }

  write(data: string | Uint8Array): void {
    let buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    while (buf.length > 0) {
      const room = this.maxBytes - this.pending;
      const part = buf.subarray(0, room);
      this.parts.push(part);
      this.pending += part.length;
      buf = buf.subarray(part.length);
      if (this.pending >= this.maxBytes) this.flush();
    }
    if (this.pending > 0 && !this.timer) {
      this.timer = (this.opts.timers ?? systemTimers).after(this.maxDelayMs, () => this.flush());
    }
  }

  /** Sends what is waiting now. */
  flush(): void {
    if (this.timer) {
      this.timer.clear();
      this.timer = null;
    }
    if (this.pending === 0) return;
    const data = Buffer.concat(this.parts, this.pending);
    this.parts = [];
    this.pending = 0;
    const chunk = { seq: this.seq++, offset: this.offset, data };
    this.offset += data.length;
    this.opts.onChunk(chunk);
  }
}
