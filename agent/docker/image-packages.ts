/**
 * Finding an image's packages: create a container from the image (never started, network
 * none), read its flattened file system once as a tar (`GET /containers/{id}/export`) and
 * keep only the package-database files (package-dbs.ts `dbKindOf`); every other entry is
 * skipped as it streams past, nothing is written to disk. One pass finds the databases
 * wherever they are (a venv in /opt, node_modules under /app), which a list of fixed paths
 * read through the archive endpoint would miss.
 *
 * Everything is bounded (`ScanLimits`): tar entries walked, bytes streamed, the size of
 * each database file (per kind) and of all kept together, and packages. Reaching a bound
 * ends the scan with what was found so far and a warning (`partial: true`); a malformed
 * database is a warning too. Only the engine failing (create, export) throws.
 */
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { extract as tarExtract } from 'tar-stream';
import { coerceError, KilnError } from '../../shared/core.js';
import { dbKindOf, imagePath, parseDb, parseOsRelease, type DbKind, type FoundPackage } from './package-dbs.js';

export interface ScanLimits {
  /** Most tar entries walked (files, directories, links). */
  maxEntries: number;
  /** Most bytes of the export read. */
  maxStreamBytes: number;
  /** Largest database file kept, by kind (a larger one is skipped with a warning). */
  maxFileBytes: ReadonlyMap<DbKind, number>;
  /** Most bytes of database files kept in all. */
  maxKeptBytes: number;
  /** Most packages in the SBOM. */
  maxPackages: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_SCAN_LIMITS: ScanLimits = {
  maxEntries: 2_000_000,
  maxStreamBytes: 32 * 1024 * MiB,
  maxFileBytes: new Map<DbKind, number>([
    ['dpkg-status', 64 * MiB],
    ['dpkg-status-d', MiB],
    ['apk-installed', 64 * MiB],
    ['python', MiB],
    ['npm', MiB],
    ['os-release', 64 * 1024],
  ]),
  maxKeptBytes: 256 * MiB,
  maxPackages: 100_000,
};

export interface ScanResult {
  packages: FoundPackage[];
  /** `/etc/os-release` ID and VERSION_ID, when the image has one. */
  os: { id: string; versionId: string | null } | null;
  warnings: string[];
  /** A bound was reached: packages past it are missing. */
  partial: boolean;
  /** Tar entries walked and bytes read (for the log). */
  entries: number;
  bytes: number;
}

/** Most warnings kept (the count of the rest is reported). */
const MAX_WARNINGS = 50;

/**
 * Scans an image file system as a tar stream. Resolves when the stream ended or a bound
 * stopped the scan (the stream is then destroyed); rejects only when the stream fails.
 */
export function scanTar(stream: NodeJS.ReadableStream, limits: ScanLimits = DEFAULT_SCAN_LIMITS): Promise<ScanResult> {
  const packages: FoundPackage[] = [];
  const warnings: string[] = [];
  let dropped = 0;
  const warn = (w: string) => {
    if (warnings.length < MAX_WARNINGS) warnings.push(w);
    else dropped++;
  };
  let os: ScanResult['os'] = null;
  let osFrom: string | null = null;
  let entries = 0;
  let bytes = 0;
  let kept = 0;
  let partial = false;
  const ex = tarExtract();
  const src = stream as Readable;

  return new Promise<ScanResult>((resolve, reject) => {
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      src.removeListener('data', count);
      if (err) return reject(err);
      if (dropped > 0) warnings.push(`${dropped} more warnings not shown`);
      resolve({ packages, os, warnings, partial, entries, bytes });
    };
    const stop = (why: string) => {
      if (!partial) warn(`${why}; the SBOM lists only the packages found before it`);
      partial = true;
      src.unpipe(ex);
      src.destroy();
      ex.destroy();
      finish();
    };
    const count = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > limits.maxStreamBytes) stop(`the image's file system is larger than ${limits.maxStreamBytes} bytes`);
    };
    src.on('data', count);
    src.on('error', (err: Error) => finish(new KilnError('E_DOCKER', `reading the image's file system failed: ${err.message}`, { cause: err })));
    ex.on('error', (err: Error) => {
      // A broken tar (truncated, bad header) after some entries: what was found stands.
      if (!done) {
        warn(`the image's file system export is not a valid tar past entry ${entries}: ${err.message}`);
        partial = true;
        src.destroy();
        finish();
      }
    });
    ex.on('finish', () => finish());
    ex.on('entry', (header, body, next) => {
      entries++;
      // A truncated archive fails the entry's stream as well as the extractor (handled there).
      body.on('error', () => {});
      if (entries > limits.maxEntries) {
        body.resume();
        stop(`more than ${limits.maxEntries} files in the image`);
        return;
      }
      const path = header.type === 'file' ? imagePath(header.name) : null;
      const kind = path === null ? null : dbKindOf(path);
      if (kind === null || path === null) {
        body.on('end', next);
        body.resume();
        return;
      }
      const size = header.size ?? 0;
      const cap = limits.maxFileBytes.get(kind) ?? 0;
      if (size > cap || kept + size > limits.maxKeptBytes) {
        warn(size > cap ? `${path}: ${size} bytes is over the ${cap}-byte limit for this file; skipped` : `${path}: the package databases together exceed ${limits.maxKeptBytes} bytes; skipped`);
        // Its packages are missing from the SBOM.
        partial = true;
        body.on('end', next);
        body.resume();
        return;
      }
      kept += size;
      const parts: Buffer[] = [];
      body.on('data', (c: unknown) => {
        parts.push(c as Buffer);
      });
      body.on('end', () => {
        const data = Buffer.concat(parts);
        if (kind === 'os-release') {
          // /etc/os-release wins over /usr/lib/os-release (what it usually links to).
          if (osFrom !== '/etc/os-release') {
            const parsed = parseOsRelease(data);
            if (parsed) {
              os = parsed;
              osFrom = path;
            }
          }
        } else {
          const room = limits.maxPackages - packages.length;
          if (room <= 0) {
            stop(`more than ${limits.maxPackages} packages in the image`);
            return;
          }
          const r = parseDb(kind, data, path, room);
          for (const p of r.packages) packages.push(p);
          for (const w of r.warnings) warn(w);
          if (r.warnings.some((w) => w.includes('the rest are left out'))) partial = true;
        }
        next();
      });
    });
    src.pipe(ex);
  });
}

/** Scans image `imageId`'s file system through a container that is never started (removed afterwards). */
export async function scanImagePackages(docker: Docker, imageId: string, opts: { signal?: AbortSignal; limits?: ScanLimits } = {}): Promise<ScanResult> {
  let container: Docker.Container;
  try {
    container = await docker.createContainer({
      Image: imageId,
      // Never started; an image without CMD (FROM scratch) still needs a command to be created.
      Cmd: ['/kiln-sbom-never-runs'],
      NetworkDisabled: true,
      HostConfig: { NetworkMode: 'none' },
    });
  } catch (err) {
    throw new KilnError('E_DOCKER', `creating a container to read the image failed: ${coerceError(err).message}`, { cause: err });
  }
  try {
    let stream: NodeJS.ReadableStream;
    try {
      stream = await container.export(opts.signal ? ({ abortSignal: opts.signal } as object) : {});
    } catch (err) {
      throw new KilnError('E_DOCKER', `exporting the image's file system failed: ${coerceError(err).message}`, { cause: err });
    }
    const onAbort = () => (stream as Readable).destroy(new Error('cancelled'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await scanTar(stream, opts.limits ?? DEFAULT_SCAN_LIMITS);
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
}
