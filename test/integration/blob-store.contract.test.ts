/**
 * The BlobStore contract (coordinator/cas/blob-store.ts), one suite run against both
 * backends: LocalBlobStore on a temp dir and S3BlobStore on a real S3 server (s3rver,
 * in-process on a free port; a fresh key prefix per test). Byte-exact round trips,
 * idempotent and concurrent puts, refused uploads that leave nothing behind (for S3 the
 * bucket itself is listed, so a leftover temporary object fails the test), listing, the
 * find-missing index after a restart, and download URLs. Then what only S3 has: bucket
 * checks at init, stale temporary objects, and an endpoint where nothing listens.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'minio';
import { afterAll, beforeAll, beforeEach, afterEach, describe, expect, it } from 'vitest';
import { sha256, type Digest } from '../../shared/index.js';
import type { BlobStore } from '../../coordinator/cas/blob-store.js';
import { Cas } from '../../coordinator/cas/cas.js';
import { LocalBlobStore } from '../../coordinator/cas/local-blob-store.js';
import { S3BlobStore } from '../../coordinator/cas/s3-blob-store.js';
import { startS3, type TestS3 } from '../helpers/s3.js';

const MAX = 64 * 1024 * 1024;
const BUCKET = 'kiln-contract';

/** One backend under test: `create` makes a store over the current test's storage. */
interface Backend {
  name: 'local' | 's3';
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** Fresh storage for the next test. */
  reset(): Promise<void>;
  create(maxBlobBytes?: number): BlobStore;
  /** Whatever the backend holds besides the blobs (temp files, temporary objects), as names. */
  leftovers(): Promise<string[]>;
}

function localBackend(): Backend {
  let root = '';
  let dir = '';
  let n = 0;
  return {
    name: 'local',
    setup: async () => {
      root = await mkdtemp(join(tmpdir(), 'kiln-blobs-'));
    },
    teardown: () => rm(root, { recursive: true, force: true }),
    reset: async () => {
      dir = join(root, `t${++n}`);
    },
    create: (maxBlobBytes = MAX) => new LocalBlobStore(dir, maxBlobBytes),
    leftovers: async () => (await readdir(join(dir, 'cas', 'tmp')).catch(() => [] as string[])).map((f) => `tmp/${f}`),
  };
}

let s3: TestS3 | undefined;

function s3Client(server: TestS3): Client {
  const url = new URL(server.endpoint);
  return new Client({ endPoint: url.hostname, port: Number(url.port), useSSL: false, accessKey: server.accessKey, secretKey: server.secretKey, region: server.region, pathStyle: true });
}

async function objectNames(client: Client, bucket: string, prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const item of client.listObjectsV2(bucket, prefix, true) as AsyncIterable<{ name?: string }>) if (item.name) names.push(item.name);
  return names.sort();
}

function s3Backend(): Backend {
  let prefix = '';
  let n = 0;
  let client: Client;
  return {
    name: 's3',
    setup: async () => {
      s3 = await startS3();
      client = s3Client(s3);
    },
    teardown: async () => {
      await s3?.stop();
      s3 = undefined;
    },
    reset: async () => {
      prefix = `t${++n}-${randomBytes(3).toString('hex')}/`;
    },
    create: (maxBlobBytes = MAX) =>
      new S3BlobStore({ endpoint: s3!.endpoint, region: s3!.region, bucket: BUCKET, accessKey: s3!.accessKey, secretKey: s3!.secretKey, prefix, maxBlobBytes }),
    // Everything under the test's prefix except well-formed blob keys.
    leftovers: async () =>
      (await objectNames(client, BUCKET, prefix)).map((k) => k.slice(prefix.length)).filter((k) => !/^sha256\/[0-9a-f]{64}$/.test(k)),
  };
}

