/**
 * Extracts an untrusted tar stream into a directory without ever writing outside it: the
 * CLI uses it for downloaded artifacts, the agent for files read out of a build.
 *
 * Containment rules (any violation rejects with `KilnError('E_ARCHIVE')` naming the entry):
 * - Entry names are relative: no absolute or drive paths, no `..` components (also not
 *   when split on backslashes), no NUL bytes. `./`, `.` and empty components are dropped.
 * - Every parent of an entry must be a real directory (lstat, never followed); missing
 *   parents are created 0755. So nothing is ever written below a symlink, and a symlink
 *   entry followed by an entry below it is rejected.
 * - Symlinks are created with their target stored as-is and are never followed here.
 * - Hard links must point at a regular file extracted earlier from the same archive.
 * - Character/block devices, FIFOs and unknown entry types are rejected (not skipped: an
 *   artifact holding them is suspicious and a silent hole in it would be worse).
 * - An existing path is only replaced by an entry of the same kind: a file or hard link
 *   replaces a regular file (unlink, then a fresh O_EXCL|O_NOFOLLOW create), a symlink
 *   replaces a symlink, a directory merges into a directory. Anything else is rejected,
 *   so a file is never written through a symlink.
 * - Budgets (entries, data bytes, path depth, path bytes) are checked before writing.
 *
 * Modes: files get `mode & 0o777`, directories `(mode & 0o755) | 0o700`, applied exactly
 * (no umask); no setuid/setgid/sticky, no chown, mtimes are not restored.
 *
 * On failure whatever was already written stays inside `targetDir`: callers extract into a
 * fresh temp dir and delete it when this rejects. The checks assume nothing else writes to
 * `targetDir` while the extraction runs.
 */
import { constants as fsc, type Stats } from 'node:fs';
import { link, lstat, mkdir, open, realpath, symlink, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { Extract, Header } from 'tar-stream';
import { coerceError, errnoCode, KilnError } from '../errors.js';

export interface ExtractBudget {
  /** Most entries (of any type) in the archive. */
  maxEntries: number;
  /** Most bytes of entry data (file contents) in total. */
  maxBytes: number;
  /** Most path components of an entry (after `stripPrefix`). */
  maxDepth: number;
  /** Longest entry name or link target, in UTF-8 bytes. */
  maxPathBytes: number;
}

export const DEFAULT_EXTRACT_BUDGET: Readonly<ExtractBudget> = Object.freeze({
  maxEntries: 1_000_000,
  maxBytes: 64 * 1024 ** 3,
  maxDepth: 64,
  maxPathBytes: 4096,
});

export interface ExtractOptions {
  /** Overrides parts of `DEFAULT_EXTRACT_BUDGET`. */
  budget?: Partial<ExtractBudget>;
  /** Leading path (e.g. `out`) removed from every entry name and hard-link target; entries outside it are rejected. */
  stripPrefix?: string;
  /** Devices and FIFOs are never extracted; the option only documents that. */
  allowDevices?: false;
}

export interface ExtractResult {
  /** Entries read from the archive (including skipped root directories). */
  entries: number;
  /** Regular files written, hard links included. */
  files: number;
  /** Bytes of entry data read. */
  bytes: number;
}

type Source = AsyncIterable<Uint8Array> | NodeJS.ReadableStream;
type Kind = 'dir' | 'file' | 'symlink';

const WINDOWS = process.platform === 'win32';
const WRITE_NEW = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | (fsc.O_NOFOLLOW ?? 0);
const OPEN_DIR = fsc.O_RDONLY | (fsc.O_DIRECTORY ?? 0) | (fsc.O_NOFOLLOW ?? 0);

/** Quotes a name for a message: JSON escapes control bytes, long names are cut. */
function show(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
}

function rejectEntry(name: string, rule: string): KilnError {
  return new KilnError('E_ARCHIVE', `tar entry ${show(name)}: ${rule}`);
}

function invalidArchive(err: unknown): KilnError {
  return new KilnError('E_ARCHIVE', `not a valid tar archive: ${coerceError(err).message}`, { cause: err });
}

/** An entry's data; failing to read it (a corrupt or truncated archive) is E_ARCHIVE. */
async function* dataOf(body: AsyncIterable<unknown>): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  for (;;) {
    let step: IteratorResult<unknown>;
    try {
      step = await it.next();
    } catch (err) {
      throw invalidArchive(err);
    }
    if (step.done) return;
    yield step.value as Uint8Array;
  }
}

/** Why `name` is not an acceptable relative entry path, or undefined if it is. */
function pathProblem(name: string): string | undefined {
  if (name.includes('\0')) return 'path contains a NUL byte';
  if (name.startsWith('/') || isAbsolute(name)) return 'path is absolute';
  if (name.startsWith('\\') || /^[A-Za-z]:/.test(name)) return 'path is absolute (Windows style)';
  if (WINDOWS && /[\\:]/.test(name)) return 'path contains a backslash or colon';
  if (name.split(/[\\/]/).includes('..')) return 'path has a ".." component';
  return undefined;
}

