/**
 * The agent's local CAS cache: blobs (build contexts, input artifacts, its own outputs) by
 * digest, shared by every build on the host, kept across restarts, size-capped.
 *
 * - Verified: a download goes to a temp file in the cache's own directory and is renamed
 *   into place only when its bytes hash to the digest (and their count matches what the
 *   coordinator announced), so a partial or corrupt download never looks like a cached
 *   blob. A blob found on disk from an earlier run is hashed again the first time this
 *   process uses it; a blob that no longer matches is deleted and fetched again.
 * - One download per digest: concurrent `acquire`s of a digest share it.
 * - Size-capped with LRU eviction (`maxBytes`): blobs in use (acquired, not released) are
 *   never evicted; use order is kept in memory and, across restarts, in the files' mtimes.
 * - `upload` sends a local file to the coordinator's CAS unless the coordinator already
 *   has that digest (find-missing first), and keeps it in the cache.
 * - A full disk (ENOSPC) fails the call with a DiskFullError (failure-kinds.ts) saying how
 *   many bytes were wanted, and leaves no temp file behind.
 */
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, rename, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { coerceError, HEX_RE, KilnError, apiPath, digestHex, errnoCode, hasherDigest, newHasher, writeVerifiedFile, type Digest } from '../shared/core.js';
import { DiskFullError, isDiskFull } from './failure-kinds.js';
import { honouring429 } from './retry-after.js';

export interface CasCacheOptions {
  dir: string;
  /** Base URL of the coordinator's HTTP API (http://host:port). */
  coordinatorUrl: string;
  token: string;
  /** Cache size limit in bytes; blobs in use may exceed it. @default 20 GiB */
  maxBytes?: number;
  fetch?: typeof fetch;
}

interface Entry {
  size: number;
  lastUsed: number;
  pins: number;
  /** Hashed and matched during this process's lifetime. */
  verified: boolean;
}

export interface CasLease {
  path: string;
  size: number;
  release(): void;
}

export interface CasCacheStats {
  /** Blobs downloaded from the coordinator by this process. */
  downloads: number;
  /** Bytes downloaded from the coordinator by this process. */
  downloadedBytes: number;
  /** Blobs uploaded (the coordinator did not have them) and bytes sent. */
  uploads: number;
  uploadedBytes: number;
  /** Acquires served from disk without a download. */
  hits: number;
  evictions: number;
  /** Downloads or cached blobs that failed verification. */
  corrupt: number;
}

