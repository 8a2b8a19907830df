/**
 * The contained tar extractor against hostile archives: traversal, absolute paths,
 * writes through symlinks, hard links out of the tree, devices, budgets, NUL bytes. Each
 * must reject with E_ARCHIVE and leave everything outside the target dir untouched; a
 * normal archive must come out byte-exact.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pack, type Header } from 'tar-stream';
import { coerceError, DEFAULT_EXTRACT_BUDGET, extractTarContained, isKilnError, normalizeEntryPath, safeJoin, type ExtractOptions } from '../../shared/index.js';

interface Entry extends Partial<Header> {
  name: string;
  body?: string | Buffer;
  pax?: Record<string, string>;
}

/** Builds a tar in memory with tar-stream's packer (which lets us write anything). */
async function tar(entries: Entry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const ended = new Promise<void>((resolve, reject) => {
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (body === undefined) p.entry({ mtime: new Date(0), ...header }, cb);
      else p.entry({ mtime: new Date(0), ...header }, body, cb);
    });
  }
  p.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** Rewrites the typeflag of the header at `offset` (for types tar-stream's packer cannot write) and fixes its checksum. */
function retype(buf: Buffer, offset: number, flag: string): Buffer {
  const out = Buffer.from(buf);
  out[offset + 156] = flag.charCodeAt(0);
  out.fill(0x20, offset + 148, offset + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += out[offset + i]!;
  out.write(`${sum.toString(8).padStart(6, '0')}\0 `, offset + 148, 'latin1');
  return out;
}

/** The buffer as an async iterable of small chunks (exercises the streaming path). */
async function* chunked(buf: Buffer, size = 4096): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

/** Every path under `dir` with its type and content (files) or target (symlinks). */
async function snapshot(dir: string, skip: string[] = []): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(rel: string): Promise<void> {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (skip.includes(r)) continue;
      const full = join(dir, r);
      const st = await lstat(full);
      if (st.isSymbolicLink()) out[r] = `link:${await readlink(full)}`;
      else if (st.isDirectory()) {
        out[r] = `dir:${(st.mode & 0o7777).toString(8)}`;
        await walk(r);
      } else out[r] = `file:${(st.mode & 0o7777).toString(8)}:${(await readFile(full)).toString('base64')}`;
    }
  }
  await walk('');
  return out;
}

let sandbox: string;
let target: string;
let outside: string;
let before: Record<string, string>;

beforeEach(async () => {
  sandbox = await mkdtemp(join(tmpdir(), 'kiln-extract-'));
  target = join(sandbox, 'target');
  outside = join(sandbox, 'outside');
  await mkdir(target);
  await mkdir(outside);
  await writeFile(join(outside, 'x'), 'original outside\n');
  await writeFile(join(sandbox, 'sibling.txt'), 'sibling\n');
  before = await snapshot(sandbox, ['target']);
});

afterEach(async () => {
  await rm(sandbox, { recursive: true, force: true });
});

async function expectRejected(entries: Entry[] | Buffer, opts?: ExtractOptions, match?: RegExp): Promise<Error> {
  const buf = Buffer.isBuffer(entries) ? entries : await tar(entries);
  const err = await extractTarContained(chunked(buf), target, opts).then(
    () => undefined,
    (e: unknown) => coerceError(e),
  );
  expect(err, 'extraction should reject').toBeDefined();
  expect(isKilnError(err, 'E_ARCHIVE'), `expected E_ARCHIVE, got ${String(err)}`).toBe(true);
  if (match) expect(err!.message).toMatch(match);
  // Nothing outside the target dir changed, and no stray paths appeared next to it.
  expect(await snapshot(sandbox, ['target'])).toEqual(before);
  return err!;
}