/** The bytes in `chunk`-sized pieces; `state.drained` turns true once all were taken. */
function body(data: Uint8Array, chunk = 64 * 1024): { iterable: AsyncIterable<Uint8Array>; state: { drained: boolean } } {
  const state = { drained: false };
  const iterable = (async function* () {
    for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, Math.min(i + chunk, data.length));
    state.drained = true;
  })();
  return { iterable, state };
}

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function listed(store: BlobStore): Promise<Array<{ digest: Digest; size: number }>> {
  const out: Array<{ digest: Digest; size: number }> = [];
  for await (const b of store.list()) out.push({ digest: b.digest, size: b.size });
  return out.sort((a, b) => a.digest.localeCompare(b.digest));
}

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error('expected a rejection');
}

describe.each([localBackend(), s3Backend()])('BlobStore contract: $name', (backend) => {
  let cas: Cas;

  beforeAll(() => backend.setup());
  afterAll(() => backend.teardown());
  beforeEach(async () => {
    await backend.reset();
    cas = new Cas(backend.create());
    await cas.init();
  });
  afterEach(async () => {
    expect(await backend.leftovers()).toEqual([]);
  });

  it('stores and returns the exact bytes: 1 byte, 0 bytes, ~5 MiB, and a body of unknown length', async () => {
    const samples = [Buffer.from([0x2a]), Buffer.alloc(0), randomBytes(5 * 1024 * 1024 + 321)];
    for (const data of samples) {
      const digest = sha256(data);
      expect(await cas.put(digest, body(data).iterable, data.length)).toEqual({ created: true, size: data.length });
      expect((await readAll(await cas.read(digest))).equals(data)).toBe(true);
      expect(await cas.store.size(digest)).toBe(data.length);
      expect(cas.size(digest)).toBe(data.length);
    }
    const unsized = randomBytes(300_000);
    const d = sha256(unsized);
    expect(await cas.put(d, body(unsized, 7000).iterable)).toEqual({ created: true, size: unsized.length });
    expect((await readAll(await cas.read(d))).equals(unsized)).toBe(true);
    expect(cas.kind).toBe(backend.name);
  });

  it('a second put of a stored digest is not an error: created false, body drained', async () => {
    const data = randomBytes(10_000);
    const digest = sha256(data);
    await cas.put(digest, body(data).iterable, data.length);
    const again = body(data, 1000);
    expect(await cas.put(digest, again.iterable, data.length)).toEqual({ created: false, size: data.length });
    expect(again.state.drained).toBe(true);
    expect(await listed(cas.store)).toEqual([{ digest, size: data.length }]);
  });

  it('refuses bytes that do not hash to the digest and keeps nothing', async () => {
    const kept = Buffer.from('already here');
    await cas.putBuffer(sha256(kept), kept);
    const data = randomBytes(200_000);
    const claimed = sha256('something else');
    for (const size of [data.length, undefined]) {
      const err = await failure(cas.put(claimed, body(data).iterable, size));
      expect(err.code).toBe('E_DIGEST_MISMATCH');
      expect(err.message).toContain(`not ${claimed}`);
    }
    expect(await cas.store.size(claimed)).toBeNull();
    expect(cas.has(claimed)).toBe(false);
    expect(await listed(cas.store)).toEqual([{ digest: sha256(kept), size: kept.length }]);
  });

  it('refuses a body shorter or longer than the expected size', async () => {
    const data = randomBytes(50_000);
    const digest = sha256(data);
    for (const expected of [data.length + 1, data.length - 1]) {
      const err = await failure(cas.put(digest, body(data).iterable, expected));
      expect(err.code).toBe('E_DIGEST_MISMATCH');
      expect(err.message).toMatch(/Content-Length/);
    }
    expect(await cas.store.size(digest)).toBeNull();
    expect(await listed(cas.store)).toEqual([]);
  });

  it('refuses a blob larger than the limit, announced or not', async () => {
    const small = new Cas(backend.create(1024));
    await small.init();
    const data = randomBytes(4096);
    const digest = sha256(data);
    const announced = await failure(small.put(digest, body(data).iterable, data.length));
    expect(announced.code).toBe('E_TOO_LARGE');
    expect(announced.message).toContain('1024 bytes');
    const streamed = await failure(small.put(digest, body(data, 100).iterable));
    expect(streamed.code).toBe('E_TOO_LARGE');
    const exact = randomBytes(1024);
    expect((await small.put(sha256(exact), body(exact).iterable)).created).toBe(true);
    expect(await listed(small.store)).toEqual([{ digest: sha256(exact), size: 1024 }]);
  });

  it('concurrent puts of one digest leave exactly one correct blob', async () => {
    const data = randomBytes(1024 * 1024 + 17);
    const digest = sha256(data);
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => cas.put(digest, body(data, 16 * 1024 + i).iterable, i % 2 ? data.length : undefined)));
    for (const r of results) expect(r.size).toBe(data.length);
    expect(results.some((r) => r.created)).toBe(true);
    expect(await listed(cas.store)).toEqual([{ digest, size: data.length }]);
    expect((await readAll(await cas.read(digest))).equals(data)).toBe(true);
  });

  it('read of an absent digest is E_NOT_FOUND; size is null', async () => {
    const absent = sha256('never stored');
    expect((await failure(cas.store.read(absent))).code).toBe('E_NOT_FOUND');
    expect((await failure(cas.read(absent))).code).toBe('E_NOT_FOUND');
    expect(await cas.store.size(absent)).toBeNull();
  });

  it('delete removes the blob; deleting an absent digest is not an error', async () => {
    const data = Buffer.from('to be deleted');
    const digest = sha256(data);
    await cas.putBuffer(digest, data);
    await cas.delete(digest);
    expect(cas.has(digest)).toBe(false);
    expect(await cas.store.size(digest)).toBeNull();
    expect((await failure(cas.store.read(digest))).code).toBe('E_NOT_FOUND');
    expect(await listed(cas.store)).toEqual([]);
    await cas.delete(digest);
    await cas.store.delete(sha256('never stored'));
  });

  it('list yields exactly what is stored', async () => {
    const before = Date.now();
    const blobs = [Buffer.from('one'), Buffer.alloc(0), randomBytes(70_000)];
    for (const b of blobs) await cas.putBuffer(sha256(b), b);
    const expected = blobs.map((b) => ({ digest: sha256(b), size: b.length })).sort((a, b) => a.digest.localeCompare(b.digest));
    expect(await listed(cas.store)).toEqual(expected);
    for await (const b of cas.store.list()) {
      // S3 reports whole seconds.
      expect(b.storedAt).toBeGreaterThanOrEqual(before - 1000);
      expect(b.storedAt).toBeLessThanOrEqual(Date.now() + 1000);
    }
    expect(cas.stats()).toEqual({ blobs: 3, bytes: 3 + 70_000 });
  });

  it('after init, findMissing reflects a store populated before the start', async () => {
    const a = Buffer.from('blob a');
    const b = randomBytes(5000);
    await cas.putBuffer(sha256(a), a);
    await cas.putBuffer(sha256(b), b);
    const restarted = new Cas(backend.create());
    await restarted.init();
    const c = sha256('blob c');
    expect(restarted.findMissing([sha256(a), c, sha256(b), c])).toEqual([c]);
    expect(restarted.size(sha256(b))).toBe(5000);
    expect(restarted.stats()).toEqual({ blobs: 2, bytes: a.length + 5000 });
  });

  it('downloadUrl: none for local disk; for S3 a presigned URL a plain GET reads the exact bytes from', async () => {
    const data = randomBytes(300_000);
    const digest = sha256(data);
    await cas.putBuffer(digest, data);
    const url = await cas.downloadUrl(digest, 60);
    if (backend.name === 'local') {
      expect(url).toBeNull();
      return;
    }
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/kiln-contract\/.*sha256\/[0-9a-f]{64}\?/);
    const res = await fetch(url!);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
  });
});

