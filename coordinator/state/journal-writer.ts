/**
 * The state journal's writer (`journal.jsonl`): group commit, the O_DSYNC journal file, and
 * compaction (a new snapshot, then a journal swap). It owns the journal file handle and the
 * write loop; what to write comes from its caller (`takeText`, the lines for everything
 * changed since the last batch) and the snapshot is the caller's too (`writeSnapshot`).
 *
 * The durability contract:
 * - A commit's promise resolves only once every change made before the call is on disk.
 *   The journal is opened O_DSYNC, so an append returns only once its data (and the file
 *   size) is on disk: the fdatasync happens in the same system call.
 * - One batch is in flight at a time (journal lines stay in order); commits that arrive
 *   while a write is in flight share the next one, which starts as soon as the previous
 *   one is durable. The cost of a batch follows the number of changes, not the state size.
 * - When the journal grows past the snapshot's size (and a floor), the state is serialized
 *   and written as a new snapshot (temp, fsync, rename, fsync dir) while commits go on
 *   being appended and acknowledged; their lines are also kept, and once the snapshot is
 *   durable the journal is replaced by just those lines, between two batches.
 * - A crash at any point leaves a snapshot and a journal whose replay gives every
 *   acknowledged change: before the swap, the whole old journal replays over the newer
 *   snapshot (entries are idempotent upserts); after it, the lines written since the
 *   snapshot replay over it.
 * - A failed write means durability can no longer be promised: every waiting and every
 *   later commit fails (E_STATE), and the coordinator stops acknowledging.
 */
import { constants, open, type FileHandle } from 'node:fs/promises';
import { KilnError, coerceError } from '../../shared/index.js';
import { fsyncDir, writeFileDurable } from './durable-file.js';

export interface JournalWriterOptions {
  /** Directory holding the journal (synced when the journal file is created). */
  dataDir: string;
  journalPath: string;
  /** Journal size that triggers a snapshot, at least. */
  minCompactBytes: number;
  /** The journal text for everything changed since the last call ('' when nothing); called synchronously as a batch starts. */
  takeText: () => string;
  /** Serializes the state at once (synchronously) and writes it durably as the snapshot. */
  writeSnapshot: () => Promise<void>;
  /** Size in bytes of the snapshot on disk. */
  snapshotBytes: () => number;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/** A snapshot being written while commits go on; `tail` holds what was appended since it was serialized. */
interface Compaction {
  tail: string[];
  snapshotted: boolean;
  done: Promise<void>;
  finish: (err?: unknown) => void;
}

/**
 * Writes all of `bytes`: one write(2) may write less without an error (a disk filling up,
 * a file size limit), and acknowledging a batch whose tail was never written would lose it
 * (or leave a torn line in the middle of the journal). O_APPEND keeps the pieces together.
 */
async function appendAll(fh: FileHandle, bytes: Buffer): Promise<void> {
  let off = 0;
  while (off < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, off, bytes.length - off);
    if (bytesWritten <= 0) throw new Error(`short write to the journal (${off} of ${bytes.length} bytes)`);
    off += bytesWritten;
  }
}

/** Append, create, and every write durable before it returns (O_DSYNC: data plus the size, like fdatasync). */
const JOURNAL_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC;

function openJournal(path: string): Promise<FileHandle> {
  return open(path, JOURNAL_FLAGS, 0o600);
}

export class JournalWriter {
  private journal: FileHandle | null = null;
  private journalBytes = 0;
  private waiting: Waiter[] = [];
  private writing = false;
  private scheduled = false;
  private failed: Error | null = null;
  private compaction: Compaction | null = null;
  /** Durable writes done: journal appends and snapshots (for tests and metrics). */
  writes = 0;
  /** Snapshots written (compactions). */
  snapshots = 0;

  constructor(private readonly opts: JournalWriterOptions) {}

  /** A new state: writes the first snapshot and creates an empty, synced journal. */
  async create(): Promise<void> {
    await this.opts.writeSnapshot();
    this.writes++;
    this.journal = await openJournal(this.opts.journalPath);
    await this.journal.sync();
    await fsyncDir(this.opts.dataDir);
  }

  /**
   * After replay: `validBytes` of the journal replayed; a torn final line (an append never
   * acknowledged) is cut off, and a journal with anything in it is folded into a snapshot.
   */
  async recover(validBytes: number, torn: boolean): Promise<void> {
    const fh = await open(this.opts.journalPath, 'r+');
    try {
      if (torn) {
        await fh.truncate(validBytes);
        await fh.datasync();
      }
    } finally {
      await fh.close();
    }
    this.journalBytes = validBytes;
    if (this.journalBytes > 0) await this.compact();
  }

