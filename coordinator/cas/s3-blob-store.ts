/**
 * The S3 blob store: blobs as objects `<prefix>sha256/<hex>` in one bucket of an
 * S3-compatible server (MinIO, Garage, AWS S3; s3rver in tests), through the `minio` client.
 *
 * `put` streams the body through a hashing, counting stream into a temporary object
 * `<prefix>tmp/<hex16>-<random>`, and only when the bytes hash to the digest (and their
 * count matches the expected size) copies it server-side to the final key, checks the
 * copy's size and deletes the temporary object; on any failure the temporary object is
 * deleted and nothing else was written. Concurrent puts of one digest through one store
 * take turns: the first uploads, the next find the blob stored and drain their bodies (or
 * upload, when the first failed). Between coordinators sharing a bucket, each uploads its
 * own temporary object and both copies put identical bytes at the final key, so one
 * correct blob remains. Temporary objects older than an hour (left by a crash; younger ones
 * may be another coordinator's upload in progress) are removed at start.
 *
 * A body of up to 64 MiB (minio's part size) is read into memory and sent in one PUT, as
 * minio itself does; a larger one goes up as a multipart upload, one part at a time.
 */
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { Client, CopyDestinationOptions, CopySourceOptions, S3Error, type ClientOptions } from 'minio';
import { coerceError, HEX_RE, KilnError, digestHex, errnoCode, hasherDigest, isKilnError, newHasher, type Digest } from '../../shared/index.js';
import type { BlobStore, PutResult, StoredBlob } from './blob-store.js';

export interface S3BlobStoreOptions {
  /** `http://host:port` or `https://host[:port]`, no path. */
  endpoint: string;
  region?: string;
  bucket: string;
  accessKey: string;
  secretKey: string;
  /** Key prefix, `kiln/` by default; '' for the bucket's root. */
  prefix?: string;
  /** Path-style requests (`host/bucket/key`), the default; false for virtual-host style. */
  pathStyle?: boolean;
  maxBlobBytes: number;
  /** Create the bucket when it is missing (default true); false makes a missing bucket an E_CONFIG error. */
  createBucket?: boolean;
  /** A connection not established within this time fails with E_CONNECTION (default 10 s). */
  connectTimeoutMs?: number;
  /**
   * A request whose connection stays silent this long before the response starts fails with
   * E_CONNECTION (default 2 min; generous, as a server-side copy of a large blob is silent).
   */
  responseTimeoutMs?: number;
  /** Temporary objects older than this are removed by init() (default 1 hour). */
  staleTmpAfterMs?: number;
}

/** Bodies up to this size go up in one PUT (minio's default part size); larger ones as multipart uploads. */
const SINGLE_PUT_MAX_BYTES = 64 * 1024 * 1024;
/** S3's largest object. */
const MAX_OBJECT_BYTES = 5 * 1024 ** 4;
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);
const ACCESS_CODES = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken']);
const OBJECT_META = { 'Content-Type': 'application/octet-stream' };

/** Hashes and counts the bytes flowing through it, failing once they exceed the limit or the expected size. */
class HashingCounter extends Transform {
  readonly hash = newHasher();
  size = 0;
  /** The first error of the body or of the checks here (the error `put` reports). */
  failure: unknown;

  constructor(
    private readonly maxBytes: number,
    private readonly expectedSize: number | undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.size += chunk.length;
    if (this.size > this.maxBytes) {
      this.failure ??= new KilnError('E_TOO_LARGE', `blob is larger than the limit of ${this.maxBytes} bytes`);
      done(coerceError(this.failure));
      return;
    }
    if (this.expectedSize !== undefined && this.size > this.expectedSize) {
      this.failure ??= new KilnError('E_DIGEST_MISMATCH', `uploaded more than the ${this.expectedSize} bytes Content-Length said; nothing was stored`);
      done(coerceError(this.failure));
      return;
    }
    this.hash.update(chunk);
    done(null, chunk);
  }
}

type RequestFn = (options: http.RequestOptions, callback?: (res: http.IncomingMessage) => void) => http.ClientRequest;