describe('extractTarContained: traversal and absolute paths', () => {
  it.each(['../evil', './../evil', 'a/../../evil', 'a/b/../../../evil', '..', 'ok/..'])('rejects %j', async (name) => {
    const err = await expectRejected([{ name, body: 'pwned\n' }], undefined, /".." component/);
    expect(err.message).toContain(JSON.stringify(name));
    expect(existsSync(join(sandbox, 'evil'))).toBe(false);
  });

  it('rejects .. as a directory entry and as a pax path', async () => {
    await expectRejected([{ name: '../evil-dir', type: 'directory' }]);
    await expectRejected([{ name: 'innocent', pax: { path: '../../pax-evil' }, body: 'x' }], undefined, /".." component/);
    expect(existsSync(join(sandbox, 'evil-dir'))).toBe(false);
    expect(existsSync(join(tmpdir(), 'pax-evil'))).toBe(false);
  });

  it('rejects absolute paths', async () => {
    await expectRejected([{ name: '/etc/kiln-extract-evil', body: 'x' }], undefined, /absolute/);
    expect(existsSync('/etc/kiln-extract-evil')).toBe(false);
    await expectRejected([{ name: join(outside, 'abs-evil'), body: 'x' }], undefined, /absolute/);
    expect(existsSync(join(outside, 'abs-evil'))).toBe(false);
    await expectRejected([{ name: '//double', body: 'x' }], undefined, /absolute/);
  });

  it('rejects backslash tricks and drive paths', async () => {
    await expectRejected([{ name: '..\\..\\evil', body: 'x' }], undefined, /".." component/);
    await expectRejected([{ name: 'a\\..\\..\\evil', body: 'x' }], undefined, /".." component/);
    await expectRejected([{ name: '\\evil', body: 'x' }], undefined, /absolute/);
    await expectRejected([{ name: 'C:/evil', body: 'x' }], undefined, /absolute/);
  });

  it('rejects a NUL byte in the name (pax path) and in a symlink target', async () => {
    await expectRejected([{ name: 'placeholder', pax: { path: 'evil\u0000/../../x' }, body: 'x' }], undefined, /NUL/);
    await expectRejected([{ name: 's', type: 'symlink', linkname: 'placeholder', pax: { linkpath: 'a\u0000b' } }], undefined, /NUL/);
    expect(await readdir(target)).toEqual([]);
  });
});

describe('extractTarContained: symlinks', () => {
  it('creates a symlink to outside but never writes through it', async () => {
    await expectRejected(
      [
        { name: 'link', type: 'symlink', linkname: outside },
        { name: 'link/evil', body: 'pwned\n' },
      ],
      undefined,
      /parent "link" is a symlink/,
    );
    expect(existsSync(join(outside, 'evil'))).toBe(false);
    expect(await readlink(join(target, 'link'))).toBe(outside); // stored as-is
  });

  it('rejects a directory, symlink or hard link below a symlink', async () => {
    const link: Entry = { name: 'link', type: 'symlink', linkname: outside };
    await expectRejected([link, { name: 'link/sub/', type: 'directory' }]);
    await rm(target, { recursive: true });
    await expectRejected([link, { name: 'link/sub/deeper/f', body: 'x' }]);
    await rm(target, { recursive: true });
    await expectRejected([link, { name: 'link/s2', type: 'symlink', linkname: '/' }]);
    await rm(target, { recursive: true });
    await expectRejected([{ name: 'f', body: 'x' }, link, { name: 'link/h', type: 'link', linkname: 'f' }]);
    expect(existsSync(join(outside, 'sub'))).toBe(false);
  });

  it('rejects writes through a symlink to a ".." chain', async () => {
    await expectRejected([
      { name: 'up', type: 'symlink', linkname: '..' },
      { name: 'up/evil', body: 'x' },
    ]);
    await rm(target, { recursive: true });
    await expectRejected([
      { name: 'a/', type: 'directory' },
      { name: 'a/up2', type: 'symlink', linkname: '../../outside' },
      { name: 'a/up2/x', body: 'overwritten' },
    ]);
    await rm(target, { recursive: true });
    await expectRejected([
      { name: 'l1', type: 'symlink', linkname: '.' },
      { name: 'l1/l2', type: 'symlink', linkname: '..' },
      { name: 'l1/l2/evil', body: 'x' },
    ]);
    expect(await readFile(join(outside, 'x'), 'utf8')).toBe('original outside\n');
  });

  it('does not write a file through an existing symlink at its own path', async () => {
    await expectRejected(
      [
        { name: 's', type: 'symlink', linkname: join(outside, 'x') },
        { name: 's', body: 'overwritten through the link' },
      ],
      undefined,
      /cannot replace a symlink/,
    );
    await rm(target, { recursive: true });
    // Also a dangling link (O_CREAT would create the outside file).
    await expectRejected([
      { name: 's', type: 'symlink', linkname: join(outside, 'new-file') },
      { name: 's', body: 'created through the link' },
    ]);
    expect(existsSync(join(outside, 'new-file'))).toBe(false);
  });

  it('does not follow a symlink that was already in the target dir', async () => {
    await symlink(outside, join(target, 'pre'));
    await expectRejected([{ name: 'pre/x', body: 'overwritten' }], undefined, /symlink/);
    await expectRejected([{ name: 'pre/', type: 'directory', mode: 0o777 }], undefined, /directory cannot replace a symlink/);
    expect((await stat(outside)).mode & 0o777).not.toBe(0o777);
  });
});

