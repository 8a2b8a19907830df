/**
 * Build logs in PostgreSQL (issue 14; the schema is migration m003): the shared log store, so a
 * standby that takes over serves every build's logs, and every byte an agent was acked with
 * survives the leader's machine. Chosen over the object store by scripts/bench/log-store.ts
 * (see the README).
 *
 * - Same model as the file store (log-storage.ts): an attempt row holds the header, chunk rows
 *   the agent's bytes addressed by the agent's offset; a resent chunk is written once, a gap
 *   is refused. The leader is the only writer (every write is fenced), so what is stored is
 *   tracked in memory: `accepted` (taken, waiting for a commit) and `durable` (committed).
 * - Group commit: appends that arrive while a batch is being written share the next one, one
 *   transaction `SELECT kiln_fence(epoch, holder)` + the new attempt rows + the chunks
 *   (contiguous pieces of an attempt merged into rows of up to 256 KiB). An append resolves,
 *   and the agent is acked, only once its batch committed; `append` events (live followers)
 *   come then, and the bytes join the attempt's in-memory tail, so a live follower on the
 *   leader reads no row per line.
 * - The database away: the batch is retried with backoff (appends wait; `healthy` is false).
 *   A commit whose answer was lost is told apart from one that never landed by its first
 *   chunk's row. A refused fence (the lease moved on) or any other error fails the store for
 *   good: nothing more is written or acked (E_NOT_LEADER / E_STATE).
 * - Sizes of attempts are cached (the file store caches file sizes the same way): an open
 *   attempt's from memory, others once read, unless an attempt was opened meanwhile.
 */
import { KilnError, TypedEmitter, coerceError, traceLog } from '../../shared/index.js';
import type { PgClient, PgQueryable } from '../state/pg/pg-client.js';
import type { FenceToken } from '../state/pg/pg-state-backend.js';
import { LiveTail } from './live-tail.js';
import { isCharBoundaryIn, type AttemptKey, type AttemptLogRef, type LogEvents, type LogStorage } from './log-storage.js';

/** The largest chunk row (migration m003 checks it): a read of [from, to) needs rows starting after from - this. */
export const MAX_CHUNK_ROW_BYTES = 256 * 1024;
/** The last bytes of an open attempt kept in memory, for live followers. */
const TAIL_BYTES = 32 * 1024;
/** Chunk rows per INSERT statement (5 parameters each, and the epoch; PostgreSQL takes at most 65,535). */
const ROWS_PER_INSERT = 1_000;

export interface PgLogStoreOptions {
  pg: PgClient;
  /** The lease's current token, read at each write (null: not the leader, nothing is written). */
  fence: () => FenceToken | null;
  /** Called when the database goes away or comes back (for /readyz and logs). */
  onHealth?: (healthy: boolean, err?: Error) => void;
  /** Backoff between retries while the database is away: first and most. @default 50, 2000 ms */
  retryMs?: { first: number; max: number };
}

interface OpenAttempt {
  key: string;
  buildId: string;
  node: string;
  number: number;
  header: Buffer;
  /** The attempt row is not in the database yet: the next batch writes it. */
  rowPending: boolean;
  /** Agent bytes committed. */
  durable: number;
  /** Agent bytes taken: committed, or in a batch waiting to be. */
  accepted: number;
  tail: LiveTail;
}