  /** Resolves when every change made before this call is durable. */
  commit(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.writing && !this.scheduled) {
        this.scheduled = true;
        // Two setImmediate hops: changes made in this turn, and in every setImmediate callback
        // already queued (the engine's placement pass, whose dispatches wait for this write),
        // share one write; one hop let a result's commit start writing just before the
        // placement it triggered, which then waited for a second write.
        setImmediate(() => setImmediate(() => void this.flush()));
      }
    });
  }

  /** Waits for writes in flight and a running compaction, writes a final snapshot, closes the journal. */
  async drain(): Promise<void> {
    while (this.writing || this.waiting.length > 0 || this.scheduled || this.compaction) {
      await this.commit().catch(() => {});
      await this.compaction?.done.catch(() => {});
      await new Promise((r) => setImmediate(r));
    }
    if (!this.failed && this.journalBytes > 0) {
      this.writing = true;
      try {
        await this.compact();
      } finally {
        this.writing = false;
      }
    }
    await this.journal?.close();
    this.journal = null;
  }

  /**
   * Writes what changed, batch after batch, while commits wait. One batch is in flight at
   * a time; commits that arrive meanwhile share the next batch, which starts as soon as the
   * previous one is durable (one trip to the thread pool per batch: the O_DSYNC append).
   */
  private async flush(): Promise<void> {
    this.scheduled = false;
    if (this.writing) return;
    this.writing = true;
    try {
      for (;;) {
        if (this.compaction?.snapshotted) await this.swapJournal();
        if (this.waiting.length === 0 || this.failed) break;
        const batch = this.waiting;
        this.waiting = [];
        try {
          const text = this.opts.takeText();
          if (text) {
            const fh = await this.journalHandle();
            const bytes = Buffer.from(text);
            await appendAll(fh, bytes);
            this.journalBytes += bytes.length;
            this.compaction?.tail.push(text);
            this.writes++;
          }
          for (const w of batch) w.resolve();
          if (!this.compaction && this.journalBytes > Math.max(this.opts.minCompactBytes, this.opts.snapshotBytes())) this.startCompaction();
        } catch (err) {
          this.fail(err, batch);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /** Fails `batch`, every waiting commit and every later one. */
  private fail(err: unknown, batch: Waiter[] = []): void {
    this.failed ??= new KilnError('E_STATE', `writing the state in ${this.opts.dataDir} failed: ${coerceError(err).message}`, { cause: err });
    for (const w of batch) w.reject(this.failed);
    for (const w of this.waiting.splice(0)) w.reject(this.failed);
  }

  /**
   * Compaction without stopping commits: the state is serialized now (synchronously, in
   * `writeSnapshot`), and while that snapshot is written, synced and renamed, commits go on
   * appending to the journal and are acknowledged as before (their lines are kept in
   * `tail`). Once the snapshot is durable, the flush loop swaps the journal between two
   * batches (`swapJournal`).
   */
  private startCompaction(): void {
    let finish!: (err?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => {
      finish = (err?: unknown) => (err === undefined ? resolve() : reject(coerceError(err)));
    });
    const c: Compaction = { tail: [], snapshotted: false, done, finish };
    this.compaction = c;
    void done.catch(() => {}); // failures reach waiters through fail()
    this.opts.writeSnapshot().then(
      () => {
        c.snapshotted = true;
        // No batch in flight: swap now; otherwise the flush loop swaps between two batches.
        if (!this.writing) void this.flush();
      },
      (err: unknown) => {
        this.compaction = null;
        this.fail(err);
        c.finish(err);
      },
    );
  }

  /**
   * Replaces the journal by the lines written since the snapshot (temp file, fsync, rename,
   * fsync dir); called with `writing` held.
   */
  private async swapJournal(): Promise<void> {
    const c = this.compaction;
    if (!c) return;
    this.compaction = null;
    try {
      const text = c.tail.join('');
      await writeFileDurable(this.opts.journalPath, text, 0o600);
      await this.journal?.close();
      this.journal = null;
      this.journalBytes = Buffer.byteLength(text);
      this.writes++;
      this.snapshots++;
      c.finish();
    } catch (err) {
      this.fail(err);
      c.finish(err);
    }
  }

  /** Writes a full snapshot, then empties the journal (called with `writing` held, no compaction running). */
  private async compact(): Promise<void> {
    await this.opts.writeSnapshot();
    const fh = await this.journalHandle();
    await fh.truncate(0);
    await fh.datasync();
    this.journalBytes = 0;
    this.writes++;
    this.snapshots++;
  }

  private async journalHandle(): Promise<FileHandle> {
    if (!this.journal) {
      this.journal = await openJournal(this.opts.journalPath);
      await fsyncDir(this.opts.dataDir);
    }
    return this.journal;
  }
}