describe('extractTarContained: hard links', () => {
  it.each([
    ['/etc/passwd', /absolute/],
    ['../outside/x', /".." component/],
    ['nope', /not a regular file extracted earlier/],
  ])('rejects a hard link to %j', async (linkname, rule) => {
    await expectRejected([{ name: 'h', type: 'link', linkname }], undefined, rule);
    expect(existsSync(join(target, 'h'))).toBe(false);
  });

  it('rejects a hard link to a symlink, a directory, or through a symlink', async () => {
    await expectRejected([
      { name: 's', type: 'symlink', linkname: join(outside, 'x') },
      { name: 'h', type: 'link', linkname: 's' },
    ]);
    await rm(target, { recursive: true });
    await expectRejected([
      { name: 'd/', type: 'directory' },
      { name: 'h', type: 'link', linkname: 'd' },
    ]);
    await rm(target, { recursive: true });
    await expectRejected([
      { name: 'link', type: 'symlink', linkname: outside },
      { name: 'h', type: 'link', linkname: 'link/x' },
    ]);
    expect(existsSync(join(target, 'h'))).toBe(false);
  });

  it('rejects a hard link to a file that was in the target dir before', async () => {
    await writeFile(join(target, 'pre'), 'not from the archive');
    await expectRejected([{ name: 'h', type: 'link', linkname: 'pre' }], undefined, /extracted earlier/);
  });
});

describe('extractTarContained: special entries and kind changes', () => {
  it.each([
    { name: 'dev/null', type: 'character-device' as const, devmajor: 1, devminor: 3 },
    { name: 'dev/sda', type: 'block-device' as const, devmajor: 8, devminor: 0 },
    { name: 'pipe', type: 'fifo' as const },
  ])('rejects a $type entry', async (entry) => {
    await expectRejected([entry], undefined, new RegExp(`is a ${entry.type}`));
    expect(existsSync(join(target, entry.name))).toBe(false);
  });

  it('rejects a directory over a file and a file over a directory', async () => {
    await expectRejected([{ name: 'a', body: 'x' }, { name: 'a/', type: 'directory' }], undefined, /directory cannot replace a regular file/);
    await rm(target, { recursive: true });
    await expectRejected([{ name: 'a', body: 'x' }, { name: 'a/b', body: 'y' }], undefined, /parent "a" is a regular file/);
    await rm(target, { recursive: true });
    await expectRejected([{ name: 'd/', type: 'directory' }, { name: 'd', body: 'x' }], undefined, /file cannot replace a directory/);
    await rm(target, { recursive: true });
    await expectRejected([{ name: 'd/', type: 'directory' }, { name: 'd', type: 'symlink', linkname: outside }], undefined, /symlink cannot replace a directory/);
    await rm(target, { recursive: true });
    await expectRejected([{ name: 'f', body: 'x' }, { name: 'f', type: 'symlink', linkname: outside }], undefined, /symlink cannot replace a regular file/);
  });

  it('rejects a file entry naming the target dir itself', async () => {
    await expectRejected([{ name: '.', body: 'x' }], undefined, /cannot replace the target directory/);
    await expectRejected([{ name: '.', type: 'symlink', linkname: outside }], undefined, /cannot replace the target directory/);
  });

  it('rejects a corrupt or truncated archive', async () => {
    const good = await tar([{ name: 'a.txt', body: 'x'.repeat(2000) }]);
    await expectRejected(good.subarray(0, 1000), undefined, /not a valid tar archive/);
    const corrupt = Buffer.from(good);
    corrupt[10] = 0x41; // breaks the header checksum
    await expectRejected(corrupt, undefined, /not a valid tar archive/);
  });
});

