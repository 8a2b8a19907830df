/**
 * The PostgreSQL state backend (issue 14): the embedded backend's snapshot, journal and
 * archived builds as rows (`migrations/m002-state.ts`), written only by the coordinator
 * that holds the leader lease.
 *
 * - Group commit as the embedded journal: one batch in flight; commits that arrive
 *   meanwhile share the next. A batch is one row of `kiln_state_journal` (the same JSON
 *   lines as `journal.jsonl`) with the next seq (seqs have no gaps), written in a
 *   transaction that first calls `kiln_fence(epoch, holder)`: a coordinator that lost its
 *   lease cannot land a write (E_NOT_LEADER), and it stops acknowledging for good.
 * - A batch is acknowledged once its transaction committed. When the database cannot be
 *   reached, the batch is retried with backoff (commits wait; `healthy` is false, which
 *   `/readyz` reports); a commit whose answer was lost is told apart from one that never
 *   landed by its seq (a row already holding this batch's seq and text landed).
 * - Compaction: past `minCompactBytes` of journal since the last snapshot (and at least the
 *   snapshot's size), the next batch carries the state serialised as of it: its row, the
 *   snapshot of its seq and the removal of the rows and snapshot it covers are one
 *   transaction, so a snapshot never holds a change that was not journaled (and reported
 *   failed). Batches wait while it is written.
 * - Reading: the newest snapshot, then every journal row after it, in seq order; a missing
 *   snapshot, a gap in the seqs or a row that does not replay is E_STATE naming it, never an
 *   empty state. `catchUp()` applies rows written since (a standby following the leader).
 */
import { KilnError, coerceError } from '../../../shared/index.js';
import { applyJournalLines } from '../journal-replay.js';
import { stateFromFile, stateToFile, type StateData } from '../records.js';
import type { StateBackend, StateBackendContext } from '../state-backend.js';
import type { PgClient } from './pg-client.js';

/** The fencing token of the lease this coordinator holds (null: it is not the leader). */
export interface FenceToken {
  epoch: number;
  holder: string;
}

export interface PgStateBackendOptions {
  pg: PgClient;
  /** The lease's current token, read at each write. */
  fence: () => FenceToken | null;
  /** Journal bytes since the last snapshot that trigger a new one, at least. @default 32 MiB */
  minCompactBytes?: number;
  /** Journal rows read per query when catching up. @default 500 */
  pageRows?: number;
  /** Called when the database goes away or comes back (for /readyz and logs). */
  onHealth?: (healthy: boolean, err?: Error) => void;
  /** Backoff between retries of a batch the database did not take: first and most. @default 50, 2000 ms */
  retryMs?: { first: number; max: number };
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Errors worth retrying: the database is away (anything else is final). */
function isTransient(err: unknown): boolean {
  return err instanceof KilnError && err.code === 'E_UNAVAILABLE';
}

export class PgStateBackend implements StateBackend {
  readonly kind = 'postgres';
  private ctx: StateBackendContext | null = null;
  /** The last journal seq applied to (or written from) the state in memory. */
  private seq = 0;
  private snapshotSeq = 0;
  private snapshotBytes = 0;
  private journalBytes = 0;
  private waiting: Waiter[] = [];
  private writing = false;
  private scheduled = false;
  private failed: Error | null = null;
  private isHealthy = true;
  writes = 0;
  snapshots = 0;
  readonly preallocations = 0;

  constructor(private readonly opts: PgStateBackendOptions) {}

  get location(): string {
    return this.opts.pg.location;
  }

  /** false while the database cannot be reached (a batch is being retried). */
  get healthy(): boolean {
    return this.isHealthy;
  }

  /** The last journal seq in the state in memory. */
  get lastSeq(): number {
    return this.seq;
  }

  async open(ctx: StateBackendContext, _init: boolean): Promise<{ data: StateData; created: boolean }> {
    this.ctx = ctx;
    const data = await this.readSnapshot();
    await this.applyRowsAfter(data, this.seq);
    const created = this.seq === 0 && this.snapshotSeq === 0 && data.builds.size === 0 && data.archived.size === 0;
    return { data, created };
  }

  /**
   * Applies the journal rows written since the state was read (a standby following the
   * leader, or a standby about to lead). Returns how many rows it applied. A gap (rows a
   * compaction folded into a newer snapshot) is E_STATE: the caller reopens the state.
   */
  async catchUp(data: StateData): Promise<number> {
    return this.applyRowsAfter(data, this.seq);
  }

