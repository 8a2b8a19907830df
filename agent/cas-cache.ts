/**
 * The agent's local CAS cache: blobs fetched from the coordinator by digest, verified
 * before use, shared by every build on the host, and kept across restarts.
 *
 * A download goes to a temp file in the cache's own directory and is renamed into place
 * only when its bytes hash to the digest, so a partial or corrupt download never looks
 * like a cached blob. Several builds asking for the same digest at once share one
 * download.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { KilnError, digestHex, errnoCode, hasherDigest, newHasher, type Digest } from '../shared/index.js';

export interface CasCacheOptions {
  dir: string;
  /** Base URL of the coordinator's HTTP API (http://host:port). */
  coordinatorUrl: string;
  token: string;
  fetch?: typeof fetch;
}

export class CasCache {
  private readonly inflight = new Map<string, Promise<string>>();
  private readonly fetchFn: typeof fetch;

  constructor(private readonly opts: CasCacheOptions) {
    this.fetchFn = opts.fetch ?? fetch;
  }

  pathOf(digest: Digest): string {
    return join(this.opts.dir, 'sha256', digestHex(digest));
  }

  /** Local path of the verified blob, downloading it first if needed. */
  async get(digest: Digest, signal?: AbortSignal): Promise<string> {
    const path = this.pathOf(digest);
    try {
      await stat(path);
      return path;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    let p = this.inflight.get(digest);
    if (!p) {
      p = this.download(digest, path, signal).finally(() => this.inflight.delete(digest));
      this.inflight.set(digest, p);
    }
    return p;
  }

  private async download(digest: Digest, path: string, signal?: AbortSignal): Promise<string> {
    const dir = join(this.opts.dir, 'sha256');
    await mkdir(dir, { recursive: true });
    const url = `${this.opts.coordinatorUrl}/api/v1/cas/${digest}`;
    let res: Response;
    try {
      res = await this.fetchFn(url, { headers: { authorization: `Bearer ${this.opts.token}` }, ...(signal ? { signal } : {}) });
    } catch (err) {
      throw new KilnError('E_CONNECTION', `fetching ${digest} from ${url} failed: ${(err as Error).message}`, { cause: err });
    }
    if (!res.ok || !res.body) throw new KilnError('E_CONNECTION', `fetching ${digest} from ${url} failed: HTTP ${res.status}`);
    const expected = Number(res.headers.get('content-length') ?? NaN);
    const tmp = join(dir, `.tmp-${digestHex(digest).slice(0, 12)}-${randomBytes(6).toString('hex')}`);
    const fh = await open(tmp, 'w', 0o644);
    const hash = newHasher();
    let size = 0;
    let keep = false;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        size += chunk.length;
        if (Number.isFinite(expected) && size > expected) throw new KilnError('E_DIGEST_MISMATCH', `${digest}: the coordinator sent more than the ${expected} bytes it announced`);
        hash.update(chunk);
        await fh.write(chunk);
      }
      const actual = hasherDigest(hash);
      if (actual !== digest) throw new KilnError('E_DIGEST_MISMATCH', `downloaded ${size} bytes hash to ${actual}, not ${digest}; discarded`);
      await fh.sync();
      keep = true;
    } finally {
      await fh.close();
      if (!keep) await unlink(tmp).catch(() => {});
    }
    await rename(tmp, path);
    return path;
  }

  open(digest: Digest) {
    return createReadStream(this.pathOf(digest), { highWaterMark: 1024 * 1024 });
  }
}
