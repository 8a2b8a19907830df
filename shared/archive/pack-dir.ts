/**
 * Packs a directory (a build context, a node's output) into a deterministic tar: entries sorted by path,
 * mtimes 0, owner 0:0 with no names, modes normalised to 0755 (directories and
 * executables) or 0644, symlinks kept as links. The same tree always gives the same
 * bytes, hence the same sha256, so an unchanged context is uploaded once and BuildKit
 * sees identical input. Sockets, devices and FIFOs are skipped.
 */
import { createWriteStream, createReadStream } from 'node:fs';
import { lstat, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import type { Header as TarHeaders } from 'tar-stream';
import { hasherDigest, newHasher, type Digest } from '../digest.js';

export interface PackedDir {
  path: string;
  digest: Digest;
  size: number;
  files: number;
  /** Removes the temp file. */
  cleanup(): Promise<void>;
}

async function walk(root: string, dir: string, out: string[]): Promise<void> {
  const names = (await readdir(dir)).sort();
  for (const name of names) {
    const full = join(dir, name);
    out.push(full);
    const st = await lstat(full);
    if (st.isDirectory()) await walk(root, full, out);
  }
}

/** Paths are compared byte-wise (not locale-wise) so the order is the same everywhere. */
function byPath(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Packs `dir`; the tar is written to a new temp dir under `tmpRoot` (default: the OS temp dir). */
export async function packDir(dir: string, opts: { tmpRoot?: string } = {}): Promise<PackedDir> {
  const all: string[] = [];
  await walk(dir, dir, all);
  const rels = all.map((p) => relative(dir, p).split(sep).join('/')).sort(byPath);
  const tmp = await mkdtemp(join(opts.tmpRoot ?? tmpdir(), 'kiln-pack-'));
  const path = join(tmp, 'context.tar');
  // tar-stream is loaded by the first pack: an idle agent does not carry it
  const { pack } = await import('tar-stream');
  const tar = pack();
  const hash = newHasher();
  let size = 0;
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  const done = pipeline(tar, hasher, createWriteStream(path));
  let files = 0;
  const base: Partial<TarHeaders> = { mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: '' };
  try {
    for (const rel of rels) {
      const full = join(dir, rel);
      const st = await lstat(full);
      if (st.isDirectory()) {
        await new Promise<void>((res, rej) => tar.entry({ ...base, name: `${rel}/`, type: 'directory', mode: 0o755 }, (e) => (e ? rej(e) : res())));
      } else if (st.isSymbolicLink()) {
        const target = await readlink(full);
        await new Promise<void>((res, rej) => tar.entry({ ...base, name: rel, type: 'symlink', linkname: target, mode: 0o777 }, (e) => (e ? rej(e) : res())));
      } else if (st.isFile()) {
        files++;
        const mode = st.mode & 0o111 ? 0o755 : 0o644;
        await new Promise<void>((res, rej) => {
          const entry = tar.entry({ ...base, name: rel, type: 'file', mode, size: st.size }, (e) => (e ? rej(e) : res()));
          pipeline(createReadStream(full), entry).catch(rej);
        });
      }
    }
    tar.finalize();
    await done;
  } catch (err) {
    tar.destroy();
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return { path, digest: hasherDigest(hash), size, files, cleanup: () => rm(tmp, { recursive: true, force: true }) };
}