interface PendingChunk {
  entry: OpenAttempt;
  /** Agent offset of the first byte. */
  offset: number;
  data: Buffer;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const keyOf = (buildId: string, node: string, number: number): string => `${buildId}\0${node}\0${number}`;

function isTransient(err: unknown): boolean {
  return err instanceof KilnError && err.code === 'E_UNAVAILABLE';
}

/** Contiguous chunks of one attempt merged into rows of at most MAX_CHUNK_ROW_BYTES. */
function mergeChunks(chunks: PendingChunk[]): PendingChunk[] {
  const out: PendingChunk[] = [];
  const last = new Map<OpenAttempt, PendingChunk>();
  for (const c of chunks) {
    const prev = last.get(c.entry);
    if (prev && prev.offset + prev.data.length === c.offset && prev.data.length + c.data.length <= MAX_CHUNK_ROW_BYTES) {
      prev.data = Buffer.concat([prev.data, c.data]);
      continue;
    }
    const row = { entry: c.entry, offset: c.offset, data: c.data };
    out.push(row);
    last.set(c.entry, row);
  }
  return out;
}

export class PgLogStore extends TypedEmitter<LogEvents> implements LogStorage {
  private readonly open = new Map<string, OpenAttempt>();
  private readonly opening = new Map<string, Promise<OpenAttempt>>();
  /** Per attempt, the last call still waiting for the attempt to open: calls take their bytes in call order. */
  private readonly gates = new Map<string, Promise<void>>();
  private readonly sizes = new Map<string, number>();
  private readonly headers = new Map<string, Buffer>();
  /** Bumped at every open: a size read before it may be stale and is not cached. */
  private opens = 0;
  private chunks: PendingChunk[] = [];
  private newRows: OpenAttempt[] = [];
  private waiting: Waiter[] = [];
  private writing = false;
  private failed: KilnError | null = null;
  private closed = false;
  private isHealthy = true;
  /** Batches committed (for tests and benchmarks). */
  batches = 0;

  constructor(private readonly opts: PgLogStoreOptions) {
    super();
  }

  get location(): string {
    return this.opts.pg.location;
  }

  /** false while the database cannot be reached (a batch is being retried). */
  get healthy(): boolean {
    return this.isHealthy;
  }

  private async openAttempt(ref: AttemptLogRef): Promise<OpenAttempt> {
    if (this.failed) throw this.failed;
    const key = keyOf(ref.buildId, ref.node, ref.number);
    const existing = this.open.get(key);
    if (existing) return existing;
    const pending = this.opening.get(key);
    if (pending) return pending;
    const p = (async () => {
      this.opens++;
      const rows = await this.retrying(() =>
        this.opts.pg.query<{ header: Buffer; agent_bytes: number | string | null }>(
          `SELECT a.header, (SELECT c.agent_offset + octet_length(c.data) FROM kiln_log_chunk c
             WHERE c.build_id = a.build_id AND c.node = a.node AND c.attempt = a.attempt ORDER BY c.agent_offset DESC LIMIT 1) AS agent_bytes
           FROM kiln_log_attempt a WHERE a.build_id = $1 AND a.node = $2 AND a.attempt = $3`,
          [ref.buildId, ref.node, ref.number],
        ),
      );
      const row = rows?.[0];
      const header = row ? row.header : Buffer.from(ref.header);
      const durable = row ? Number(row.agent_bytes ?? 0) : 0;
      const entry: OpenAttempt = { key, buildId: ref.buildId, node: ref.node, number: ref.number, header, rowPending: !row, durable, accepted: durable, tail: new LiveTail(TAIL_BYTES) };
      if (!row) this.newRows.push(entry);
      this.open.set(key, entry);
      this.headers.set(key, header);
      this.sizes.set(key, header.length + durable);
      return entry;
    })();
    this.opening.set(key, p);
    try {
      return await p;
    } finally {
      this.opening.delete(key);
    }
  }

  /**
   * Runs `fn` on the attempt's open state, in call order per attempt (the frames an agent sent
   * one after the other are taken in that order, also while the attempt is being opened).
   */
  private withEntry<T>(ref: AttemptLogRef, fn: (entry: OpenAttempt) => T): Promise<T> {
    const key = keyOf(ref.buildId, ref.node, ref.number);
    const open = this.open.get(key);
    const gate = this.gates.get(key);
    if (open && !gate) {
      if (this.failed) return Promise.reject(this.failed);
      try {
        return Promise.resolve(fn(open));
      } catch (err) {
        return Promise.reject(coerceError(err));
      }
    }
    const run = (gate ?? Promise.resolve()).then(() => this.openAttempt(ref)).then(fn);
    const settled = run.then(
      () => {},
      () => {},
    );
    this.gates.set(key, settled);
    void settled.then(() => {
      if (this.gates.get(key) === settled) this.gates.delete(key);
    });
    return run;
  }