  private async readSnapshot(): Promise<StateData> {
    const rows = await this.opts.pg.query<{ seq: string | number; body: string }>('SELECT seq, body FROM kiln_state_snapshot ORDER BY seq DESC LIMIT 1');
    const row = rows[0];
    if (!row) throw new KilnError('E_STATE', `the state in ${this.location} has no snapshot (table kiln_state_snapshot is empty): it is damaged; restore the database from a backup`);
    const seq = Number(row.seq);
    let value: unknown;
    try {
      value = JSON.parse(row.body);
    } catch (err) {
      throw new KilnError('E_STATE', `the state snapshot at seq ${seq} in ${this.location} is corrupt (${coerceError(err).message}); it was left as it is`);
    }
    const data = stateFromFile(value);
    if (typeof data === 'string') throw new KilnError('E_STATE', `the state snapshot at seq ${seq} in ${this.location} is not a kiln state (${data}); it was left as it is`);
    this.seq = seq;
    this.snapshotSeq = seq;
    this.snapshotBytes = Buffer.byteLength(row.body);
    this.journalBytes = 0;
    return data;
  }

  private async applyRowsAfter(data: StateData, after: number): Promise<number> {
    const ctx = this.ctx;
    if (!ctx) throw new KilnError('E_INTERNAL', 'state: catch-up before the state was opened');
    const page = this.opts.pageRows ?? 500;
    let applied = 0;
    for (;;) {
      const rows = await this.opts.pg.query<{ seq: string | number; body: string }>('SELECT seq, body FROM kiln_state_journal WHERE seq > $1 ORDER BY seq LIMIT $2', [this.seq, page]);
      for (const row of rows) {
        const seq = Number(row.seq);
        if (seq !== this.seq + 1) {
          throw new KilnError('E_STATE', `the state journal in ${this.location} goes from seq ${this.seq} to ${seq}${this.seq === after ? ' (rows folded into a newer snapshot: read the state again)' : ''}`);
        }
        const lines = row.body.split('\n');
        if (lines.pop() !== '') throw new KilnError('E_STATE', `state journal row ${seq} in ${this.location} does not end in a newline; it was left as it is`);
        applyJournalLines(lines, `state journal row ${seq} in ${this.location}`, data, ctx.nodesByName);
        this.seq = seq;
        this.journalBytes += Buffer.byteLength(row.body);
        applied++;
      }
      if (rows.length < page) return applied;
    }
  }