function splitPath(name: string): string[] {
  return name.split('/').filter((c) => c !== '' && c !== '.');
}

/**
 * The canonical relative form of an entry name: leading `./`, `.` and empty components
 * removed (`./a//b/` -> `a/b`, `./` -> ``). Throws E_ARCHIVE for names that could
 * escape (absolute, `..`, NUL, backslash tricks).
 */
export function normalizeEntryPath(name: string): string {
  const problem = pathProblem(name);
  if (problem !== undefined) throw rejectEntry(name, problem);
  return splitPath(name).join('/');
}

/** `root` joined with the normalized `entryPath`; throws E_ARCHIVE unless the result is inside `root`. */
export function safeJoin(root: string, entryPath: string): string {
  const base = resolve(root);
  const full = join(base, normalizeEntryPath(entryPath));
  const rel = relative(base, full);
  if (rel === '..' || rel.startsWith('../') || rel.startsWith('..\\') || isAbsolute(rel)) {
    throw rejectEntry(entryPath, 'path resolves outside the target directory');
  }
  return full;
}

function resolveBudget(partial: Partial<ExtractBudget> | undefined): ExtractBudget {
  const budget: ExtractBudget = { ...DEFAULT_EXTRACT_BUDGET };
  for (const [key, value] of Object.entries(partial ?? {}) as [keyof ExtractBudget, number | undefined][]) {
    if (value === undefined) continue;
    if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
      throw new KilnError('E_INVALID', `extract budget ${key} must be a non-negative number`);
    }
    budget[key] = value;
  }
  return budget;
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
}

function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isDirectory()) return 'a directory';
  if (st.isFile()) return 'a regular file';
  return 'a special file';
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, offset, chunk.byteLength - offset);
    offset += bytesWritten;
  }
}

/** Writes the entries of one archive under `root` (a real, absolute directory). */
class ContainedWriter {
  entries = 0;
  files = 0;
  bytes = 0;
  /** What this extraction created or verified, by relative path. Directories are never removed or replaced, so 'dir' stays true. */
  private readonly kinds = new Map<string, Kind>();

  constructor(
    private readonly root: string,
    private readonly budget: ExtractBudget,
    private readonly prefix: string[],
  ) {}

  async entry(header: Header, body: AsyncIterable<unknown>): Promise<void> {
    const type = header.type as string | null;
    const name = header.name;
    // tar-stream folds these into the next header; should one surface, it carries no file.
    if (type === 'pax-global-header' || type === 'pax-header' || type === 'gnu-long-path' || type === 'gnu-long-link-path') {
      await this.drain(name, body);
      return;
    }
    this.entries++;
    if (this.entries > this.budget.maxEntries) throw rejectEntry(name, `archive has more than ${this.budget.maxEntries} entries (budget maxEntries)`);
    const parts = this.locate(name, type === 'directory');
    // Declared sizes are checked up front, so an over-budget file is never started.
    const size = header.size ?? 0;
    if (type !== 'directory' && size > 0 && this.bytes + size > this.budget.maxBytes) {
      throw rejectEntry(name, `archive data exceeds ${this.budget.maxBytes} bytes (budget maxBytes)`);
    }
    switch (type) {
      case 'file':
      case 'contiguous-file':
        if (parts === null || parts.length === 0) throw rejectEntry(name, 'a file cannot replace the target directory');
        return this.file(name, parts, header.mode, body);
      case 'directory':
        // The root itself (`./`, or the stripPrefix directory) keeps the caller's mode.
        if (parts === null || parts.length === 0) return;
        return this.directory(name, parts, header.mode);
      case 'symlink':
        await this.drain(name, body);
        if (parts === null || parts.length === 0) throw rejectEntry(name, 'a symlink cannot replace the target directory');
        return this.symlink(name, parts, header.linkname ?? '');
      case 'link':
        await this.drain(name, body);
        if (parts === null || parts.length === 0) throw rejectEntry(name, 'a hard link cannot replace the target directory');
        return this.hardlink(name, parts, header.linkname ?? '');
      case 'character-device':
      case 'block-device':
      case 'fifo':
        throw rejectEntry(name, `is a ${type}; devices and FIFOs are never extracted`);
      default:
        throw rejectEntry(name, `has an unsupported entry type (${type ?? 'unknown typeflag'})`);
    }
  }

