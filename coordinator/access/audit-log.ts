/**
 * The audit log: one JSON line per mutation and per refused call, appended to
 * `data_dir/audit.log`. A line says who (`key:<id>/<name>`, `agent:<name>` or
 * `anonymous`; never a secret), did what (an action name such as `build.cancel`, or the
 * method and route of a refused call), to which build/agent/key (`target`), the outcome
 * (`ok` or `refused`), a detail, the remote address and the time. Reads are not recorded
 * (a dashboard polling every second would drown the rest).
 *
 * Bounded: when the file would pass `maxBytes` it is renamed to `audit.log.1` (replacing
 * the older one) and a new file is started, so at most 2 x maxBytes are kept. Lines are
 * appended in order by one writer, gathered for up to 50 ms and written together; they
 * are not fsynced (the log records, it does not acknowledge anything: a crash may lose the
 * last 50 ms). `query` reads both files backwards, newest first.
 */
import { open, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { coerceError, errnoCode } from '../../shared/index.js';

/** The interface other parts record into (shared by every helper of issue 12). */
export interface AuditSink {
  record(e: { actor: string; action: string; target?: string; outcome: 'ok' | 'refused'; detail?: string; remote?: string }): void;
}

export type AuditEvent = Parameters<AuditSink['record']>[0];

/** One stored line. */
export interface AuditEntry extends AuditEvent {
  time: string;
}

export const DEFAULT_AUDIT_MAX_BYTES = 64 * 1024 * 1024;
/** Longest field kept (a detail, a target); longer ones are cut. */
const FIELD_MAX = 1000;
const QUERY_CHUNK = 64 * 1024;
/** Lines are written together, at most this long after the first of them (or once this many bytes wait). */
const WRITE_DELAY_MS = 50;
const WRITE_BATCH_BYTES = 256 * 1024;
/** Lines waiting for the disk; past this, new ones are counted as dropped (and the drop is logged). */
const MAX_PENDING = 10_000;

export interface AuditQuery {
  /** At most this many entries (1..1000). */
  limit: number;
  /** Only entries whose actor is this, or whose actor's id or name is this. */
  actor?: string;
  /** Only this action (`build.cancel`), or actions starting with it when it ends in `.` (`build.`). */
  action?: string;
}

const cut = (s: string | undefined): string | undefined => (s === undefined ? undefined : s.length > FIELD_MAX ? `${s.slice(0, FIELD_MAX)}…` : s);

export function actorMatches(actor: string, wanted: string): boolean {
  if (actor === wanted) return true;
  const m = /^(key|agent):(.*)$/.exec(actor);
  if (!m) return false;
  return m[2] === wanted || m[2]!.split('/').includes(wanted);
}

function matches(e: AuditEntry, q: AuditQuery): boolean {
  if (q.actor !== undefined && !actorMatches(e.actor, q.actor)) return false;
  if (q.action !== undefined && !(q.action.endsWith('.') ? e.action.startsWith(q.action) : e.action === q.action)) return false;
  return true;
}

export class AuditLog implements AuditSink {
  readonly path: string;
  private fh: FileHandle | null = null;
  private size = 0;
  private pending: string[] = [];
  private pendingBytes = 0;
  private writing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private dropped = 0;

  private constructor(
    dataDir: string,
    private readonly opts: { maxBytes: number; clock: () => number; onError: (err: Error) => void },
  ) {
    this.path = join(dataDir, 'audit.log');
  }

  static async open(dataDir: string, opts: { maxBytes?: number; clock?: () => number; onError?: (err: Error) => void } = {}): Promise<AuditLog> {
    const log = new AuditLog(dataDir, { maxBytes: opts.maxBytes ?? DEFAULT_AUDIT_MAX_BYTES, clock: opts.clock ?? Date.now, onError: opts.onError ?? (() => {}) });
    log.fh = await open(log.path, 'a', 0o600);
    log.size = (await log.fh.stat()).size;
    return log;
  }

  record(e: AuditEvent): void {
    const entry: AuditEntry = {
      time: new Date(this.opts.clock()).toISOString(),
      actor: cut(e.actor)!,
      action: cut(e.action)!,
      ...(e.target !== undefined ? { target: cut(e.target)! } : {}),
      outcome: e.outcome,
      ...(e.detail !== undefined ? { detail: cut(e.detail)! } : {}),
      ...(e.remote !== undefined ? { remote: cut(e.remote)! } : {}),
    };
    if (this.pending.length >= MAX_PENDING) {
      this.dropped++;
      return;
    }
    const line = `${JSON.stringify(entry)}\n`;
    this.pending.push(line);
    this.pendingBytes += line.length;
    // Lines are gathered for up to WRITE_DELAY_MS (or WRITE_BATCH_BYTES) and written together:
    // one write per request cost as much CPU as the state journal's.
    if (this.pendingBytes >= WRITE_BATCH_BYTES) this.startDrain();
    else this.timer ??= setTimeout(() => this.startDrain(), WRITE_DELAY_MS).unref();
  }

  /** Resolves when every line recorded so far is written. */
  async flush(): Promise<void> {
    if (this.pending.length > 0) this.startDrain();
    while (this.writing) await this.writing;
  }

  private startDrain(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    // Not with nothing pending: drain() would then finish before `writing` is set, leaving it
    // set to a settled promise for good, and flush() would spin on it (blocking the event loop).
    if (this.pending.length > 0) this.writing ??= this.drain();
  }

  async close(): Promise<void> {
    await this.flush();
    await this.fh?.close();
    this.fh = null;
  }

  /** Entries newest first, filtered, at most `q.limit`. */
  async query(q: AuditQuery): Promise<AuditEntry[]> {
    await this.flush();
    const out: AuditEntry[] = [];
    for (const file of [this.path, `${this.path}.1`]) {
      for await (const line of linesBackwards(file)) {
        let e: AuditEntry;
        try {
          e = JSON.parse(line) as AuditEntry;
        } catch {
          continue; // a torn last line after a crash
        }
        if (typeof e?.actor !== 'string' || typeof e.action !== 'string') continue;
        if (!matches(e, q)) continue;
        out.push(e);
        if (out.length >= q.limit) return out;
      }
    }
    return out;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0 && this.fh) {
        const batch = this.pending.splice(0);
        this.pendingBytes = 0;
        if (this.dropped > 0) {
          batch.unshift(`${JSON.stringify({ time: new Date(this.opts.clock()).toISOString(), actor: 'coordinator', action: 'audit.dropped', outcome: 'refused', detail: `${this.dropped} lines dropped: the disk did not keep up` })}\n`);
          this.dropped = 0;
        }
        // Written in runs that fit the current file; a full file is rotated first.
        let run: string[] = [];
        let runBytes = 0;
        for (const line of batch) {
          const bytes = Buffer.byteLength(line);
          if (this.size + runBytes + bytes > this.opts.maxBytes && this.size + runBytes > 0) {
            await this.writeRun(run, runBytes);
            await this.rotate();
            run = [];
            runBytes = 0;
          }
          run.push(line);
          runBytes += bytes;
        }
        await this.writeRun(run, runBytes);
      }
    } catch (err) {
      this.opts.onError(coerceError(err));
    } finally {
      this.writing = null;
      if (this.pending.length > 0 && this.fh) this.writing = this.drain();
    }
  }

  private async writeRun(run: string[], bytes: number): Promise<void> {
    if (bytes === 0) return;
    await this.fh!.write(run.join(''));
    this.size += bytes;
  }

  private async rotate(): Promise<void> {
    await this.fh!.close();
    this.fh = null;
    await rename(this.path, `${this.path}.1`);
    this.fh = await open(this.path, 'a', 0o600);
    this.size = 0;
  }
}

/** The lines of a file, last first (a missing file has none). Reads 64 KiB at a time from the end. */
async function* linesBackwards(path: string): AsyncGenerator<string> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  try {
    let pos = (await fh.stat()).size;
    let rest = Buffer.alloc(0);
    while (pos > 0) {
      const n = Math.min(QUERY_CHUNK, pos);
      pos -= n;
      const chunk = Buffer.alloc(n);
      await fh.read(chunk, 0, n, pos);
      const buf = Buffer.concat([chunk, rest]);
      let end = buf.length;
      for (let i = buf.length - 1; i >= 0; i--) {
        if (buf[i] !== 0x0a) continue;
        if (end > i + 1) yield buf.subarray(i + 1, end).toString('utf8');
        end = i;
      }
      rest = buf.subarray(0, end);
      if (rest.length > 4 * 1024 * 1024) rest = Buffer.alloc(0); // no line is this long: skip it
    }
    if (rest.length > 0) yield rest.toString('utf8');
  } finally {
    await fh.close();
  }
}