/**
 * http(s).request with limits on the time to connect and on silence before the response
 * starts (minio has no timeouts of its own). Once the response has begun, its body is read
 * at the consumer's pace without a limit.
 */
function transportWithTimeouts(request: RequestFn, connectTimeoutMs: number, responseTimeoutMs: number): { request: RequestFn } {
  const timeout = (what: string) => Object.assign(new Error(what), { code: 'ETIMEDOUT' });
  return {
    request: (options, callback) => {
      const req = request(options, callback);
      req.setTimeout(responseTimeoutMs, () => req.destroy(timeout(`no response after ${responseTimeoutMs} ms of silence`)));
      req.once('response', () => req.setTimeout(0));
      req.once('socket', (socket) => {
        if (!socket.connecting) return; // a kept-alive connection
        const timer = setTimeout(() => req.destroy(timeout(`connection not established within ${connectTimeoutMs} ms`)), connectTimeoutMs);
        socket.once('connect', () => clearTimeout(timer));
        req.once('close', () => clearTimeout(timer));
      });
      return req;
    },
  };
}

function s3Code(err: unknown): string | undefined {
  return err instanceof S3Error ? err.code : undefined;
}

function isNotFound(err: unknown): boolean {
  const code = s3Code(err);
  return code === 'NotFound' || code === 'NoSuchKey';
}