  /** Takes `data` at the attempt's end (split into rows of at most MAX_CHUNK_ROW_BYTES). */
  private take(entry: OpenAttempt, data: Uint8Array): void {
    for (let at = 0; at < data.length; at += MAX_CHUNK_ROW_BYTES) {
      const part = Buffer.from(data.subarray(at, Math.min(data.length, at + MAX_CHUNK_ROW_BYTES))); // a copy, see LiveTail
      this.chunks.push({ entry, offset: entry.accepted, data: part });
      entry.accepted += part.length;
    }
  }

  async append(ref: AttemptLogRef, offset: number, data: Uint8Array): Promise<number> {
    traceLog('coord-recv', data);
    const taken = await this.withEntry(ref, (entry) => {
      // A gap (refused: the agent resends from the answer) or a duplicate: nothing taken.
      if (offset > entry.accepted || offset + data.length <= entry.accepted) return { entry, end: null };
      this.take(entry, data.subarray(entry.accepted - offset));
      return { entry, end: entry.accepted };
    });
    const { entry, end } = taken;
    if (end !== null) {
      await this.committed();
      return end;
    }
    // Answer what is stored, once what was taken before is.
    if (entry.accepted > entry.durable || entry.rowPending) await this.committed();
    return entry.durable;
  }

  async appendNote(ref: AttemptLogRef, text: string): Promise<void> {
    const data = Buffer.from(text);
    await this.withEntry(ref, (entry) => {
      if (data.length > 0) this.take(entry, data);
    });
    await this.committed();
  }

  async ensure(ref: AttemptLogRef): Promise<void> {
    const entry = await this.withEntry(ref, (e) => e);
    if (entry.rowPending) await this.committed();
    this.emit('append', ref.buildId, ref.node);
  }

  async agentBytes(ref: AttemptLogRef): Promise<number> {
    const entry = await this.withEntry(ref, (e) => e);
    if (entry.rowPending || entry.accepted > entry.durable) await this.committed();
    return entry.durable;
  }

  async close(ref: AttemptKey): Promise<void> {
    const key = keyOf(ref.buildId, ref.node, ref.number);
    await this.opening.get(key)?.catch(() => {});
    const entry = this.open.get(key);
    if (!entry) return;
    try {
      if (entry.rowPending || entry.accepted > entry.durable) await this.committed();
    } finally {
      this.open.delete(key);
    }
  }

  /**
   * Writes what was taken and forgets the open attempts. A batch waiting for the database is
   * tried once more, not retried until it answers (the coordinator is stopping): if it does
   * not land, its appends fail unacked and the agents resend them to the next leader.
   */
  async closeAll(): Promise<void> {
    this.closed = true;
    if (this.chunks.length > 0 || this.newRows.length > 0 || this.writing) await this.committed().catch(() => {});
    this.open.clear();
  }