describe('extractTarContained: budgets', () => {
  it('rejects too many entries', async () => {
    const entries = Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, body: 'x' }));
    await expectRejected(entries, { budget: { maxEntries: 5 } }, /more than 5 entries/);
    expect((await readdir(target)).length).toBeLessThanOrEqual(5);
  });

  it('rejects one file bigger than the byte budget before writing it', async () => {
    await expectRejected([{ name: 'small', body: 'ok' }, { name: 'big', body: Buffer.alloc(5000, 1) }], { budget: { maxBytes: 1000 } }, /"big".*maxBytes/);
    expect(await readdir(target)).toEqual(['small']);
  });

  it('rejects many small files adding up past the byte budget', async () => {
    const entries = Array.from({ length: 20 }, (_, i) => ({ name: `d/f${String(i).padStart(2, '0')}`, body: Buffer.alloc(100, i) }));
    await expectRejected(entries, { budget: { maxBytes: 1000 } }, /"d\/f10".*maxBytes/);
    const written = await readdir(join(target, 'd'));
    let total = 0;
    for (const f of written) total += (await stat(join(target, 'd', f))).size;
    expect(total).toBeLessThanOrEqual(1000);
    expect(written).toHaveLength(10);
  });

  it('rejects paths that are too deep', async () => {
    await expectRejected([{ name: 'a/b/c/d/e/f', body: 'x' }], { budget: { maxDepth: 4 } }, /more than 4 components/);
    const deep = Array.from({ length: DEFAULT_EXTRACT_BUDGET.maxDepth + 1 }, () => 'd').join('/');
    await expectRejected([{ name: deep, body: 'x' }], undefined, /maxDepth/);
    expect(await readdir(target)).toEqual([]);
  });

  it('rejects names and link targets that are too long', async () => {
    const long = 'n'.repeat(DEFAULT_EXTRACT_BUDGET.maxPathBytes + 1);
    await expectRejected([{ name: long, body: 'x' }], undefined, /maxPathBytes/);
    await expectRejected([{ name: 's', type: 'symlink', linkname: long }], undefined, /maxPathBytes/);
    await expectRejected([{ name: 'abcdefghij', body: 'x' }], { budget: { maxPathBytes: 8 } }, /longer than 8 bytes/);
  });

  it('stops reading the source soon after a rejection (streams, does not buffer)', async () => {
    const buf = await tar([{ name: '../evil', body: 'x' }, { name: 'big', body: Buffer.alloc(8 << 20) }]);
    let read = 0;
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const c of chunked(buf, 16384)) {
        read += c.byteLength;
        yield c;
      }
    }
    await expect(extractTarContained(counted(), target)).rejects.toMatchObject({ code: 'E_ARCHIVE' });
    expect(read).toBeLessThan(1 << 20);
  });
});