describe('S3BlobStore only', () => {
  let server: TestS3;
  let client: Client;
  const options = (over: Partial<ConstructorParameters<typeof S3BlobStore>[0]> = {}) => ({
    endpoint: server.endpoint,
    region: server.region,
    bucket: BUCKET,
    accessKey: server.accessKey,
    secretKey: server.secretKey,
    maxBlobBytes: MAX,
    ...over,
  });

  beforeAll(async () => {
    server = await startS3();
    client = s3Client(server);
  });
  afterAll(() => server.stop());

  it('init creates a missing bucket, or refuses naming endpoint and bucket when not allowed to', async () => {
    const refused = await failure(new S3BlobStore(options({ bucket: 'kiln-not-there', createBucket: false })).init());
    expect(refused.code).toBe('E_CONFIG');
    expect(refused.message).toContain(server.endpoint);
    expect(refused.message).toContain("'kiln-not-there'");
    expect(await client.bucketExists('kiln-not-there')).toBe(false);
    const store = new S3BlobStore(options({ bucket: 'kiln-created' }));
    await store.init();
    expect(await client.bucketExists('kiln-created')).toBe(true);
    await store.init();
    expect(store.location).toBe(`s3://kiln-created/kiln/ (${server.endpoint})`);
  });

  it('stores blobs at <prefix>sha256/<hex> and ignores other keys when listing', async () => {
    const store = new S3BlobStore(options({ prefix: 'layout/' }));
    await store.init();
    const data = Buffer.from('layout');
    await store.put(sha256(data), body(data).iterable, data.length);
    await client.putObject(BUCKET, 'layout/sha256/not-a-digest', Buffer.from('x'));
    await client.putObject(BUCKET, `layout/sha256/${'a'.repeat(63)}`, Buffer.from('x'));
    expect(await objectNames(client, BUCKET, 'layout/')).toEqual([`layout/sha256/${sha256(data).slice(7)}`, `layout/sha256/${'a'.repeat(63)}`, 'layout/sha256/not-a-digest'].sort());
    expect(await listed(store)).toEqual([{ digest: sha256(data), size: data.length }]);
  });

  it('init removes temporary objects older than the cut-off and keeps younger ones', async () => {
    await client.putObject(BUCKET, 'stale/tmp/0123456789abcdef-000000', Buffer.from('partial'));
    await new S3BlobStore(options({ prefix: 'stale/' })).init();
    expect(await objectNames(client, BUCKET, 'stale/tmp/')).toEqual(['stale/tmp/0123456789abcdef-000000']);
    await new Promise((r) => setTimeout(r, 10));
    await new S3BlobStore(options({ prefix: 'stale/', staleTmpAfterMs: 1 })).init();
    expect(await objectNames(client, BUCKET, 'stale/tmp/')).toEqual([]);
  });

  it('init against an endpoint where nothing listens fails quickly with E_CONNECTION naming it', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const p = (probe.address() as { port: number }).port;
        probe.close(() => resolve(p));
      });
    });
    const endpoint = `http://127.0.0.1:${port}`;
    const started = Date.now();
    const err = await failure(new S3BlobStore(options({ endpoint, connectTimeoutMs: 2000 })).init());
    expect(err.code).toBe('E_CONNECTION');
    expect(err.message).toContain(endpoint);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('a server that accepts the connection but never answers fails with E_CONNECTION, not a hang', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
    try {
      const started = Date.now();
      const err = await failure(new S3BlobStore(options({ endpoint, responseTimeoutMs: 300 })).init());
      expect(err.code).toBe('E_CONNECTION');
      expect(err.message).toContain(endpoint);
      expect(err.message).toMatch(/no response after 300 ms/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('refuses an endpoint that is not scheme://host[:port]', () => {
    expect(() => new S3BlobStore(options({ endpoint: 'ftp://x:1' }))).toThrow(/must be http/);
    expect(() => new S3BlobStore(options({ endpoint: 'http://x:1/path' }))).toThrow(/without a path/);
  });
});
