/**
 * The local-disk blob store (the default backend): `cas/sha256/<first 2 hex>/<hex>`.
 *
 * `put` streams the body into a temp file in `cas/tmp`, hashing as it writes, and keeps
 * it only if the bytes hash to the expected digest (and the size matches when given):
 * fsync, rename into place, fsync the directory. Storing a digest that is already
 * present is not an error. Two concurrent uploads of one digest each write their own
 * temp file; both renames put identical bytes in place, so one correct blob remains.
 * Temp files left by a crash are removed at start.
 */
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { HEX_RE, KilnError, digestHex, errnoCode, writeVerifiedFile, type Digest } from '../../shared/index.js';
import { fsyncDir } from '../../shared/index.js';
import type { BlobStore, PutResult, StoredBlob } from './blob-store.js';

export class LocalBlobStore implements BlobStore {
  readonly kind = 'local' as const;
  readonly root: string;
  private readonly tmpDir: string;

  constructor(
    dataDir: string,
    private readonly maxBlobBytes: number,
  ) {
    this.root = join(dataDir, 'cas');
    this.tmpDir = join(this.root, 'tmp');
  }

  get location(): string {
    return this.root;
  }

  async init(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(join(this.root, 'sha256'), { recursive: true });
  }

  blobPath(digest: Digest): string {
    const hex = digestHex(digest);
    return join(this.root, 'sha256', hex.slice(0, 2), hex);
  }

  async size(digest: Digest): Promise<number | null> {
    try {
      return (await stat(this.blobPath(digest))).size;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      throw err;
    }
  }

  async read(digest: Digest): Promise<Readable> {
    const path = this.blobPath(digest);
    const fh = await open(path, 'r').catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') throw new KilnError('E_NOT_FOUND', `blob ${digest} not found`);
      throw err;
    });
    // The stream owns the FileHandle and closes it (a bare fd would be closed twice: by the
    // stream, then by the FileHandle's GC, which throws EBADF as an uncaught exception).
    return fh.createReadStream({ highWaterMark: 1024 * 1024 });
  }

  async put(digest: Digest, body: AsyncIterable<Uint8Array>, expectedSize?: number): Promise<PutResult> {
    if (expectedSize !== undefined && expectedSize > this.maxBlobBytes) {
      throw new KilnError('E_TOO_LARGE', `blob of ${expectedSize} bytes is larger than the limit of ${this.maxBlobBytes} bytes`);
    }
    const existing = await this.size(digest);
    if (existing !== null) {
      // Already stored: drain the body so the client sees a clean response.
      for await (const _ of body) void _;
      return { created: false, size: existing };
    }
    const tmp = join(this.tmpDir, `${digestHex(digest).slice(0, 16)}-${randomBytes(6).toString('hex')}`);
    const size = await writeVerifiedFile(tmp, body, {
      digest,
      ...(expectedSize !== undefined ? { size: expectedSize } : {}),
      maxBytes: this.maxBlobBytes,
      verb: 'uploaded',
      outcome: 'nothing was stored',
    });
    const final = this.blobPath(digest);
    const dir = join(this.root, 'sha256', digestHex(digest).slice(0, 2));
    await mkdir(dir, { recursive: true });
    await rename(tmp, final);
    await fsyncDir(dir);
    return { created: true, size };
  }

  async *list(): AsyncIterable<StoredBlob> {
    const top = join(this.root, 'sha256');
    for (const prefix of (await readdir(top)).sort()) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
      for (const hex of (await readdir(join(top, prefix))).sort()) {
        if (!HEX_RE.test(hex) || !hex.startsWith(prefix)) continue;
        const st = await stat(join(top, prefix, hex)).catch(() => null);
        if (st?.isFile()) yield { digest: `sha256:${hex}`, size: st.size, storedAt: st.mtimeMs };
      }
    }
  }

  async delete(digest: Digest): Promise<void> {
    await unlink(this.blobPath(digest)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }

  async downloadUrl(): Promise<string | null> {
    return null;
  }
}
