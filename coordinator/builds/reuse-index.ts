/**
 * The reuse index: idempotency key -> the successful attempt that produced it, so a later
 * node with the same key reuses its image and outputs instead of building.
 *
 * One small JSON document per key, `reuse/<hex>.json` (state/documents.ts: the file
 * `<data-dir>/reuse/<hex>.json`, or a row in a PostgreSQL state), written durably (temp,
 * fsync, rename, fsync dir; or a fenced commit) before the result that created it is
 * acknowledged. It lives
 * outside state.json because it grows with history, not with the work in flight; lookups
 * read the file once and keep it in a bounded in-memory cache. A record whose outputs are
 * no longer in the CAS (retention removed them) is not used.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { coerceError, KilnError, digestHex, type Digest, type OutputArtifactPayload } from '../../shared/index.js';
import { DOCUMENTS, FileDocuments, type DocumentStore } from '../state/documents.js';

export interface ReuseRecord {
  key: string;
  build_id: string;
  node: string;
  attempt_id: string;
  attempt_number: number;
  platform: string;
  image_id: string | null;
  outputs: OutputArtifactPayload[];
  provenance: string | null;
  finished_at: number;
}

const CACHE_LIMIT = 10_000;

export class ReuseIndex {
  readonly dir: string;
  private readonly cache = new Map<string, ReuseRecord | null>();
  private readonly docs: DocumentStore;

  /** `docs`: where the records are kept (default: the files of `dataDir`). */
  constructor(
    dataDir: string,
    private readonly persist: boolean,
    docs?: DocumentStore,
  ) {
    this.dir = join(dataDir, DOCUMENTS.reuseFolder);
    this.docs = docs ?? new FileDocuments(dataDir);
  }

  async init(): Promise<void> {
    if (this.persist && this.docs.kind === 'files') await mkdir(this.dir, { recursive: true });
  }

  private name(key: string): string {
    return `${DOCUMENTS.reuseFolder}/${digestHex(key as Digest)}.json`;
  }

  async get(key: string): Promise<ReuseRecord | null> {
    if (this.cache.has(key)) return this.cache.get(key) ?? null;
    if (!this.persist) return null;
    const name = this.name(key);
    let rec: ReuseRecord | null = null;
    try {
      const text = await this.docs.read(name);
      if (text !== null) {
        rec = JSON.parse(text) as ReuseRecord;
        if (rec.key !== key) throw new Error(`it holds key ${String(rec.key)}`);
      }
    } catch (err) {
      throw new KilnError('E_STATE', `reuse record ${this.docs.where(name)} is unreadable (${coerceError(err).message})`, { cause: err });
    }
    this.remember(key, rec);
    return rec;
  }

  async put(rec: ReuseRecord): Promise<void> {
    if (this.persist) await this.docs.write(this.name(rec.key), JSON.stringify(rec));
    this.remember(rec.key, rec);
  }

  private remember(key: string, rec: ReuseRecord | null): void {
    this.cache.delete(key);
    this.cache.set(key, rec);
    if (this.cache.size > CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
  }
}