  /** Resolves once everything taken so far is committed (joining the next batch). */
  private committed(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.writing) {
        this.writing = true;
        // Appends handled in this turn (the frames an agent sent together) share the batch.
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    try {
      while (this.waiting.length > 0 && !this.failed) {
        const waiters = this.waiting;
        const chunks = this.chunks;
        const rows = this.newRows;
        this.waiting = [];
        this.chunks = [];
        this.newRows = [];
        try {
          if (chunks.length > 0 || rows.length > 0) await this.write(rows, mergeChunks(chunks));
          for (const r of rows) r.rowPending = false;
          const touched = new Set<OpenAttempt>();
          for (const c of chunks) {
            const e = c.entry;
            e.tail.add(e.header.length + c.offset, c.data);
            traceLog('coord-disk', c.data);
            e.durable = c.offset + c.data.length;
            this.sizes.set(e.key, e.header.length + e.durable);
            touched.add(e);
          }
          for (const e of touched) this.emit('append', e.buildId, e.node);
          for (const w of waiters) w.resolve();
        } catch (err) {
          this.fail(err, waiters);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  private token(): FenceToken {
    const t = this.opts.fence();
    if (!t) throw new KilnError('E_NOT_LEADER', 'this coordinator does not hold the leader lease: it writes no log');
    return t;
  }

  /** One batch in one fenced transaction, retried while the database is away. */
  private async write(rows: OpenAttempt[], chunks: PendingChunk[]): Promise<void> {
    await this.retrying(
      async () => {
        const { epoch, holder } = this.token();
        await this.opts.pg.tx(async (q) => {
          await q.query('SELECT kiln_fence($1, $2)', [epoch, holder]);
          if (rows.length > 0) {
            await q.query(
              `INSERT INTO kiln_log_attempt (build_id, node, attempt, header)
               SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bytea[]) ON CONFLICT DO NOTHING`,
              [rows.map((r) => r.buildId), rows.map((r) => r.node), rows.map((r) => r.number), rows.map((r) => r.header)],
            );
          }
          for (let i = 0; i < chunks.length; i += ROWS_PER_INSERT) await insertChunks(q, epoch, chunks.slice(i, i + ROWS_PER_INSERT));
        });
        this.batches++;
      },
      // A try whose answer was lost may have committed: then its first chunk's row is there (and a retry fails on it).
      chunks.length > 0 ? () => this.landed(chunks[0]!) : null,
    );
  }

  private async landed(c: PendingChunk): Promise<boolean> {
    const rows = await this.opts.pg.query<{ n: number }>('SELECT octet_length(data) AS n FROM kiln_log_chunk WHERE build_id = $1 AND node = $2 AND attempt = $3 AND agent_offset = $4', [
      c.entry.buildId,
      c.entry.node,
      c.entry.number,
      c.offset,
    ]);
    return rows[0]?.n === c.data.length;
  }

  /** Runs `fn` until it succeeds; retries (with backoff) only while the database is away. */
  private async retrying<T>(fn: () => Promise<T>, landed: (() => Promise<boolean>) | null = null): Promise<T | undefined> {
    const retry = this.opts.retryMs ?? { first: 50, max: 2_000 };
    let delay = retry.first;
    for (;;) {
      try {
        const out = await fn();
        this.health(true);
        return out;
      } catch (err) {
        if (landed && (await landed().catch(() => false))) {
          this.health(true);
          return undefined;
        }
        if (!isTransient(err) || this.closed) throw err;
        this.health(false, coerceError(err));
        await sleep(delay);
        delay = Math.min(retry.max, delay * 2);
      }
    }
  }

  private health(healthy: boolean, err?: Error): void {
    if (healthy === this.isHealthy) return;
    this.isHealthy = healthy;
    this.opts.onHealth?.(healthy, err);
  }

  /** Fails `waiters`, every waiting append and every later one: nothing more is written. */
  private fail(err: unknown, waiters: Waiter[]): void {
    const e = coerceError(err);
    this.failed ??= e instanceof KilnError ? e : new KilnError('E_STATE', `writing logs in ${this.location} failed: ${e.message}`, { cause: err });
    for (const w of waiters) w.reject(this.failed);
    for (const w of this.waiting.splice(0)) w.reject(this.failed);
  }

  async nodeSizes(buildId: string, node: string, attempts: number): Promise<number[]> {
    const out: number[] = [];
    const missing: number[] = [];
    for (let n = 1; n <= attempts; n++) {
      const cached = this.sizes.get(keyOf(buildId, node, n));
      out.push(cached ?? 0);
      if (cached === undefined) missing.push(n);
    }
    if (missing.length === 0) return out;
    const opens = this.opens;
    const rows = await this.opts.pg.query<{ attempt: number; header_bytes: number; agent_bytes: number | string }>(
      `SELECT a.attempt, octet_length(a.header) AS header_bytes,
         coalesce((SELECT c.agent_offset + octet_length(c.data) FROM kiln_log_chunk c
           WHERE c.build_id = a.build_id AND c.node = a.node AND c.attempt = a.attempt ORDER BY c.agent_offset DESC LIMIT 1), 0) AS agent_bytes
       FROM kiln_log_attempt a WHERE a.build_id = $1 AND a.node = $2 AND a.attempt = ANY($3::int[])`,
      [buildId, node, missing],
    );
    for (const r of rows) {
      const key = keyOf(buildId, node, r.attempt);
      // An attempt opened meanwhile has its size from the open (this one may be older).
      const size = this.sizes.get(key) ?? r.header_bytes + Number(r.agent_bytes);
      if (this.opens === opens) this.sizes.set(key, size);
      out[r.attempt - 1] = size;
    }
    return out;
  }

  async isCharBoundary(buildId: string, node: string, sizes: number[], offset: number): Promise<boolean> {
    return isCharBoundaryIn((from, to) => this.read(buildId, node, sizes, from, to), offset);
  }

  async read(buildId: string, node: string, sizes: number[], start: number, end: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let base = 0;
    for (let i = 0; i < sizes.length && base < end; i++) {
      const size = sizes[i]!;
      const from = Math.max(start, base);
      const to = Math.min(end, base + size);
      if (to > from) parts.push(await this.readAttempt(buildId, node, i + 1, from - base, to - base));
      base += size;
    }
    return Buffer.concat(parts);
  }

  /** Attempt-log bytes [from, to) (header included), from the live tail when it has them. */
  private async readAttempt(buildId: string, node: string, number: number, from: number, to: number): Promise<Buffer> {
    const key = keyOf(buildId, node, number);
    const live = this.open.get(key);
    if (live?.tail.covers(from, to)) return live.tail.read(from, to);
    const header = await this.headerOf(buildId, node, number);
    const parts: Buffer[] = [];
    if (from < header.length) parts.push(header.subarray(from, Math.min(to, header.length)));
    const aFrom = Math.max(0, from - header.length);
    const aTo = to - header.length;
    if (aTo > aFrom) {
      const rows = await this.opts.pg.query<{ agent_offset: number; data: Buffer }>(
        `SELECT agent_offset, data FROM kiln_log_chunk WHERE build_id = $1 AND node = $2 AND attempt = $3
           AND agent_offset > $4 AND agent_offset < $5 ORDER BY agent_offset`,
        [buildId, node, number, aFrom - MAX_CHUNK_ROW_BYTES, aTo],
      );
      for (const r of rows) {
        const at = Number(r.agent_offset);
        const s = Math.max(aFrom, at) - at;
        const e = Math.min(aTo, at + r.data.length) - at;
        if (e > s) parts.push(r.data.subarray(s, e));
      }
    }
    return Buffer.concat(parts);
  }

  private async headerOf(buildId: string, node: string, number: number): Promise<Buffer> {
    const key = keyOf(buildId, node, number);
    const known = this.headers.get(key);
    if (known) return known;
    const rows = await this.opts.pg.query<{ header: Buffer }>('SELECT header FROM kiln_log_attempt WHERE build_id = $1 AND node = $2 AND attempt = $3', [buildId, node, number]);
    const header = rows[0]?.header;
    if (!header) return Buffer.alloc(0);
    this.headers.set(key, header);
    return header;
  }

  async tail(ref: AttemptKey, maxBytes: number): Promise<{ start: number; bytes: Buffer }> {
    const sizes = await this.nodeSizes(ref.buildId, ref.node, ref.number);
    const size = sizes[ref.number - 1] ?? 0;
    const start = Math.max(0, size - maxBytes);
    return { start, bytes: size > start ? await this.readAttempt(ref.buildId, ref.node, ref.number, start, size) : Buffer.alloc(0) };
  }
}

/** One multi-row INSERT of chunk rows (bytea parameters go as binary). */
async function insertChunks(q: PgQueryable, epoch: number, rows: PendingChunk[]): Promise<void> {
  const values: string[] = [];
  const params: unknown[] = [epoch];
  for (const c of rows) {
    const n = params.length;
    values.push(`($${n + 1}, $${n + 2}, $${n + 3}, $${n + 4}, $1, $${n + 5})`);
    params.push(c.entry.buildId, c.entry.node, c.entry.number, c.offset, c.data);
  }
  await q.query(`INSERT INTO kiln_log_chunk (build_id, node, attempt, agent_offset, epoch, data) VALUES ${values.join(', ')}`, params);
}
