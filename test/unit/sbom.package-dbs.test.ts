/**
 * The package-database parsers behind image SBOMs (agent/docker/package-dbs.ts), on real
 * file formats and on hostile ones: dpkg status (installed vs removed, continuation lines,
 * status.d files without Status), apk installed, Python METADATA/PKG-INFO headers, npm
 * package.json; malformed lines and records give warnings and a partial result, never a
 * throw; the package bound cuts a database short with a warning; fields with control
 * characters or over the length bound are refused; which paths count as databases.
 */
import { describe, expect, it } from 'vitest';
import { MAX_FIELD, dbKindOf, imagePath, parseApkInstalled, parseDpkgStatus, parseNpmPackageJson, parseOsRelease, parsePythonMetadata } from '../../agent/docker/package-dbs.js';

const b = (s: string) => Buffer.from(s, 'utf8');

const DPKG = `Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.
 .
 More text.

Package: removed-pkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: half
Status: install reinstreq half-installed
Version: 0.1

Package: zlib1g
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 1:1.2.13.dfsg-1
`;

describe('dpkg status', () => {
  it('lists installed packages with version and architecture, not removed or half-installed ones', () => {
    const r = parseDpkgStatus(b(DPKG), '/var/lib/dpkg/status', 100);
    expect(r.packages).toEqual([
      { ecosystem: 'deb', name: 'libc6', version: '2.36-9+deb12u4', arch: 'amd64', source: '/var/lib/dpkg/status' },
      { ecosystem: 'deb', name: 'zlib1g', version: '1:1.2.13.dfsg-1', arch: 'amd64', source: '/var/lib/dpkg/status' },
    ]);
    expect(r.warnings).toEqual([]);
  });

  it('status.d files (no Status field) are installed; the main status file needs one', () => {
    const one = 'Package: base-files\nVersion: 12.4\nArchitecture: amd64\n';
    expect(parseDpkgStatus(b(one), '/var/lib/dpkg/status.d/base', 10, false).packages.map((p) => p.name)).toEqual(['base-files']);
    expect(parseDpkgStatus(b(one), '/var/lib/dpkg/status', 10).packages).toEqual([]);
  });

  it('CRLF line ends and a BOM are read the same', () => {
    const r = parseDpkgStatus(b(`\ufeff${DPKG.replace(/\n/g, '\r\n')}`), 's', 100);
    expect(r.packages.map((p) => `${p.name}=${p.version}`)).toEqual(['libc6=2.36-9+deb12u4', 'zlib1g=1:1.2.13.dfsg-1']);
  });

  it('malformed lines and paragraphs without Package or Version are warnings; the rest stands', () => {
    const bad = `garbage line without colon\nPackage: ok\nStatus: install ok installed\nVersion: 1\n\nStatus: install ok installed\nVersion: 2\n\nPackage: noversion\nStatus: install ok installed\n\n\u0000\u0001binary\nPackage: ctl\u0007\nStatus: install ok installed\nVersion: 1\n`;
    const r = parseDpkgStatus(b(bad), '/var/lib/dpkg/status', 100);
    expect(r.packages.map((p) => p.name)).toEqual(['ok']);
    expect(r.warnings).toHaveLength(2);
    expect(r.warnings[0]).toMatch(/^\/var\/lib\/dpkg\/status: 2 malformed lines ignored \(first at line 1\)$/);
    expect(r.warnings[1]).toMatch(/3 paragraphs without a valid Package or Version skipped/);
  });

  it('keeps at most maxPackages and says the rest are left out', () => {
    const many = Array.from({ length: 50 }, (_, i) => `Package: p${i}\nStatus: install ok installed\nVersion: ${i}\n`).join('\n');
    const r = parseDpkgStatus(b(many), 's', 10);
    expect(r.packages).toHaveLength(10);
    expect(r.warnings).toEqual(['s: more than 10 packages; the rest are left out']);
  });

  it('a field longer than the bound is refused; random bytes never throw', () => {
    const long = `Package: ${'x'.repeat(MAX_FIELD + 1)}\nStatus: install ok installed\nVersion: 1\n`;
    expect(parseDpkgStatus(b(long), 's', 10).packages).toEqual([]);
    const noise = Buffer.alloc(64 * 1024);
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 7919 + 13) % 256;
    expect(() => parseDpkgStatus(noise, 's', 10)).not.toThrow();
    expect(() => parseApkInstalled(noise, 's', 10)).not.toThrow();
    expect(() => parsePythonMetadata(noise, 's')).not.toThrow();
    expect(parseNpmPackageJson(noise, 's').packages).toEqual([]);
  });
});

describe('apk installed', () => {
  const APK = `C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\nL:MIT\no:musl\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\nF:bin\nR:busybox\n\nP:nover\nA:x86_64\n`;
  it('lists P/V/A/L of each record; a record without V is skipped with a warning', () => {
    const r = parseApkInstalled(b(APK), '/lib/apk/db/installed', 100);
    expect(r.packages).toEqual([
      { ecosystem: 'apk', name: 'musl', version: '1.2.4-r2', arch: 'x86_64', license: 'MIT', source: '/lib/apk/db/installed' },
      { ecosystem: 'apk', name: 'busybox', version: '1.36.1-r5', arch: 'x86_64', license: 'GPL-2.0-only', source: '/lib/apk/db/installed' },
    ]);
    expect(r.warnings).toEqual(['/lib/apk/db/installed: 1 record without a valid P: or V: skipped']);
  });

  it('malformed lines are counted; the bound applies', () => {
    const r = parseApkInstalled(b(`not a record line\nP:a\nV:1\n\nP:b\nV:2\n\nP:c\nV:3\n`), 'f', 2);
    expect(r.packages.map((p) => p.name)).toEqual(['a', 'b']);
    expect(r.warnings).toEqual(['f: more than 2 packages; the rest are left out', 'f: 1 malformed line ignored (first at line 1)']);
  });
});