export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  readonly bucket: string;
  readonly prefix: string;
  /** The endpoint's origin (`http://127.0.0.1:9000`), for messages. */
  readonly endpoint: string;
  private readonly client: Client;
  private readonly maxBlobBytes: number;
  private readonly createBucket: boolean;
  private readonly region: string;
  private readonly staleTmpAfterMs: number;
  /** hex -> the put in progress for that digest. */
  private readonly putting = new Map<string, Promise<PutResult>>();

  constructor(options: S3BlobStoreOptions) {
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch {
      throw new KilnError('E_CONFIG', `S3 endpoint '${options.endpoint}' is not a URL (use http://host:port or https://host)`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new KilnError('E_CONFIG', `S3 endpoint '${options.endpoint}' must be http:// or https://`);
    if (url.pathname !== '/' || url.search || url.username) throw new KilnError('E_CONFIG', `S3 endpoint '${options.endpoint}' must be scheme://host[:port] without a path, query or credentials`);
    const useSSL = url.protocol === 'https:';
    this.endpoint = url.origin;
    this.bucket = options.bucket;
    this.prefix = options.prefix ?? 'kiln/';
    this.region = options.region ?? 'us-east-1';
    this.maxBlobBytes = options.maxBlobBytes;
    this.createBucket = options.createBucket ?? true;
    this.staleTmpAfterMs = options.staleTmpAfterMs ?? 60 * 60 * 1000;
    this.client = new Client({
      endPoint: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: url.port ? Number(url.port) : useSSL ? 443 : 80,
      useSSL,
      accessKey: options.accessKey,
      secretKey: options.secretKey,
      region: this.region,
      pathStyle: options.pathStyle ?? true,
      transport: transportWithTimeouts(
        (useSSL ? https.request : http.request) as RequestFn,
        options.connectTimeoutMs ?? 10_000,
        options.responseTimeoutMs ?? 120_000,
      ) as unknown as ClientOptions['transport'],
    });
  }

  get location(): string {
    return `s3://${this.bucket}/${this.prefix} (${this.endpoint})`;
  }

  private blobKey(digest: Digest): string {
    return `${this.prefix}sha256/${digestHex(digest)}`;
  }

  /** A KilnError for a failure of the client: E_CONNECTION for the network, E_CONFIG for refused credentials during init. */
  private failure(err: unknown, doing: string, duringInit = false): Error {
    if (isKilnError(err)) return err;
    const errno = errnoCode(err);
    if (errno && CONNECTION_CODES.has(errno)) {
      return new KilnError('E_CONNECTION', `S3 endpoint ${this.endpoint} cannot be reached while ${doing} (${errno}: ${coerceError(err).message})`, { cause: err });
    }
    const code = s3Code(err);
    const what = `${code ?? (err as Error | undefined)?.name ?? 'error'}: ${(err as Error | undefined)?.message ?? String(err)}`;
    if (code === 'NoSuchBucket') return new KilnError(duringInit ? 'E_CONFIG' : 'E_INTERNAL', `S3 bucket '${this.bucket}' does not exist at ${this.endpoint} (${doing})`, { cause: err });
    if (duringInit && code && ACCESS_CODES.has(code)) {
      return new KilnError('E_CONFIG', `S3 endpoint ${this.endpoint} refused access to bucket '${this.bucket}' (${what}); check the access key and secret key`, { cause: err });
    }
    // During init, an answer the server gave (rather than a failure to get one) means the
    // endpoint or bucket is wrong for kiln: a config error, not something a restart fixes.
    return new KilnError(duringInit && code ? 'E_CONFIG' : 'E_INTERNAL', `S3 ${doing} failed at ${this.endpoint}, bucket '${this.bucket}' (${what})`, { cause: err });
  }

  async init(): Promise<void> {
    let exists: boolean;
    try {
      exists = await this.client.bucketExists(this.bucket);
    } catch (err) {
      throw this.failure(err, `checking bucket '${this.bucket}'`, true);
    }
    if (!exists) {
      if (!this.createBucket) {
        throw new KilnError('E_CONFIG', `S3 bucket '${this.bucket}' does not exist at ${this.endpoint}; create it (kiln is configured not to)`);
      }
      try {
        await this.client.makeBucket(this.bucket, this.region);
      } catch (err) {
        if (s3Code(err) !== 'BucketAlreadyOwnedByYou') throw this.failure(err, `creating bucket '${this.bucket}'`, true);
      }
    }
    await this.removeStaleTmp();
  }

  private async removeStaleTmp(): Promise<void> {
    const cutoff = Date.now() - this.staleTmpAfterMs;
    const stale: string[] = [];
    try {
      for await (const item of this.client.listObjectsV2(this.bucket, `${this.prefix}tmp/`, true) as AsyncIterable<{ name?: string; lastModified?: Date }>) {
        if (item.name && item.lastModified && item.lastModified.getTime() <= cutoff) stale.push(item.name);
      }
    } catch (err) {
      throw this.failure(err, 'listing temporary objects', true);
    }
    for (const name of stale) await this.client.removeObject(this.bucket, name).catch(() => {});
  }

  async size(digest: Digest): Promise<number | null> {
    try {
      return (await this.client.statObject(this.bucket, this.blobKey(digest))).size;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw this.failure(err, `checking blob ${digest}`);
    }
  }

  async read(digest: Digest): Promise<Readable> {
    try {
      return await this.client.getObject(this.bucket, this.blobKey(digest));
    } catch (err) {
      if (isNotFound(err)) throw new KilnError('E_NOT_FOUND', `blob ${digest} not found`);
      throw this.failure(err, `reading blob ${digest}`);
    }
  }

  async put(digest: Digest, body: AsyncIterable<Uint8Array>, expectedSize?: number): Promise<PutResult> {
    if (expectedSize !== undefined && expectedSize > this.maxBlobBytes) {
      throw new KilnError('E_TOO_LARGE', `blob of ${expectedSize} bytes is larger than the limit of ${this.maxBlobBytes} bytes`);
    }
    const hex = digestHex(digest);
    for (let other = this.putting.get(hex); other; other = this.putting.get(hex)) await other.catch(() => {});
    const mine = this.putOnce(digest, body, expectedSize);
    this.putting.set(hex, mine);
    try {
      return await mine;
    } finally {
      if (this.putting.get(hex) === mine) this.putting.delete(hex);
    }
  }

  private async putOnce(digest: Digest, body: AsyncIterable<Uint8Array>, expectedSize: number | undefined): Promise<PutResult> {
    const existing = await this.size(digest);
    if (existing !== null) {
      // Already stored: drain the body so the client sees a clean response.
      for await (const _ of body) void _;
      return { created: false, size: existing };
    }
    const key = this.blobKey(digest);
    const tmp = `${this.prefix}tmp/${digestHex(digest).slice(0, 16)}-${randomBytes(6).toString('hex')}`;
    const source = Readable.from(body, { objectMode: false });
    const counter = new HashingCounter(this.maxBlobBytes, expectedSize);
    source.on('error', (err) => {
      counter.failure ??= err;
      counter.destroy(err);
    });
    // Settles (rejects) only when the body or the checks fail; raced against the upload,
    // which may otherwise keep waiting for a stream that will never end.
    const failed = new Promise<never>((_, reject) => counter.on('error', reject));
    source.pipe(counter);
    try {
      try {
        await Promise.race([this.upload(tmp, counter, expectedSize), failed]);
      } catch (err) {
        throw counter.failure ?? this.failure(err, `uploading blob ${digest}`);
      }
      const size = counter.size;
      const actual = hasherDigest(counter.hash);
      if (actual !== digest) {
        throw new KilnError('E_DIGEST_MISMATCH', `uploaded bytes hash to ${actual}, not ${digest}; nothing was stored`);
      }
      if (expectedSize !== undefined && size !== expectedSize) {
        throw new KilnError('E_DIGEST_MISMATCH', `uploaded ${size} bytes but Content-Length said ${expectedSize}; nothing was stored`);
      }
      let stored: number;
      try {
        await this.client.copyObject(new CopySourceOptions({ Bucket: this.bucket, Object: tmp }), new CopyDestinationOptions({ Bucket: this.bucket, Object: key }));
        stored = (await this.client.statObject(this.bucket, key)).size;
      } catch (err) {
        throw this.failure(err, `storing blob ${digest}`);
      }
      if (stored !== size) throw new KilnError('E_INTERNAL', `S3 object ${key} holds ${stored} bytes after the copy, not the ${size} uploaded`);
      return { created: true, size };
    } finally {
      source.destroy();
      counter.destroy();
      await this.client.removeObject(this.bucket, tmp).catch(() => {});
    }
  }

  /** Sends everything `data` yields to `key`: one PUT for up to SINGLE_PUT_MAX_BYTES, else a multipart upload. */
  private async upload(key: string, data: Readable, expectedSize: number | undefined): Promise<void> {
    // Reading the first part here (rather than leaving it to minio) means every byte has
    // passed the checks before anything is sent, for any body size including 0, and a
    // body of unknown length does not make minio pick parts sized for a 5 TiB object.
    const head: Buffer[] = [];
    let n = 0;
    const it = data[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    for (;;) {
      const r = await it.next();
      if (r.done) {
        await this.client.putObject(this.bucket, key, Buffer.concat(head, n), n, OBJECT_META);
        return;
      }
      head.push(r.value);
      n += r.value.length;
      if (n > SINGLE_PUT_MAX_BYTES) break;
    }
    const rest = Readable.from(
      (async function* () {
        yield* head;
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          yield r.value;
        }
      })(),
      { objectMode: false },
    );
    await this.client.putObject(this.bucket, key, rest, Math.min(expectedSize ?? this.maxBlobBytes, MAX_OBJECT_BYTES), OBJECT_META);
  }

  async *list(): AsyncIterable<StoredBlob> {
    const prefix = `${this.prefix}sha256/`;
    const items = this.client.listObjectsV2(this.bucket, prefix, true) as AsyncIterable<{ name?: string; size?: number; lastModified?: Date }>;
    try {
      for await (const item of items) {
        if (!item.name || !item.lastModified) continue;
        const hex = item.name.slice(prefix.length);
        if (!HEX_RE.test(hex)) continue;
        yield { digest: `sha256:${hex}`, size: item.size ?? 0, storedAt: item.lastModified.getTime() };
      }
    } catch (err) {
      throw this.failure(err, 'listing blobs');
    }
  }

  async delete(digest: Digest): Promise<void> {
    try {
      await this.client.removeObject(this.bucket, this.blobKey(digest));
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.failure(err, `deleting blob ${digest}`);
    }
  }

  async downloadUrl(digest: Digest, expiresSeconds: number): Promise<string | null> {
    try {
      return await this.client.presignedGetObject(this.bucket, this.blobKey(digest), expiresSeconds);
    } catch (err) {
      throw this.failure(err, `presigning blob ${digest}`);
    }
  }
}
