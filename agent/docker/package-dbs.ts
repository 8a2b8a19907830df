/**
 * Parsers for the package databases an image carries, for its SBOM (docker/sbom.ts):
 *
 * - dpkg: `/var/lib/dpkg/status` (paragraphs of `Field: value` lines; only those whose
 *   `Status` ends in `installed`) and the files of `/var/lib/dpkg/status.d/` (distroless
 *   images: one package per file, no `Status` field, so installed);
 * - apk: `/lib/apk/db/installed` (records of `K:value` lines: `P` name, `V` version,
 *   `A` arch, `L` licence);
 * - Python: `*.dist-info/METADATA` and `*.egg-info/PKG-INFO` (or an `.egg-info` file) in
 *   a `site-packages` or `dist-packages` directory (the headers before the first blank line:
 *   `Name`, `Version`, `License-Expression` or `License`);
 * - npm: `node_modules/<name>/package.json` and `node_modules/@scope/<name>/package.json`
 *   (`name`, `version`, `license`).
 *
 * Images are hostile input: every parser takes the file's bytes (already size-capped by
 * the caller), never throws, keeps at most `maxPackages` packages, accepts only names and
 * versions of bounded length without control characters, and reports what it skipped as
 * warnings (so a malformed database gives a partial SBOM, never a failure).
 */
import { posix } from 'node:path';

export type Ecosystem = 'deb' | 'apk' | 'pypi' | 'npm';

export interface FoundPackage {
  ecosystem: Ecosystem;
  name: string;
  version: string;
  /** Architecture the package database names (deb, apk). */
  arch?: string;
  /** Licence as the database states it (apk `L`, Python, npm); dpkg has none. */
  license?: string;
  /** The file it was read from, as an absolute path in the image. */
  source: string;
}

export interface ParseResult {
  packages: FoundPackage[];
  warnings: string[];
}

/** Longest name, version, arch or licence kept (longer: the package is skipped or the field dropped). */
export const MAX_FIELD = 256;
/** Headers of a Python METADATA file read before giving up on finding the blank line. */
const MAX_HEADER_LINES = 2000;

// Control characters (tab included) make a field unusable in a purl and in logs.
const CONTROL = /[\u0000-\u001f\u007f]/;

function cleanField(value: string | undefined): string | null {
  if (value === undefined) return null;
  const v = value.trim();
  if (v.length === 0 || v.length > MAX_FIELD || CONTROL.test(v)) return null;
  return v;
}

function optional(value: string | undefined): { arch?: string } | Record<string, never> {
  const v = cleanField(value);
  return v === null ? {} : { arch: v };
}

function licenseOf(value: string | undefined): { license?: string } {
  const v = value === undefined ? undefined : value.split('\n')[0];
  const clean = cleanField(v);
  return clean === null || /^unknown$/i.test(clean) ? {} : { license: clean };
}

/** Decodes bytes as UTF-8 (invalid sequences become U+FFFD) without a BOM. */
function text(data: Uint8Array): string {
  const s = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8');
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

/**
 * Splits RFC 822-style stanzas (`Field: value`, continuation lines starting with a space
 * or tab, stanzas separated by blank lines). Field names are lower-cased; a repeated field
 * keeps its first value (a Map, never a plain object keyed by input).
 */
export function parseStanzas(body: string, onBadLine: (line: number) => void): Array<Map<string, string>> {
  const out: Array<Map<string, string>> = [];
  let cur = new Map<string, string>();
  let last: string | null = null;
  const lines = body.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') {
      if (cur.size > 0) out.push(cur);
      cur = new Map();
      last = null;
      continue;
    }
    if (line[0] === ' ' || line[0] === '\t') {
      if (last !== null) {
        const prev = cur.get(last)!;
        // Continuations only matter for short fields; long descriptions are not kept whole.
        if (prev.length < 4 * MAX_FIELD) cur.set(last, `${prev}\n${line.trim()}`);
      } else onBadLine(i + 1);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) {
      onBadLine(i + 1);
      last = null;
      continue;
    }
    const key = line.slice(0, colon).trim().toLowerCase();
    if (!cur.has(key)) cur.set(key, line.slice(colon + 1).trim());
    last = key;
  }
  if (cur.size > 0) out.push(cur);
  return out;
}

