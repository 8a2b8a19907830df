/**
 * Build logs on disk, one file per attempt: `logs/<build>/<node>/attempt-<n>.log`.
 *
 * An attempt file holds the coordinator's header for the attempt (empty for a first
 * attempt; for a re-queued one it says why), then the agent's bytes exactly as sent.
 * Agent bytes are addressed by the agent's own offset, so a resent or duplicated chunk
 * is written once and a gap is refused (the agent resends from the returned offset).
 *
 * A node's log is the concatenation of its attempt files in order; node-level offsets
 * index that concatenation and are what SSE event ids carry. Attempt files before the
 * current one are closed and never change, so node offsets are stable.
 *
 * Emits `append` (buildId, node) after every write, for live followers (LogEvents). The
 * last bytes written to an open attempt (TAIL_BYTES) are also kept in memory, so a live
 * follower reads what just came without a file read.
 *
 * The default implementation of `LogStorage` (log-storage.ts); an append is acknowledged once
 * written to the file (as before issue 14), flushed to disk when the attempt is closed.
 */
import { mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { TypedEmitter, errnoCode, traceLog } from '../../shared/index.js';
import { isCharBoundaryIn, type AttemptKey, type AttemptLogRef, type LogEvents, type LogStorage } from './log-storage.js';

export type { AttemptLogRef, LogEvents } from './log-storage.js';

/** The last bytes written to an open attempt kept in memory, for live followers. */
const TAIL_BYTES = 32 * 1024;

interface OpenAttempt {
  fh: FileHandle;
  headerBytes: number;
  /** agent bytes in the file */
  agentBytes: number;
  queue: Promise<unknown>;
  /** The last writes (at most about TAIL_BYTES in all, whole writes), and the file offset of their first byte. */
  tail: Buffer[];
  tailStart: number;
  tailBytes: number;
}

export class LogStore extends TypedEmitter<LogEvents> implements LogStorage {
  readonly root: string;
  private readonly open = new Map<string, OpenAttempt>();
  private readonly opening = new Map<string, Promise<OpenAttempt>>();
  private readonly sizes = new Map<string, number>();

  constructor(dataDir: string) {
    super();
    this.root = join(dataDir, 'logs');
  }

  get location(): string {
    return this.root;
  }

  /** Files are always there to write (a failing write fails its append). */
  get healthy(): boolean {
    return true;
  }

  buildDir(buildId: string): string {
    return join(this.root, buildId);
  }

  attemptPath(buildId: string, node: string, number: number): string {
    return join(this.root, buildId, node, `attempt-${number}.log`);
  }

  private async openAttempt(ref: AttemptLogRef): Promise<OpenAttempt> {
    const path = this.attemptPath(ref.buildId, ref.node, ref.number);
    const existing = this.open.get(path);
    if (existing) return existing;
    const pending = this.opening.get(path);
    if (pending) return pending;
    const p = (async () => {
      await mkdir(join(this.root, ref.buildId, ref.node), { recursive: true });
      const fh = await open(path, 'a+', 0o644);
      const header = Buffer.from(ref.header);
      let size = (await fh.stat()).size;
      if (size === 0 && header.length > 0) {
        await fh.write(header);
        size = header.length;
      }
      const entry: OpenAttempt = { fh, headerBytes: header.length, agentBytes: Math.max(0, size - header.length), queue: Promise.resolve(), tail: [], tailStart: size, tailBytes: 0 };
      this.open.set(path, entry);
      this.sizes.set(path, size);
      return entry;
    })();
    this.opening.set(path, p);
    try {
      return await p;
    } finally {
      this.opening.delete(path);
    }
  }

  /**
   * Writes agent bytes `data` that start at agent offset `offset`. Bytes already written
   * are skipped; a chunk that starts beyond what was written (a gap) is not written.
   * Returns the number of agent bytes in the file afterwards: the offset to ack.
   */
  async append(ref: AttemptLogRef, offset: number, data: Uint8Array): Promise<number> {
    traceLog('coord-recv', data);
    const entry = await this.openAttempt(ref);
    const path = this.attemptPath(ref.buildId, ref.node, ref.number);
    const run = entry.queue.then(async () => {
      if (offset > entry.agentBytes) return entry.agentBytes; // gap: refuse, agent resends
      const skip = entry.agentBytes - offset;
      if (skip >= data.length) return entry.agentBytes; // duplicate
      const part = skip > 0 ? data.subarray(skip) : data;
      await appendAll(entry, part);
      traceLog('coord-disk', part);
      keepTail(entry, part);
      entry.agentBytes += part.length;
      this.sizes.set(path, entry.headerBytes + entry.agentBytes);
      this.emit('append', ref.buildId, ref.node);
      return entry.agentBytes;
    });
    entry.queue = run.catch(() => {});
    return run;
  }

  /**
   * Appends a coordinator note after whatever the agent sent, for an attempt that will get
   * no more agent bytes (it is being ended: reused, shared). Counted as agent bytes so the
   * offsets of readers stay consistent.
   */
  async appendNote(ref: AttemptLogRef, text: string): Promise<void> {
    const entry = await this.openAttempt(ref);
    const path = this.attemptPath(ref.buildId, ref.node, ref.number);
    const run = entry.queue.then(async () => {
      const data = Buffer.from(text);
      await appendAll(entry, data);
      keepTail(entry, data);
      entry.agentBytes += data.length;
      this.sizes.set(path, entry.headerBytes + entry.agentBytes);
      this.emit('append', ref.buildId, ref.node);
    });
    entry.queue = run.catch(() => {});
    await run;
  }

  /** Makes sure the attempt file exists (with its header) even when the agent sent no bytes. */
  async ensure(ref: AttemptLogRef): Promise<void> {
    await this.openAttempt(ref);
    this.emit('append', ref.buildId, ref.node);
  }

  /** Agent bytes already in the attempt's file (creating it with its header if needed). */
  async agentBytes(ref: AttemptLogRef): Promise<number> {
    const entry = await this.openAttempt(ref);
    await entry.queue;
    return entry.agentBytes;
  }

  /** Flushes the attempt file to disk and closes it. */
  async close(ref: AttemptKey): Promise<void> {
    const path = this.attemptPath(ref.buildId, ref.node, ref.number);
    await this.opening.get(path)?.catch(() => {});
    const entry = this.open.get(path);
    if (!entry) return;
    this.open.delete(path);
    await entry.queue;
    try {
      await entry.fh.datasync();
    } finally {
      await entry.fh.close();
    }
  }

  async closeAll(): Promise<void> {
    for (const entry of this.open.values()) {
      await entry.queue;
      await entry.fh.datasync().catch(() => {});
      await entry.fh.close().catch(() => {});
    }
    this.open.clear();
  }

  private async fileSize(path: string): Promise<number> {
    const cached = this.sizes.get(path);
    if (cached !== undefined) return cached;
    try {
      const size = (await stat(path)).size;
      // Only files of closed attempts are immutable; open ones update the cache on write.
      this.sizes.set(path, size);
      return size;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return 0;
      throw err;
    }
  }

  /** Sizes of the node's attempt files 1..attempts (0 for a file not created yet). */
  async nodeSizes(buildId: string, node: string, attempts: number): Promise<number[]> {
    const out: number[] = [];
    for (let n = 1; n <= attempts; n++) {
      const path = this.attemptPath(buildId, node, n);
      out.push(await this.fileSize(path));
    }
    return out;
  }

  /** Forgets cached sizes of files that do not exist yet (so a later create is seen). */
  invalidate(buildId: string, node: string, number: number): void {
    const path = this.attemptPath(buildId, node, number);
    if (!this.open.has(path)) this.sizes.delete(path);
  }

  /**
   * Whether node-level `offset` falls between two characters (UTF-8): false when the byte
   * there continues a multi-byte character that starts before it. Offsets at or past the
   * end count as boundaries.
   */
  async isCharBoundary(buildId: string, node: string, sizes: number[], offset: number): Promise<boolean> {
    return isCharBoundaryIn((from, to) => this.read(buildId, node, sizes, from, to), offset);
  }

  /** The last `maxBytes` (at most) of one attempt's file, and the file offset they start at. */
  async tail(ref: AttemptKey, maxBytes: number): Promise<{ start: number; bytes: Buffer }> {
    const path = this.attemptPath(ref.buildId, ref.node, ref.number);
    const live = this.open.get(path);
    if (live) await live.queue;
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return { start: 0, bytes: Buffer.alloc(0) };
      throw err;
    }
    try {
      const size = (await fh.stat()).size;
      const start = Math.max(0, size - maxBytes);
      const buf = Buffer.alloc(size - start);
      const { bytesRead } = await fh.read(buf, 0, buf.length, start);
      return { start, bytes: buf.subarray(0, bytesRead) };
    } finally {
      await fh.close();
    }
  }

  /** Reads node-level bytes [start, end) across the attempt files. */
  async read(buildId: string, node: string, sizes: number[], start: number, end: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let base = 0;
    for (let i = 0; i < sizes.length && base < end; i++) {
      const size = sizes[i]!;
      const from = Math.max(start, base);
      const to = Math.min(end, base + size);
      if (to > from) {
        const path = this.attemptPath(buildId, node, i + 1);
        const live = this.open.get(path);
        if (live && from - base >= live.tailStart && to - base <= live.tailStart + live.tailBytes) {
          parts.push(readTail(live, from - base, to - base));
          base += size;
          continue;
        }
        const buf = Buffer.allocUnsafe(to - from);
        // An attempt being written is read through its open handle (no open and close per
        // read of a live follower); close() waits for a read in flight on it.
        let bytesRead: number;
        if (live) {
          ({ bytesRead } = await live.fh.read(buf, 0, buf.length, from - base));
        } else {
          const fh = await open(path, 'r');
          try {
            ({ bytesRead } = await fh.read(buf, 0, buf.length, from - base));
          } finally {
            await fh.close();
          }
        }
        parts.push(buf.subarray(0, bytesRead));
      }
      base += size;
    }
    return Buffer.concat(parts);
  }
}

