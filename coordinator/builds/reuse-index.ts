/**
 * The reuse index: idempotency key -> the successful attempt that produced it, so a later
 * node with the same key reuses its image and outputs instead of building.
 *
 * One small JSON file per key under `<data-dir>/reuse/<hex>.json`, written durably (temp,
 * fsync, rename, fsync dir) before the result that created it is acknowledged. It lives
 * outside state.json because it grows with history, not with the work in flight; lookups
 * read the file once and keep it in a bounded in-memory cache. A record whose outputs are
 * no longer in the CAS (retention removed them) is not used.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { coerceError, KilnError, digestHex, errnoCode, type Digest, type OutputArtifactPayload } from '../../shared/index.js';
import { writeFileDurable } from '../../shared/index.js';

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

  constructor(
    dataDir: string,
    private readonly persist: boolean,
  ) {
    this.dir = join(dataDir, 'reuse');
  }

  async init(): Promise<void> {
    if (this.persist) await mkdir(this.dir, { recursive: true });
  }

  private path(key: string): string {
    return join(this.dir, `${digestHex(key as Digest)}.json`);
  }

  async get(key: string): Promise<ReuseRecord | null> {
    if (this.cache.has(key)) return this.cache.get(key) ?? null;
    if (!this.persist) return null;
    let rec: ReuseRecord | null = null;
    try {
      rec = JSON.parse(await readFile(this.path(key), 'utf8')) as ReuseRecord;
      if (rec.key !== key) throw new Error(`it holds key ${String(rec.key)}`);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new KilnError('E_STATE', `reuse record ${this.path(key)} is unreadable (${coerceError(err).message})`, { cause: err });
      rec = null;
    }
    this.remember(key, rec);
    return rec;
  }

  async put(rec: ReuseRecord): Promise<void> {
    if (this.persist) await writeFileDurable(this.path(rec.key), JSON.stringify(rec));
    this.remember(rec.key, rec);
  }

  private remember(key: string, rec: ReuseRecord | null): void {
    this.cache.delete(key);
    this.cache.set(key, rec);
    if (this.cache.size > CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
  }
}