describe('extractTarContained: normal archives', () => {
  it('extracts dirs, files, modes, symlinks and hard links byte-exact', async () => {
    const big = randomBytes(3 * 1024 * 1024 + 123);
    const longName = `deep/${'l'.repeat(150)}.txt`;
    const buf = await tar([
      { name: './', type: 'directory', mode: 0o755 },
      { name: 'bin/', type: 'directory', mode: 0o750 },
      { name: 'bin/tool', body: '#!/bin/sh\necho hi\n', mode: 0o755 },
      { name: 'bin/suid', body: 'x', mode: 0o4755 },
      { name: 'etc/conf', body: 'a=1\n', mode: 0o644 },
      { name: 'etc/empty', body: '', mode: 0o600 },
      { name: 'data/big.bin', body: big, mode: 0o644 },
      { name: longName, body: 'long\n' },
      { name: 'locked/', type: 'directory', mode: 0o500 }, // owner rwx is forced
      { name: 'locked/inner', body: 'still writable\n' },
      { name: 'wide/', type: 'directory', mode: 0o1777 },
      { name: 'lib/libfoo.so', type: 'symlink', linkname: 'libfoo.so.1' },
      { name: 'lib/libfoo.so.1', body: 'ELF', mode: 0o755 },
      { name: 'abs', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'bin/tool-hard', type: 'link', linkname: 'bin/tool' },
      { name: 'etc/conf', body: 'a=2\n', mode: 0o640 }, // last one wins
      { name: 'sys\\x2dfoo.slice', body: 'unit\n' }, // a plain backslash is an ordinary byte on POSIX
    ]);
    const result = await extractTarContained(Readable.from(chunked(buf, 10_000)), target);
    expect(result).toEqual({ entries: 17, files: 11, bytes: big.length + 18 + 1 + 4 + 5 + 15 + 3 + 4 + 5 });

    const file = (p: string) => readFile(join(target, p));
    const mode = async (p: string) => (await lstat(join(target, p))).mode & 0o7777;
    expect((await file('data/big.bin')).equals(big)).toBe(true);
    expect((await file('bin/tool')).toString()).toBe('#!/bin/sh\necho hi\n');
    expect(await mode('bin/tool')).toBe(0o755);
    expect(await mode('bin/suid')).toBe(0o755);
    expect(await mode('bin')).toBe(0o750);
    expect(await mode('locked')).toBe(0o700);
    expect(await mode('wide')).toBe(0o755);
    expect(await mode('etc/empty')).toBe(0o600);
    expect((await file('etc/empty')).length).toBe(0);
    expect((await file('etc/conf')).toString()).toBe('a=2\n');
    expect(await mode('etc/conf')).toBe(0o640);
    expect((await file(longName)).toString()).toBe('long\n');
    expect((await file('locked/inner')).toString()).toBe('still writable\n');
    expect(await readlink(join(target, 'lib/libfoo.so'))).toBe('libfoo.so.1');
    expect((await file('lib/libfoo.so')).toString()).toBe('ELF');
    expect(await readlink(join(target, 'abs'))).toBe('/etc/passwd');
    const [a, b] = await Promise.all([lstat(join(target, 'bin/tool')), lstat(join(target, 'bin/tool-hard'))]);
    expect(b.ino).toBe(a.ino);
    expect(b.nlink).toBe(2);
    expect((await file('sys\\x2dfoo.slice')).toString()).toBe('unit\n');
    expect(await snapshot(sandbox, ['target'])).toEqual(before);
  });

  it('skips a pax global header', async () => {
    const buf = retype(await tar([{ name: 'pax_global_header', body: '17 comment=hello\n' }, { name: 'a.txt', body: 'a\n' }]), 0, 'g');
    const result = await extractTarContained(chunked(buf), target);
    expect(result).toEqual({ entries: 1, files: 1, bytes: 2 });
    expect(await readdir(target)).toEqual(['a.txt']);
  });

  it('rejects an unknown entry type', async () => {
    const buf = retype(await tar([{ name: 'sparse', body: 'x' }]), 0, 'S');
    await expectRejected(buf, undefined, /unsupported entry type/);
  });

  it('creates the target dir if missing and accepts an empty archive', async () => {
    const fresh = join(sandbox, 'fresh', 'nested');
    const result = await extractTarContained(chunked(await tar([])), fresh);
    expect(result).toEqual({ entries: 0, files: 0, bytes: 0 });
    expect((await stat(fresh)).isDirectory()).toBe(true);
  });

  it('replaces a symlink with a symlink and a file with a hard link', async () => {
    await extractTarContained(
      chunked(
        await tar([
          { name: 's', type: 'symlink', linkname: 'one' },
          { name: 's', type: 'symlink', linkname: 'two' },
          { name: 'a', body: 'A' },
          { name: 'b', body: 'B' },
          { name: 'b', type: 'link', linkname: 'a' },
          { name: 'a', type: 'link', linkname: 'a' },
        ]),
      ),
      target,
    );
    expect(await readlink(join(target, 's'))).toBe('two');
    expect((await readFile(join(target, 'b'))).toString()).toBe('A');
    expect((await readFile(join(target, 'a'))).toString()).toBe('A');
  });

  it('propagates a source error unchanged', async () => {
    const buf = await tar([{ name: 'a', body: Buffer.alloc(100_000) }]);
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield buf.subarray(0, 20_000);
      throw new Error('connection reset');
    }
    await expect(extractTarContained(failing(), target)).rejects.toThrow('connection reset');
  });
});