describe('Python metadata', () => {
  it('reads Name, Version and License-Expression (or License) from the headers only', () => {
    const meta = `Metadata-Version: 2.4\nName: Requests_Toolbelt\nVersion: 1.0.0\nLicense-Expression: Apache-2.0\nLicense: ignored\n\nName: not-this\nVersion: 9\n`;
    expect(parsePythonMetadata(b(meta), '/p/METADATA').packages).toEqual([{ ecosystem: 'pypi', name: 'Requests_Toolbelt', version: '1.0.0', license: 'Apache-2.0', source: '/p/METADATA' }]);
    const pkgInfo = `Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\nLicense: UNKNOWN\n`;
    expect(parsePythonMetadata(b(pkgInfo), '/p/PKG-INFO').packages).toEqual([{ ecosystem: 'pypi', name: 'six', version: '1.16.0', source: '/p/PKG-INFO' }]);
  });

  it('a body before the headers end does not count; no Name or Version is a warning', () => {
    expect(parsePythonMetadata(b('\nName: x\nVersion: 1\n'), 'm')).toEqual({ packages: [], warnings: ['m: no valid Name and Version headers; skipped'] });
    expect(parsePythonMetadata(b('Name: x\n'), 'm').packages).toEqual([]);
  });
});

describe('npm package.json', () => {
  it('reads name, version and license (string or {type})', () => {
    expect(parseNpmPackageJson(b('{"name":"@scope/pkg","version":"2.0.1","license":"MIT"}'), 'f').packages).toEqual([{ ecosystem: 'npm', name: '@scope/pkg', version: '2.0.1', license: 'MIT', source: 'f' }]);
    expect(parseNpmPackageJson(b('{"name":"old","version":"0.1.0","license":{"type":"BSD"}}'), 'f').packages[0]!.license).toBe('BSD');
  });

  it('bad JSON, arrays, missing or non-string fields are warnings', () => {
    expect(parseNpmPackageJson(b('{"name":'), 'f').warnings).toEqual(['f: not valid JSON; skipped']);
    expect(parseNpmPackageJson(b('[1]'), 'f').warnings).toEqual(['f: not a JSON object; skipped']);
    expect(parseNpmPackageJson(b('{"name":"x","version":1}'), 'f').warnings).toEqual(['f: no valid name and version; skipped']);
    expect(parseNpmPackageJson(b('{"__proto__":{"name":"x"},"version":"1"}'), 'f').packages).toEqual([]);
  });
});

describe('which files are package databases', () => {
  it('recognises the database paths and nothing nearby', () => {
    const cases: Array<[string, string | null]> = [
      ['/var/lib/dpkg/status', 'dpkg-status'],
      ['/var/lib/dpkg/status-old', null],
      ['/var/lib/dpkg/status.d/libc6', 'dpkg-status-d'],
      ['/var/lib/dpkg/status.d/libc6.md5sums', null],
      ['/var/lib/dpkg/status.d/sub/x', null],
      ['/lib/apk/db/installed', 'apk-installed'],
      ['/usr/lib/apk/db/installed', 'apk-installed'],
      ['/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA', 'python'],
      ['/opt/venv/lib/python3.12/site-packages/foo-1.0.dist-info/METADATA', 'python'],
      ['/usr/lib/python3/dist-packages/foo-1.0.dist-info/RECORD', null],
      ['/usr/lib/python3/dist-packages/foo.egg-info/PKG-INFO', 'python'],
      ['/usr/lib/python3/dist-packages/foo-1.0.egg-info', 'python'],
      ['/home/x/foo-1.0.dist-info/METADATA', null],
      ['/app/node_modules/left-pad/package.json', 'npm'],
      ['/app/node_modules/@scope/pkg/package.json', 'npm'],
      ['/app/node_modules/a/node_modules/b/package.json', 'npm'],
      ['/app/node_modules/left-pad/lib/package.json', null],
      ['/app/node_modules/@scope/package.json', null],
      ['/app/package.json', null],
      ['/etc/os-release', 'os-release'],
    ];
    for (const [path, kind] of cases) expect([path, dbKindOf(path)]).toEqual([path, kind]);
  });

  it('normalises tar entry names and refuses odd ones', () => {
    expect(imagePath('./var/lib/dpkg/status')).toBe('/var/lib/dpkg/status');
    expect(imagePath('var/lib/dpkg/')).toBe('/var/lib/dpkg');
    expect(imagePath('../../etc/os-release')).toBe('/etc/os-release');
    expect(imagePath('a\0b')).toBeNull();
  });

  it('reads ID and VERSION_ID of os-release, refusing odd values', () => {
    expect(parseOsRelease(b('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'))).toEqual({ id: 'debian', versionId: '12' });
    expect(parseOsRelease(b('ID="alpine"\nVERSION_ID=3.20.3\n'))).toEqual({ id: 'alpine', versionId: '3.20.3' });
    expect(parseOsRelease(b('ID=Bad/Id\n'))).toBeNull();
    expect(parseOsRelease(b('NAME=x\n'))).toBeNull();
  });
});