/** Shared tail of the dpkg and apk parsers: bad lines and skipped stanzas as warnings. */
function warnBad(source: string, bad: number[], warnings: string[]): void {
  if (bad.length > 0) warnings.push(`${source}: ${bad.length} malformed line${bad.length > 1 ? 's' : ''} ignored (first at line ${bad[0]})`);
}

/**
 * A dpkg status file. `statusRequired`: false for the files of `status.d/`, whose
 * paragraphs have no `Status` field and are installed by being there.
 */
export function parseDpkgStatus(data: Uint8Array, source: string, maxPackages: number, statusRequired = true): ParseResult {
  const warnings: string[] = [];
  const bad: number[] = [];
  const packages: FoundPackage[] = [];
  let skipped = 0;
  for (const p of parseStanzas(text(data), (n) => bad.push(n))) {
    const status = p.get('status');
    // `install ok installed`: the third word is the state (half-installed, config-files… are not).
    if (status !== undefined ? status.trim().split(/\s+/).at(-1) !== 'installed' : statusRequired) continue;
    const name = cleanField(p.get('package'));
    const version = cleanField(p.get('version'));
    if (name === null || version === null) {
      skipped++;
      continue;
    }
    if (packages.length >= maxPackages) {
      warnings.push(`${source}: more than ${maxPackages} packages; the rest are left out`);
      break;
    }
    packages.push({ ecosystem: 'deb', name, version, ...optional(p.get('architecture')), source });
  }
  warnBad(source, bad, warnings);
  if (skipped > 0) warnings.push(`${source}: ${skipped} paragraph${skipped > 1 ? 's' : ''} without a valid Package or Version skipped`);
  return { packages, warnings };
}

/** apk's installed database (`P:`, `V:`, `A:`, `L:` lines; records separated by blank lines). */
export function parseApkInstalled(data: Uint8Array, source: string, maxPackages: number): ParseResult {
  const warnings: string[] = [];
  const packages: FoundPackage[] = [];
  let bad = 0;
  let firstBad = 0;
  let skipped = 0;
  let cur = new Map<string, string>();
  const lines = text(data).split(/\r?\n/);
  const flush = (): boolean => {
    if (cur.size === 0) return true;
    const name = cleanField(cur.get('P'));
    const version = cleanField(cur.get('V'));
    const rec = cur;
    cur = new Map();
    if (name === null || version === null) {
      skipped++;
      return true;
    }
    if (packages.length >= maxPackages) {
      warnings.push(`${source}: more than ${maxPackages} packages; the rest are left out`);
      return false;
    }
    packages.push({ ecosystem: 'apk', name, version, ...optional(rec.get('A')), ...licenseOf(rec.get('L')), source });
    return true;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') {
      if (!flush()) break;
      continue;
    }
    if (line.length < 2 || line[1] !== ':') {
      if (bad++ === 0) firstBad = i + 1;
      continue;
    }
    const key = line[0]!;
    if (!cur.has(key)) cur.set(key, line.slice(2));
  }
  if (cur.size > 0) flush();
  if (bad > 0) warnings.push(`${source}: ${bad} malformed line${bad > 1 ? 's' : ''} ignored (first at line ${firstBad})`);
  if (skipped > 0) warnings.push(`${source}: ${skipped} record${skipped > 1 ? 's' : ''} without a valid P: or V: skipped`);
  return { packages, warnings };
}

/** A Python core-metadata file (METADATA, PKG-INFO): one package, from the headers. */
export function parsePythonMetadata(data: Uint8Array, source: string): ParseResult {
  const head = text(data).split(/\r?\n/, MAX_HEADER_LINES);
  const end = head.findIndex((l) => l.trim() === '');
  const stanzas = parseStanzas((end >= 0 ? head.slice(0, end) : head).join('\n'), () => {});
  const h = stanzas[0] ?? new Map<string, string>();
  const name = cleanField(h.get('name'));
  const version = cleanField(h.get('version'));
  if (name === null || version === null) return { packages: [], warnings: [`${source}: no valid Name and Version headers; skipped`] };
  return { packages: [{ ecosystem: 'pypi', name, version, ...licenseOf(h.get('license-expression') ?? h.get('license')), source }], warnings: [] };
}

