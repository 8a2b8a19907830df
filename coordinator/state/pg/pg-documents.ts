/**
 * The document store (`../documents.ts`) on PostgreSQL: one row of `kiln_document` per
 * document (migration m004). A write is `kiln_document_put(epoch, holder, name, body)`: the
 * fencing check (`kiln_fence`) and the upsert in one statement, so a coordinator that does not
 * hold the lease lands nothing (E_NOT_LEADER; without a token it does not even ask). A write
 * whose answer was lost (the database went away) is told apart from one that never landed by
 * reading the row back; while the database is away a write is retried with backoff, for at
 * most `retryForMs`, then fails E_UNAVAILABLE (nothing acknowledged).
 *
 * `create` (insert unless present, never a replacement) is not fenced: the generated legacy
 * tokens are made by whichever coordinator starts first, standbys included, and every
 * coordinator then reads the same ones.
 */
import { KilnError, coerceError } from '../../../shared/index.js';
import { checkDocumentName, type DocumentStore } from '../documents.js';
import type { PgClient } from './pg-client.js';
import type { FenceToken } from './pg-state-backend.js';

export interface PgDocumentsOptions {
  pg: PgClient;
  /** The lease's current token, read at each write (null: not the leader, the write is refused). */
  fence: () => FenceToken | null;
  /** How long a write is retried while the database is away. @default 15 s */
  retryForMs?: number;
  /** Backoff between tries. @default 50, 1000 ms */
  retryMs?: { first: number; max: number };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class PgDocuments implements DocumentStore {
  readonly kind = 'postgres';

  constructor(private readonly opts: PgDocumentsOptions) {}

  get location(): string {
    return this.opts.pg.location;
  }

  where(name: string): string {
    return `document ${checkDocumentName(name)} (table kiln_document in ${this.location})`;
  }

  async read(name: string): Promise<string | null> {
    const rows = await this.opts.pg.query<{ body: string }>('SELECT body FROM kiln_document WHERE name = $1', [checkDocumentName(name)]);
    return rows[0]?.body ?? null;
  }

  async write(name: string, body: string): Promise<void> {
    checkDocumentName(name);
    const retry = this.opts.retryMs ?? { first: 50, max: 1_000 };
    const deadline = performance.now() + (this.opts.retryForMs ?? 15_000);
    let delay = retry.first;
    /** A try whose answer was lost: its outcome is unknown until the row is read back. */
    let unknown: Error | null = null;
    for (;;) {
      const t = this.opts.fence();
      if (!t) {
        // Never E_NOT_LEADER after a lost answer: that tells a client nothing was done, and it would send the change again.
        if (unknown) throw new KilnError('E_UNAVAILABLE', `${this.where(name)} may or may not have been written (the database did not answer, then the lease was lost): not acknowledged`, { cause: unknown });
        throw new KilnError('E_NOT_LEADER', `this coordinator does not hold the leader lease: ${this.where(name)} was not written`);
      }
      try {
        await this.opts.pg.query('SELECT kiln_document_put($1, $2, $3, $4)', [t.epoch, t.holder, name, body]);
        return;
      } catch (err) {
        // The answer may have been lost after the commit: then the row holds this body.
        const stored = await this.read(name).then(
          (b) => b,
          () => undefined,
        );
        if (stored === body) return;
        const transient = err instanceof KilnError && err.code === 'E_UNAVAILABLE';
        if (!transient) {
          if (unknown && stored === undefined) throw new KilnError('E_UNAVAILABLE', `${this.where(name)} may or may not have been written: not acknowledged`, { cause: err });
          throw err;
        }
        unknown = coerceError(err);
        if (performance.now() + delay > deadline) {
          throw new KilnError('E_UNAVAILABLE', `${this.where(name)} was not acknowledged (it may or may not have been written): ${coerceError(err).message}`, { cause: err });
        }
        await sleep(delay);
        delay = Math.min(retry.max, delay * 2);
      }
    }
  }

  async create(name: string, body: string): Promise<string> {
    checkDocumentName(name);
    await this.opts.pg.query('INSERT INTO kiln_document (name, body, version) VALUES ($1, $2, 1) ON CONFLICT (name) DO NOTHING', [name, body]);
    const stored = await this.read(name);
    if (stored === null) throw new KilnError('E_STATE', `${this.where(name)} vanished right after it was created`);
    return stored;
  }

  async versions(names: readonly string[]): Promise<Map<string, number>> {
    for (const n of names) checkDocumentName(n);
    const rows = await this.opts.pg.query<{ name: string; version: number }>('SELECT name, version FROM kiln_document WHERE name = ANY($1::text[])', [names]);
    return new Map(rows.map((r) => [r.name, Number(r.version)]));
  }

  async list(folder: string): Promise<string[]> {
    checkDocumentName(folder);
    const rows = await this.opts.pg.query<{ name: string }>("SELECT name FROM kiln_document WHERE starts_with(name, $1 || '/') ORDER BY name", [folder]);
    return rows.map((r) => r.name);
  }
}