  /**
   * The entry's path components below the root after the prefix is stripped; null for a
   * directory entry that is an ancestor of the prefix (nothing to create).
   */
  private locate(name: string, isDir: boolean): string[] | null {
    if (Buffer.byteLength(name) > this.budget.maxPathBytes) {
      throw rejectEntry(name, `path is longer than ${this.budget.maxPathBytes} bytes (budget maxPathBytes)`);
    }
    const problem = pathProblem(name);
    if (problem !== undefined) throw rejectEntry(name, problem);
    const all = splitPath(name);
    const under = all.length >= this.prefix.length && this.prefix.every((c, i) => all[i] === c);
    if (!under) {
      const ancestor = all.length < this.prefix.length && all.every((c, i) => this.prefix[i] === c);
      if (isDir && ancestor) return null;
      throw rejectEntry(name, `path is outside the strip prefix ${show(this.prefix.join('/'))}`);
    }
    const parts = all.slice(this.prefix.length);
    if (parts.length > this.budget.maxDepth) {
      throw rejectEntry(name, `path has more than ${this.budget.maxDepth} components (budget maxDepth)`);
    }
    return parts;
  }

  /** Counts entry data against the byte budget before it is written. */
  private count(name: string, n: number): void {
    this.bytes += n;
    if (this.bytes > this.budget.maxBytes) throw rejectEntry(name, `archive data exceeds ${this.budget.maxBytes} bytes (budget maxBytes)`);
  }

  private async drain(name: string, body: AsyncIterable<unknown>): Promise<void> {
    for await (const chunk of dataOf(body)) this.count(name, chunk.byteLength);
  }

  /** Makes sure every parent of `parts` is a real directory inside the root, creating missing ones. */
  private async parents(name: string, parts: string[]): Promise<void> {
    let rel = '';
    for (let i = 0; i < parts.length - 1; i++) {
      rel = i === 0 ? parts[0]! : `${rel}/${parts[i]!}`;
      const known = this.kinds.get(rel);
      if (known === 'dir') continue;
      if (known !== undefined) throw rejectEntry(name, `parent ${show(rel)} is a ${known === 'file' ? 'regular file' : 'symlink'}, not a directory`);
      const abs = join(this.root, rel);
      const st = await lstatOrNull(abs);
      if (st === null) await mkdir(abs, 0o755);
      else if (!st.isDirectory()) throw rejectEntry(name, `parent ${show(rel)} is ${kindOf(st)}, not a directory${st.isSymbolicLink() ? ' (symlinks are never followed)' : ''}`);
      this.kinds.set(rel, 'dir');
    }
  }

  private async file(name: string, parts: string[], mode: number | undefined, body: AsyncIterable<unknown>): Promise<void> {
    await this.parents(name, parts);
    const rel = parts.join('/');
    const abs = join(this.root, rel);
    const existing = await lstatOrNull(abs);
    if (existing !== null) {
      if (!existing.isFile()) throw rejectEntry(name, `a regular file cannot replace ${kindOf(existing)}`);
      await unlink(abs);
    }
    // O_EXCL|O_NOFOLLOW: fails rather than follow anything that appeared at the path.
    const fh = await open(abs, WRITE_NEW, 0o600);
    this.kinds.set(rel, 'file');
    try {
      for await (const chunk of dataOf(body)) {
        this.count(name, chunk.byteLength);
        await writeAll(fh, chunk);
      }
      await fh.chmod((mode ?? 0o644) & 0o777);
    } finally {
      await fh.close();
    }
    this.files++;
  }

  private async directory(name: string, parts: string[], mode: number | undefined): Promise<void> {
    await this.parents(name, parts);
    const rel = parts.join('/');
    const abs = join(this.root, rel);
    const existing = await lstatOrNull(abs);
    if (existing === null) await mkdir(abs, 0o700);
    else if (!existing.isDirectory()) throw rejectEntry(name, `a directory cannot replace ${kindOf(existing)}`);
    this.kinds.set(rel, 'dir');
    const fh = await open(abs, OPEN_DIR);
    try {
      await fh.chmod(((mode ?? 0o755) & 0o755) | 0o700);
    } finally {
      await fh.close();
    }
  }

  private async symlink(name: string, parts: string[], target: string): Promise<void> {
    if (target === '') throw rejectEntry(name, 'symlink has an empty target');
    if (target.includes('\0')) throw rejectEntry(name, 'symlink target contains a NUL byte');
    if (Buffer.byteLength(target) > this.budget.maxPathBytes) {
      throw rejectEntry(name, `symlink target is longer than ${this.budget.maxPathBytes} bytes (budget maxPathBytes)`);
    }
    await this.parents(name, parts);
    const rel = parts.join('/');
    const abs = join(this.root, rel);
    const existing = await lstatOrNull(abs);
    if (existing !== null) {
      if (!existing.isSymbolicLink()) throw rejectEntry(name, `a symlink cannot replace ${kindOf(existing)}`);
      await unlink(abs);
    }
    await symlink(target, abs);
    this.kinds.set(rel, 'symlink');
  }

