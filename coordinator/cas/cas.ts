/**
 * The coordinator's content-addressed store as the rest of the coordinator sees it: a
 * BlobStore backend (local disk or S3) plus an in-memory index of the digests it holds,
 * so `findMissing` answers from memory (the CLI and agents upload only what is missing)
 * and existence checks at submit time cost no I/O. The index is filled from the
 * backend's listing at start and kept current by every put and delete made through
 * here; a read that finds a blob gone (deleted behind kiln's back) drops it.
 *
 * `touch` records that a blob was just relied on (find-missing said it is present, a build
 * was submitted with it): retention does not delete a blob touched within its grace
 * period, so a client that skipped an upload because the blob existed is not let down.
 */
import type { Readable } from 'node:stream';
import { KilnError, digestHex, isKilnError, type Digest } from '../../shared/index.js';
import type { BlobStore, PutResult, StoredBlob } from './blob-store.js';

export class Cas {
  /** hex -> size in bytes */
  private readonly index = new Map<string, number>();
  /** hex -> when it was last relied on (ms) */
  private readonly touched = new Map<string, number>();

  constructor(
    readonly store: BlobStore,
    private readonly clock: () => number = Date.now,
  ) {}

  get kind(): BlobStore['kind'] {
    return this.store.kind;
  }

  get location(): string {
    return this.store.location;
  }

  async init(): Promise<void> {
    await this.store.init();
    for await (const b of this.store.list()) this.index.set(digestHex(b.digest), b.size);
  }

  /** Number of blobs and their total size. */
  stats(): { blobs: number; bytes: number } {
    let bytes = 0;
    for (const s of this.index.values()) bytes += s;
    return { blobs: this.index.size, bytes };
  }

  has(digest: Digest): boolean {
    return this.index.has(digestHex(digest));
  }

  /** Size from the index (null when absent). */
  size(digest: Digest): number | null {
    return this.index.get(digestHex(digest)) ?? null;
  }

  /** The digests of `digests` the store does not hold, in the order given, without duplicates. Present ones are touched. */
  findMissing(digests: readonly Digest[]): Digest[] {
    const out: Digest[] = [];
    const seen = new Set<string>();
    const now = this.clock();
    for (const d of digests) {
      const hex = digestHex(d);
      if (this.index.has(hex)) {
        this.touched.set(hex, now);
        continue;
      }
      if (seen.has(hex)) continue;
      seen.add(hex);
      out.push(d);
    }
    return out;
  }

  /** Marks blobs as just relied on (see the header). */
  touch(digests: Iterable<string>): void {
    const now = this.clock();
    for (const d of digests) this.touched.set(digestHex(d as Digest), now);
  }

  /** When the blob was last relied on, or null. */
  touchedAt(digest: Digest): number | null {
    return this.touched.get(digestHex(digest)) ?? null;
  }

  /** Forgets touches older than `before` (retention calls this after a sweep). */
  forgetTouchesBefore(before: number): void {
    for (const [hex, t] of this.touched) if (t < before) this.touched.delete(hex);
  }

  async read(digest: Digest): Promise<Readable> {
    try {
      return await this.store.read(digest);
    } catch (err) {
      if (isKilnError(err, 'E_NOT_FOUND')) this.index.delete(digestHex(digest));
      throw err;
    }
  }

  /** Reads a whole (small) blob into memory, refusing more than `limit` bytes. */
  async readBuffer(digest: Digest, limit = 16 * 1024 * 1024): Promise<Buffer> {
    const size = this.size(digest);
    if (size !== null && size > limit) throw new KilnError('E_TOO_LARGE', `blob ${digest} is ${size} bytes; at most ${limit} are read into memory`);
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of await this.read(digest)) {
      n += (c as Buffer).length;
      if (n > limit) throw new KilnError('E_TOO_LARGE', `blob ${digest} is larger than ${limit} bytes`);
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  }

  async put(digest: Digest, body: AsyncIterable<Uint8Array>, expectedSize?: number): Promise<PutResult> {
    const r = await this.store.put(digest, body, expectedSize);
    this.index.set(digestHex(digest), r.size);
    this.touched.set(digestHex(digest), this.clock());
    return r;
  }

  /** Stores bytes already in memory (provenance records, small metadata). */
  putBuffer(digest: Digest, data: Uint8Array): Promise<PutResult> {
    return this.put(digest, (async function* () { yield data; })(), data.length);
  }

  list(): AsyncIterable<StoredBlob> {
    return this.store.list();
  }

  async delete(digest: Digest): Promise<void> {
    await this.store.delete(digest);
    this.index.delete(digestHex(digest));
  }

  downloadUrl(digest: Digest, expiresSeconds: number): Promise<string | null> {
    return this.store.downloadUrl(digest, expiresSeconds);
  }
}