describe('extractTarContained: stripPrefix', () => {
  it('strips the prefix from names and hard-link targets', async () => {
    const buf = await tar([
      { name: './', type: 'directory' },
      { name: 'out/', type: 'directory', mode: 0o700 },
      { name: 'out/a.txt', body: 'a\n' },
      { name: 'out/sub/b.txt', body: 'b\n', mode: 0o755 },
      { name: 'out/h', type: 'link', linkname: 'out/a.txt' },
    ]);
    const rootMode = (await stat(target)).mode;
    const result = await extractTarContained(chunked(buf), target, { stripPrefix: 'out' });
    expect(result.files).toBe(3);
    expect((await readFile(join(target, 'a.txt'))).toString()).toBe('a\n');
    expect((await readFile(join(target, 'sub/b.txt'))).toString()).toBe('b\n');
    expect((await lstat(join(target, 'h'))).ino).toBe((await lstat(join(target, 'a.txt'))).ino);
    expect(existsSync(join(target, 'out'))).toBe(false);
    expect((await stat(target)).mode).toBe(rootMode); // the prefix dir's 0700 is not applied to the root
  });

  it('rejects entries and hard links outside the prefix', async () => {
    await expectRejected([{ name: 'out/a.txt', body: 'a' }, { name: 'other/x', body: 'x' }], { stripPrefix: 'out' }, /"other\/x".*outside the strip prefix "out"/);
    expect(await readdir(target)).toEqual(['a.txt']);
    await expectRejected([{ name: 'out', body: 'x' }], { stripPrefix: 'out' }, /cannot replace the target directory/);
    await expectRejected([{ name: 'outx/a', body: 'x' }], { stripPrefix: 'out' }, /outside the strip prefix/);
    await expectRejected([{ name: 'out/h', type: 'link', linkname: 'a.txt' }], { stripPrefix: 'out' }, /hard link target "a.txt" is outside/);
  });

  it('rejects an invalid prefix', async () => {
    const err = await extractTarContained(chunked(await tar([])), target, { stripPrefix: '../out' }).catch((e: unknown) => e);
    expect(isKilnError(err, 'E_INVALID')).toBe(true);
  });
});

describe('normalizeEntryPath / safeJoin', () => {
  it('normalizes harmless names', () => {
    expect(normalizeEntryPath('./a/b')).toBe('a/b');
    expect(normalizeEntryPath('././a//./b/')).toBe('a/b');
    expect(normalizeEntryPath('./')).toBe('');
    expect(normalizeEntryPath('...')).toBe('...');
  });

  it('throws E_ARCHIVE for escaping names', () => {
    for (const bad of ['../a', '/a', 'a/../b', 'a\u0000b', '..\\a', 'C:\\a']) {
      expect(() => normalizeEntryPath(bad), bad).toThrow(expect.objectContaining({ code: 'E_ARCHIVE' }));
    }
  });

  it('joins inside the root only', () => {
    expect(safeJoin('/r', './a/b')).toBe('/r/a/b');
    expect(safeJoin('/r', './')).toBe('/r');
    expect(() => safeJoin('/r', '../x')).toThrow(expect.objectContaining({ code: 'E_ARCHIVE' }));
  });
});

describe('the sandbox snapshot', () => {
  it('notices a changed mode or a new file outside the target', async () => {
    await chmod(join(outside, 'x'), 0o444);
    expect(await snapshot(sandbox, ['target'])).not.toEqual(before);
    await chmod(join(outside, 'x'), 0o644);
    await writeFile(join(sandbox, 'new'), '');
    expect(await snapshot(sandbox, ['target'])).not.toEqual(before);
  });
});