  commit(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.writing && !this.scheduled) {
        this.scheduled = true;
        // As the embedded journal: changes made in this turn and in the setImmediate callbacks
        // already queued (the placement pass) share one write.
        setImmediate(() => setImmediate(() => void this.flush()));
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    if (this.writing) return;
    this.writing = true;
    try {
      while (this.waiting.length > 0 && !this.failed) {
        const batch = this.waiting;
        this.waiting = [];
        try {
          const text = this.ctx?.takeText() ?? '';
          // A snapshot is taken with a batch, in its transaction: the state in memory is then
          // exactly what the journal holds up to this batch (nothing marked and unwritten in it).
          const snapshot = this.journalBytes > Math.max(this.opts.minCompactBytes ?? 32 * 1024 * 1024, this.snapshotBytes) && this.ctx ? this.serialize(this.ctx) : null;
          if (text || snapshot !== null) await this.write(text, snapshot);
          for (const w of batch) w.resolve();
        } catch (err) {
          this.fail(err, batch);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /** The state as a snapshot's body; the journal's next line of each attempt is whole again (StateBackendContext.snapshotTaken). */
  private serialize(ctx: StateBackendContext): string {
    ctx.snapshotTaken();
    return JSON.stringify(stateToFile(ctx.data()));
  }

  /**
   * Writes one batch as the next journal row (and, with `snapshot`, the state as of it, folding
   * the journal), retrying while the database is away. A try whose answer was lost may have
   * committed: it is looked for before the next try, and once a try's outcome is unknown, a
   * final failure (the lease lost meanwhile, say) is E_UNAVAILABLE, never E_NOT_LEADER, which
   * would tell a client that nothing was done.
   */
  private async write(text: string, snapshot: string | null): Promise<void> {
    const seq = text ? this.seq + 1 : this.seq;
    const retry = this.opts.retryMs ?? { first: 50, max: 2_000 };
    let delay = retry.first;
    let unknown: Error | null = null;
    const outcomeUnknown = (why: string) =>
      new KilnError('E_UNAVAILABLE', `the state write of seq ${seq} may or may not have landed (${why}; the database did not answer earlier): not acknowledged`, { cause: unknown });
    for (;;) {
      const token = this.opts.fence();
      if (!token) {
        if (unknown) throw outcomeUnknown('this coordinator lost the lease meanwhile');
        throw new KilnError('E_NOT_LEADER', 'this coordinator does not hold the leader lease: it writes nothing');
      }
      try {
        if (snapshot === null) {
          // One statement (autocommit): the fencing check and the row, one round trip.
          await this.opts.pg.query('SELECT kiln_state_append($1, $2, $3, $4)', [token.epoch, token.holder, seq, text]);
        } else {
          await this.opts.pg.tx(async (q) => {
            if (text) await q.query('SELECT kiln_state_append($1, $2, $3, $4)', [token.epoch, token.holder, seq, text]);
            else await q.query('SELECT kiln_fence($1, $2)', [token.epoch, token.holder]);
            await q.query('INSERT INTO kiln_state_snapshot (seq, epoch, body) VALUES ($1, $2, $3) ON CONFLICT (seq) DO UPDATE SET epoch = EXCLUDED.epoch, body = EXCLUDED.body, written_at = now()', [seq, token.epoch, snapshot]);
            await q.query('DELETE FROM kiln_state_snapshot WHERE seq < $1', [seq]);
            await q.query('DELETE FROM kiln_state_journal WHERE seq <= $1', [seq]);
          });
        }
        break;
      } catch (err) {
        // The answer to this try (or an earlier one) may have been lost after it committed.
        const landed = await this.landed(seq, text, snapshot).catch(() => null);
        if (landed === true) break;
        if (!isTransient(err)) {
          if (unknown && landed === null) throw outcomeUnknown(coerceError(err).message);
          throw err;
        }
        unknown = coerceError(err);
        this.health(false, unknown);
        await sleep(delay);
        delay = Math.min(retry.max, delay * 2);
      }
    }
    this.health(true);
    this.seq = seq;
    if (text) this.writes++;
    if (snapshot !== null) {
      this.snapshotSeq = seq;
      this.snapshotBytes = Buffer.byteLength(snapshot);
      this.journalBytes = 0;
      this.writes++;
      this.snapshots++;
    } else this.journalBytes += Buffer.byteLength(text);
  }

  /** Whether a write landed: journal row `seq` holds `text`, or (with a snapshot) the snapshot of `seq` is this one. */
  private async landed(seq: number, text: string, snapshot: string | null): Promise<boolean> {
    if (snapshot !== null) {
      const rows = await this.opts.pg.query<{ same: boolean }>('SELECT md5(body) = md5($2) AS same FROM kiln_state_snapshot WHERE seq = $1', [seq, snapshot]);
      return rows[0]?.same === true;
    }
    const rows = await this.opts.pg.query<{ body: string }>('SELECT body FROM kiln_state_journal WHERE seq = $1', [seq]);
    return rows[0]?.body === text;
  }

  private health(healthy: boolean, err?: Error): void {
    if (healthy === this.isHealthy) return;
    this.isHealthy = healthy;
    this.opts.onHealth?.(healthy, err);
  }

  /** Fails `batch`, every waiting commit and every later one. */
  private fail(err: unknown, batch: Waiter[] = []): void {
    const e = coerceError(err);
    this.failed ??= e instanceof KilnError ? e : new KilnError('E_STATE', `writing the state in ${this.location} failed: ${e.message}`, { cause: err });
    for (const w of batch) w.reject(this.failed);
    for (const w of this.waiting.splice(0)) w.reject(this.failed);
  }

  async writeArchive(id: string, json: string): Promise<void> {
    // An upsert by id: a try whose answer was lost is harmless to repeat (the archive is written again later).
    const token = this.opts.fence();
    if (!token) throw new KilnError('E_NOT_LEADER', `this coordinator does not hold the leader lease: archived build ${id} was not written`);
    const { epoch, holder } = token;
    await this.opts.pg.tx(async (q) => {
      await q.query('SELECT kiln_fence($1, $2)', [epoch, holder]);
      await q.query('INSERT INTO kiln_archived_build (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, written_at = now()', [id, json]);
    });
  }

  async readArchive(id: string): Promise<string> {
    const rows = await this.opts.pg.query<{ body: string }>('SELECT body FROM kiln_archived_build WHERE id = $1', [id]);
    const row = rows[0];
    if (!row) throw new KilnError('E_STATE', `archived build ${id} is missing from ${this.location} (its summary is in the state)`);
    return row.body;
  }

  async drain(): Promise<void> {
    while (this.writing || this.scheduled || this.waiting.length > 0) {
      await this.commit().catch(() => {});
      await new Promise((r) => setImmediate(r));
    }
  }
}
