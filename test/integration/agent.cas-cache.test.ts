/**
 * The agent's local CAS cache against a real coordinator (in process, real HTTP on port
 * 0, real files): concurrent fetches of one digest download once, a second fetch moves
 * zero bytes, corrupt or truncated downloads are refused and leave nothing, a cached blob
 * corrupted on disk is detected after a restart and fetched again, LRU eviction keeps
 * the cache under its cap without touching blobs in use, and uploads send only what the
 * coordinator lacks.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CasCache } from '../../agent/cas-cache.js';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/coordinator.js';
import { coerceError, apiPath, createLogger, isKilnError, sha256, type Digest } from '../../shared/index.js';
import { tempDir } from '../helpers/cluster.js';

describe('agent CAS cache', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: RunningCoordinator;

  beforeAll(async () => {
    dir = await tempDir('cas-cache');
    const config = loadCoordinatorConfig({ dataDir: join(dir.path, 'data'), listen: '127.0.0.1:0', logLevel: 'silent', logFormat: 'json' }, { env: {}, arch: process.arch, isTTY: false });
    coord = await startCoordinator(config, createLogger({ name: 'test', level: 'silent', format: 'json' }));
  });
  afterAll(async () => {
    await coord.stop();
    await dir.cleanup();
  });

  const cache = (name: string, maxBytes?: number) =>
    new CasCache({ dir: join(dir.path, name), coordinatorUrl: coord.url, token: coord.tokens.agentToken, ...(maxBytes !== undefined ? { maxBytes } : {}) });

  async function put(data: Buffer): Promise<Digest> {
    const digest = sha256(data);
    const res = await fetch(`${coord.url}${apiPath.casBlob(digest)}`, { method: 'PUT', body: data, headers: { authorization: `Bearer ${coord.tokens.apiToken}` } });
    expect(res.status).toBe(201);
    return digest;
  }
  const onCoordinator = (d: Digest) => join(coord.dataDir, 'cas', 'sha256', d.slice(7, 9), d.slice(7));

  it('downloads a digest once for many concurrent users, and moves 0 bytes the second time', async () => {
    const data = randomBytes(1024 * 1024);
    const d = await put(data);
    const c = cache('concurrent');
    const leases = await Promise.all(Array.from({ length: 8 }, () => c.acquire(d)));
    expect(c.stats.downloads).toBe(1);
    expect(c.stats.downloadedBytes).toBe(data.length);
    for (const l of leases) {
      expect(l.path).toBe(leases[0]!.path);
      l.release();
    }
    expect((await readFile(leases[0]!.path)).equals(data)).toBe(true);
    const before = c.stats.downloadedBytes;
    await c.get(d);
    expect(c.stats.downloadedBytes - before).toBe(0);
    expect(c.stats.downloads).toBe(1);
  });

  it('refuses a corrupt or truncated download and keeps nothing of it', async () => {
    for (const damage of ['corrupt', 'truncate'] as const) {
      const data = randomBytes(256 * 1024);
      const d = await put(data);
      if (damage === 'corrupt') {
        const bad = Buffer.from(data);
        bad[12345] = bad[12345]! ^ 1;
        await writeFile(onCoordinator(d), bad);
      } else {
        await truncate(onCoordinator(d), data.length - 1000);
      }
      const c = cache(`damaged-${damage}`);
      const err = await c.acquire(d).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, damage).not.toBeNull();
      expect(isKilnError(err, 'E_DIGEST_MISMATCH')).toBe(true);
      expect(coerceError(err).message).toContain(d);
      expect(await readdir(join(dir.path, `damaged-${damage}`, 'sha256'))).toEqual([]);
    }
  });

  it('detects a cached blob corrupted on disk after a restart and fetches it again', async () => {
    const data = randomBytes(64 * 1024);
    const d = await put(data);
    const c1 = cache('restart');
    const path = await c1.get(d);
    const bad = Buffer.from(data);
    bad[0] = bad[0]! ^ 0xff;
    await writeFile(path, bad);
    const c2 = cache('restart');
    const again = await c2.acquire(d);
    again.release();
    expect(c2.stats.corrupt).toBe(1);
    expect(c2.stats.downloads).toBe(1);
    expect((await readFile(again.path)).equals(data)).toBe(true);
    // an intact cached blob is used without a download after a restart
    const c3 = cache('restart');
    await c3.get(d);
    expect(c3.stats.downloads).toBe(0);
    expect(c3.stats.hits).toBe(1);
  });

  it('evicts least recently used blobs over the cap, never one in use', async () => {
    const blobs = await Promise.all([0, 1, 2, 3].map(async () => put(randomBytes(100 * 1024))));
    const c = cache('lru', 250 * 1024);
    const held = await c.acquire(blobs[0]!); // in use the whole time
    await c.get(blobs[1]!);
    await c.get(blobs[2]!);
    await c.get(blobs[3]!);
    const names = await readdir(join(dir.path, 'lru', 'sha256'));
    expect(names).toContain(blobs[0]!.slice(7));
    expect(names).toContain(blobs[3]!.slice(7));
    expect(names).not.toContain(blobs[1]!.slice(7));
    expect(c.bytes).toBeLessThanOrEqual(250 * 1024);
    expect(c.stats.evictions).toBeGreaterThanOrEqual(2);
    held.release();
  });

  it('uploads only what the coordinator lacks', async () => {
    const data = randomBytes(10_000);
    const d = sha256(data);
    const file = join(dir.path, 'upload.bin');
    await writeFile(file, data);
    const c = cache('upload');
    await c.upload(d, file, data.length);
    expect(c.stats.uploads).toBe(1);
    await c.upload(d, file, data.length);
    expect(c.stats.uploads).toBe(1);
    expect(coord.cas.has(d)).toBe(true);
    // and it is in the local cache without a download
    await c.get(d);
    expect(c.stats.downloads).toBe(0);
    await rm(file);
  });
});