export class CasCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly fetchFn: typeof fetch;
  private readonly maxBytes: number;
  private readonly blobDir: string;
  private totalBytes = 0;
  private loaded: Promise<void> | null = null;
  readonly stats: CasCacheStats = { downloads: 0, downloadedBytes: 0, uploads: 0, uploadedBytes: 0, hits: 0, evictions: 0, corrupt: 0 };

  constructor(private readonly opts: CasCacheOptions) {
    this.fetchFn = honouring429(opts.fetch ?? fetch);
    this.maxBytes = opts.maxBytes ?? 20 * 1024 ** 3;
    this.blobDir = join(opts.dir, 'sha256');
  }

  pathOf(digest: Digest): string {
    return join(this.blobDir, digestHex(digest));
  }

  /** Bytes held in the cache now. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** Reads what an earlier run left on disk (once); removes stale temp files. */
  private load(): Promise<void> {
    this.loaded ??= (async () => {
      try {
        await mkdir(this.blobDir, { recursive: true });
      } catch (err) {
        this.loaded = null; // try again next time (the disk may have space by then)
        if (isDiskFull(err)) throw this.diskFull(`creating ${this.blobDir}`, null, err);
        throw err;
      }
      for (const name of await readdir(this.blobDir)) {
        const p = join(this.blobDir, name);
        if (name.startsWith('.tmp-')) {
          await unlink(p).catch(() => {});
          continue;
        }
        if (!HEX_RE.test(name)) continue;
        const st = await stat(p).catch(() => null);
        if (!st?.isFile()) continue;
        this.entries.set(name, { size: st.size, lastUsed: st.mtimeMs, pins: 0, verified: false });
        this.totalBytes += st.size;
      }
    })();
    return this.loaded;
  }

  /**
   * The verified local copy of a blob, downloading it first if needed. The blob stays in
   * the cache (is not evicted) until `release()`.
   */
  async acquire(digest: Digest, signal?: AbortSignal): Promise<CasLease> {
    await this.load();
    const hex = digestHex(digest);
    for (let round = 0; ; round++) {
      let e = this.entries.get(hex);
      if (e && !e.verified) {
        e.pins++;
        let ok = false;
        try {
          ok = (await hashFile(this.pathOf(digest))) === digest;
        } finally {
          e.pins--;
        }
        if (!ok) {
          this.stats.corrupt++;
          this.forget(hex);
          await unlink(this.pathOf(digest)).catch(() => {});
          e = undefined;
        } else {
          e.verified = true;
        }
      }
      if (e) {
        this.stats.hits++;
        return this.lease(hex, e);
      }
      if (round > 2) throw new KilnError('E_INTERNAL', `${digest} vanished from the cache while being acquired`);
      let p = this.inflight.get(hex);
      if (!p) {
        p = this.download(digest, signal).finally(() => this.inflight.delete(hex));
        this.inflight.set(hex, p);
      }
      await p;
    }
  }

  /** Path of the verified blob (downloading it if needed); not pinned. */
  async get(digest: Digest, signal?: AbortSignal): Promise<string> {
    const lease = await this.acquire(digest, signal);
    lease.release();
    return lease.path;
  }

  private lease(hex: string, e: Entry): CasLease {
    e.pins++;
    e.lastUsed = Date.now();
    const path = join(this.blobDir, hex);
    const now = new Date();
    utimes(path, now, now).catch(() => {});
    let released = false;
    return {
      path,
      size: e.size,
      release: () => {
        if (released) return;
        released = true;
        e.pins--;
        this.evict();
      },
    };
  }

  private add(hex: string, size: number): void {
    const old = this.entries.get(hex);
    if (old) return;
    this.entries.set(hex, { size, lastUsed: Date.now(), pins: 0, verified: true });
    this.totalBytes += size;
  }

  private forget(hex: string): void {
    const e = this.entries.get(hex);
    if (!e) return;
    this.entries.delete(hex);
    this.totalBytes -= e.size;
  }

  /** Removes least recently used, unpinned blobs while the cache is over its limit. */
  private evict(): void {
    if (this.totalBytes <= this.maxBytes) return;
    const victims = [...this.entries.entries()].filter(([, e]) => e.pins === 0).sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [hex] of victims) {
      if (this.totalBytes <= this.maxBytes) break;
      this.forget(hex);
      this.stats.evictions++;
      unlink(join(this.blobDir, hex)).catch(() => {});
    }
  }

  private async download(digest: Digest, signal?: AbortSignal): Promise<void> {
    const url = `${this.opts.coordinatorUrl}${apiPath.casBlob(digest)}`;
    let res: Response;
    try {
      res = await this.fetchFn(url, { headers: { authorization: `Bearer ${this.opts.token}` }, ...(signal ? { signal } : {}) });
    } catch (err) {
      throw new KilnError('E_CONNECTION', `fetching ${digest} from ${url} failed: ${coerceError(err).message}`, { cause: err });
    }
    if (res.status === 404) throw new KilnError('E_NOT_FOUND', `the coordinator has no blob ${digest}`);
    if (!res.ok || !res.body) throw new KilnError('E_CONNECTION', `fetching ${digest} from ${url} failed: HTTP ${res.status}`);
    const expected = Number(res.headers.get('content-length') ?? NaN);
    const tmp = this.tmpPath(digestHex(digest));
    let size: number;
    try {
      size = await writeVerifiedFile(tmp, res.body as unknown as AsyncIterable<Uint8Array>, {
        digest,
        ...(Number.isFinite(expected) ? { size: expected } : {}),
        verb: 'downloaded',
        outcome: 'discarded',
        onRead: (n) => (this.stats.downloadedBytes += n),
      });
    } catch (err) {
      // writeVerifiedFile has removed the temp file: nothing partial stays in the cache.
      if (isDiskFull(err)) throw this.diskFull(`fetching ${digest}`, Number.isFinite(expected) ? expected : null, err);
      this.stats.corrupt++;
      if (err instanceof KilnError) throw err;
      throw new KilnError('E_CONNECTION', `fetching ${digest} broke (${coerceError(err).message}); discarded`, { cause: err });
    }
    try {
      await rename(tmp, this.pathOf(digest));
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    this.stats.downloads++;
    this.add(digestHex(digest), size);
    this.evict();
  }

  /** Asks the coordinator which of `digests` it lacks. */
  async findMissing(digests: Digest[]): Promise<Digest[]> {
    const url = `${this.opts.coordinatorUrl}${apiPath.casFindMissing()}`;
    let res: Response;
    try {
      res = await this.fetchFn(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.opts.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ digests }),
      });
    } catch (err) {
      throw new KilnError('E_CONNECTION', `POST ${url} failed: ${coerceError(err).message}`, { cause: err });
    }
    if (!res.ok) throw new KilnError('E_CONNECTION', `POST ${url} failed: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`);
    return ((await res.json()) as { missing: Digest[] }).missing;
  }

  /**
   * Uploads the file at `path` (whose bytes hash to `digest`) to the coordinator unless it
   * has it, then moves the file into the cache (it is the blob; no second copy).
   */
  async upload(digest: Digest, path: string, size: number, signal?: AbortSignal): Promise<void> {
    await this.load();
    const missing = await this.findMissing([digest]);
    if (missing.length > 0) {
      const url = `${this.opts.coordinatorUrl}${apiPath.casBlob(digest)}`;
      let res: Response;
      try {
        res = await this.fetchFn(url, {
          method: 'PUT',
          headers: { authorization: `Bearer ${this.opts.token}`, 'content-type': 'application/octet-stream', 'content-length': String(size) },
          body: Readable.toWeb(createReadStream(path, { highWaterMark: 1024 * 1024 })) as ReadableStream,
          duplex: 'half',
          ...(signal ? { signal } : {}),
        } as RequestInit);
      } catch (err) {
        throw new KilnError('E_CONNECTION', `uploading ${digest} to ${url} failed: ${coerceError(err).message}`, { cause: err });
      }
      if (res.status !== 200 && res.status !== 201) throw new KilnError('E_CONNECTION', `uploading ${digest} to ${url} failed: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`);
      await res.arrayBuffer();
      this.stats.uploads++;
      this.stats.uploadedBytes += size;
    }
    const hex = digestHex(digest);
    if (!this.entries.has(hex)) {
      await mkdir(this.blobDir, { recursive: true });
      // Same file system: a hard link (or rename) puts it in place without copying.
      const dest = this.pathOf(digest);
      await link(path, dest).catch(async (err: unknown) => {
        if (errnoCode(err) === 'EEXIST') return;
        if (errnoCode(err) !== 'EXDEV') throw err;
        const tmp = this.tmpPath(hex);
        try {
          const fh = await open(tmp, 'w', 0o644);
          try {
            await pipeline(createReadStream(path), fh.createWriteStream({ autoClose: false }));
            await fh.sync();
          } finally {
            await fh.close();
          }
          await rename(tmp, dest);
        } catch (copyErr) {
          await unlink(tmp).catch(() => {});
          throw copyErr;
        }
      }).catch((err: unknown) => {
        if (isDiskFull(err)) throw this.diskFull(`keeping output ${digest} in the cache`, size, err);
        throw err;
      });
      this.add(hex, size);
      this.evict();
    }
  }

  private tmpPath(hex: string): string {
    return join(this.blobDir, `.tmp-${hex.slice(0, 12)}-${randomBytes(6).toString('hex')}`);
  }

  private diskFull(what: string, needBytes: number | null, cause: unknown): DiskFullError {
    const need = needBytes !== null ? ` (${needBytes} bytes)` : '';
    return new DiskFullError(`${what}${need} into ${this.opts.dir} failed: no space left on device; nothing was kept`, needBytes, cause);
  }

  open(digest: Digest) {
    return createReadStream(this.pathOf(digest), { highWaterMark: 1024 * 1024 });
  }
}

async function hashFile(path: string): Promise<Digest | null> {
  const hash = newHasher();
  try {
    for await (const c of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(c as Buffer);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
  return hasherDigest(hash);
}