/**
 * Appends all of `data` to the attempt's file, or nothing: one write(2) may write less
 * without an error (a disk filling up, a file size limit), and when a later write of the
 * same chunk fails, what the first wrote is cut off again, so the file keeps exactly the
 * agent bytes counted (the agent resends the chunk from the acknowledged offset; without
 * the cut its first part would be in the file twice and every later offset shifted).
 * Writes stay on the thread pool: a disk that stalls must not stall the event loop (acks,
 * heartbeats, dispatch).
 */
async function appendAll(entry: OpenAttempt, data: Uint8Array): Promise<void> {
  let off = 0;
  try {
    while (off < data.byteLength) {
      const { bytesWritten } = await entry.fh.write(data, off, data.byteLength - off);
      if (bytesWritten <= 0) throw new Error(`short write to the log (${off} of ${data.byteLength} bytes)`);
      off += bytesWritten;
    }
  } catch (err) {
    if (off > 0) await entry.fh.truncate(entry.headerBytes + entry.agentBytes);
    throw err;
  }
}

/** Adds bytes just written to the attempt's in-memory tail, dropping the oldest writes beyond TAIL_BYTES. */
function keepTail(entry: OpenAttempt, data: Uint8Array): void {
  if (entry.tailBytes === 0) entry.tailStart = entry.headerBytes + entry.agentBytes;
  entry.tail.push(Buffer.from(data)); // a copy: a view would keep the whole received message alive
  entry.tailBytes += data.byteLength;
  while (entry.tail.length > 1 && entry.tailBytes - entry.tail[0]!.length >= TAIL_BYTES) {
    const dropped = entry.tail.shift()!;
    entry.tailStart += dropped.length;
    entry.tailBytes -= dropped.length;
  }
}

/** File bytes [from, to) of an open attempt, all within its tail. */
function readTail(entry: OpenAttempt, from: number, to: number): Buffer {
  const out = Buffer.allocUnsafe(to - from);
  let at = entry.tailStart;
  let n = 0;
  for (const part of entry.tail) {
    const end = at + part.length;
    if (end > from && at < to) {
      const s = Math.max(from, at) - at;
      const e = Math.min(to, end) - at;
      n += part.copy(out, n, s, e);
    }
    at = end;
    if (at >= to) break;
  }
  return out;
}