/** An npm package.json: one package (`name`, `version`, `license`). */
export function parseNpmPackageJson(data: Uint8Array, source: string): ParseResult {
  let doc: unknown;
  try {
    doc = JSON.parse(text(data));
  } catch {
    return { packages: [], warnings: [`${source}: not valid JSON; skipped`] };
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { packages: [], warnings: [`${source}: not a JSON object; skipped`] };
  const o = doc as { name?: unknown; version?: unknown; license?: unknown };
  const name = typeof o.name === 'string' ? cleanField(o.name) : null;
  const version = typeof o.version === 'string' ? cleanField(o.version) : null;
  if (name === null || version === null) return { packages: [], warnings: [`${source}: no valid name and version; skipped`] };
  const lic = typeof o.license === 'string' ? o.license : typeof o.license === 'object' && o.license !== null && typeof (o.license as { type?: unknown }).type === 'string' ? (o.license as { type: string }).type : undefined;
  return { packages: [{ ecosystem: 'npm', name, version, ...licenseOf(lic), source }], warnings: [] };
}

/** Which database a path in the image is (relative, as a tar entry names it), if any. */
export type DbKind = 'dpkg-status' | 'dpkg-status-d' | 'apk-installed' | 'python' | 'npm' | 'os-release';

/** Normalises a tar entry name to an absolute image path (`./usr/x` → `/usr/x`); null when it is odd. */
export function imagePath(entryName: string): string | null {
  if (entryName.includes('\0')) return null;
  const p = posix.normalize(`/${entryName}`);
  return p.startsWith('/') && !p.split('/').includes('..') ? p.replace(/\/$/, '') : null;
}

const PY_DIR = /\/(site|dist)-packages\/[^/]+\.(dist-info|egg-info)(\/(METADATA|PKG-INFO))?$/;
const NPM = /\/node_modules\/(@[^/]+\/)?[^/@][^/]*\/package\.json$/;

/** The database kind of an absolute image path, or null for every other file. */
export function dbKindOf(path: string): DbKind | null {
  if (path === '/var/lib/dpkg/status') return 'dpkg-status';
  if (path.startsWith('/var/lib/dpkg/status.d/') && path.split('/').length === 6 && !path.endsWith('.md5sums')) return 'dpkg-status-d';
  if (path === '/lib/apk/db/installed' || path === '/usr/lib/apk/db/installed') return 'apk-installed';
  if (path === '/etc/os-release' || path === '/usr/lib/os-release') return 'os-release';
  const py = PY_DIR.exec(path);
  // dist-info needs its METADATA; egg-info is a directory with PKG-INFO, or a file itself.
  if (py && ((py[2] === 'dist-info' && py[4] === 'METADATA') || (py[2] === 'egg-info' && (py[4] === 'PKG-INFO' || py[3] === undefined)))) return 'python';
  if (NPM.test(path)) return 'npm';
  return null;
}

/** Parses one database file found in the image. */
export function parseDb(kind: Exclude<DbKind, 'os-release'>, data: Uint8Array, source: string, maxPackages: number): ParseResult {
  switch (kind) {
    case 'dpkg-status':
      return parseDpkgStatus(data, source, maxPackages);
    case 'dpkg-status-d':
      return parseDpkgStatus(data, source, maxPackages, false);
    case 'apk-installed':
      return parseApkInstalled(data, source, maxPackages);
    case 'python':
      return parsePythonMetadata(data, source);
    case 'npm':
      return parseNpmPackageJson(data, source);
  }
}

/** `ID` and `VERSION_ID` of an os-release file (for the purl namespace and `distro` qualifier). */
export function parseOsRelease(data: Uint8Array): { id: string; versionId: string | null } | null {
  const fields = new Map<string, string>();
  for (const line of text(data).split(/\r?\n/, 200)) {
    const m = /^([A-Z_]+)=("?)([^"]*)\2\s*$/.exec(line);
    if (m && !fields.has(m[1]!)) fields.set(m[1]!, m[3]!);
  }
  const id = cleanField(fields.get('ID'));
  if (id === null || !/^[a-z0-9._-]+$/.test(id)) return null;
  const v = cleanField(fields.get('VERSION_ID'));
  return { id, versionId: v !== null && /^[A-Za-z0-9._~-]+$/.test(v) ? v : null };
}