  private async hardlink(name: string, parts: string[], target: string): Promise<void> {
    const bad = (why: string) => rejectEntry(name, `hard link target ${show(target)} ${why}`);
    if (Buffer.byteLength(target) > this.budget.maxPathBytes) throw bad(`is longer than ${this.budget.maxPathBytes} bytes (budget maxPathBytes)`);
    const problem = pathProblem(target);
    if (problem !== undefined) throw bad(`is not allowed: ${problem}`);
    const all = splitPath(target);
    if (!this.prefix.every((c, i) => all[i] === c)) throw bad(`is outside the strip prefix ${show(this.prefix.join('/'))}`);
    const targetRel = all.slice(this.prefix.length).join('/');
    if (this.kinds.get(targetRel) !== 'file') throw bad('is not a regular file extracted earlier from this archive');
    const targetAbs = join(this.root, targetRel);
    const targetSt = await lstatOrNull(targetAbs);
    if (targetSt === null || !targetSt.isFile()) throw bad('is no longer a regular file');
    await this.parents(name, parts);
    const rel = parts.join('/');
    const abs = join(this.root, rel);
    const existing = await lstatOrNull(abs);
    if (existing !== null) {
      if (!existing.isFile()) throw rejectEntry(name, `a hard link cannot replace ${kindOf(existing)}`);
      if (existing.ino === targetSt.ino && existing.dev === targetSt.dev) {
        this.files++;
        return; // already the same file (e.g. a link to itself)
      }
      await unlink(abs);
    }
    await link(targetAbs, abs);
    this.kinds.set(rel, 'file');
    this.files++;
  }
}

/** Feeds the source into the tar parser, honouring its backpressure; stops once the parser is destroyed. */
async function feed(source: Source, ex: Extract): Promise<void> {
  for await (const chunk of source as AsyncIterable<unknown>) {
    if (ex.destroying || ex.destroyed) return;
    if (typeof chunk === 'string') throw new TypeError('extractTarContained: the source yielded a string; pass a binary stream');
    const data = chunk as Uint8Array;
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (!ex.write(buf)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          ex.off('drain', done);
          ex.off('close', done);
          resolve();
        };
        ex.on('drain', done);
        ex.on('close', done);
      });
    }
  }
  if (!ex.destroying && !ex.destroyed) ex.end(undefined);
}

function stopSource(source: Source): void {
  const destroy = (source as { destroy?: unknown }).destroy;
  if (typeof destroy === 'function') (destroy as () => void).call(source);
}

/**
 * Streams the tar `source` into `targetDir` (created if missing) under the containment
 * rules above. Resolves with counts; rejects with E_ARCHIVE for a hostile, malformed or
 * over-budget archive, with the source's own error if reading it fails, or with the
 * filesystem error if writing fails. Partial output stays inside `targetDir`.
 */
export async function extractTarContained(source: Source, targetDir: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const budget = resolveBudget(opts.budget);
  if (opts.allowDevices !== undefined && opts.allowDevices !== false) {
    throw new KilnError('E_INVALID', 'extractTarContained: devices are never extracted (allowDevices must be false)');
  }
  const prefixProblem = opts.stripPrefix === undefined ? undefined : pathProblem(opts.stripPrefix);
  if (prefixProblem !== undefined) throw new KilnError('E_INVALID', `stripPrefix ${show(opts.stripPrefix ?? '')}: ${prefixProblem}`);
  const prefix = splitPath(opts.stripPrefix ?? '');

  await mkdir(targetDir, { recursive: true });
  const root = await realpath(targetDir);
  const writer = new ContainedWriter(root, budget, prefix);

  // tar-stream is loaded by the first extraction: an idle agent does not carry it
  const { extract } = await import('tar-stream');
  const ex = extract();
  const entries = ex[Symbol.asyncIterator]() as AsyncIterator<{ header: Header } & AsyncIterable<unknown>>;
  let sourceFailure: { error: unknown } | undefined;
  const feeding = feed(source, ex).catch((error: unknown) => {
    sourceFailure = { error };
    ex.destroy(coerceError(error));
  });
  try {
    for (;;) {
      let step: IteratorResult<{ header: Header } & AsyncIterable<unknown>>;
      try {
        step = await entries.next();
      } catch (err) {
        throw invalidArchive(err);
      }
      if (step.done) break;
      await writer.entry(step.value.header, step.value);
    }
    await feeding;
    if (sourceFailure !== undefined) throw sourceFailure.error;
  } catch (err) {
    ex.destroy();
    stopSource(source);
    throw sourceFailure !== undefined ? sourceFailure.error : err;
  }
  return { entries: writer.entries, files: writer.files, bytes: writer.bytes };
}
