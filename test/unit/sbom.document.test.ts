/**
 * Image SBOMs without an engine: a real tar stream (tar-stream's packer, as the Engine's
 * container export sends it) holding dpkg, apk, Python and npm databases among other
 * files goes through the one-pass scan (agent/docker/image-packages.ts), and its CycloneDX
 * 1.5 document (agent/docker/sbom.ts) is checked against the CycloneDX 1.5 JSON schema
 * that the CycloneDX library ships (ajv, no network). Also: the bounds on the scan
 * (file size per kind, kept bytes, entries, stream bytes, packages) give a partial result
 * with a warning; a truncated tar keeps what was read; the document is deterministic.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { pack } from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { DEFAULT_SCAN_LIMITS, scanTar, type ScanLimits } from '../../agent/docker/image-packages.js';
import { indexSboms } from '../../agent/docker/index-sboms.js';
import { purlOf, sbomDocument, withSboms } from '../../agent/docker/sbom.js';
import type { CasCache } from '../../agent/cas-cache.js';
import type Docker from 'dockerode';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';

type Entry = { name: string; body?: string | Buffer; type?: 'file' | 'directory' | 'symlink'; linkname?: string };

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const p = pack();
  for (const e of entries) {
    if (e.type === 'directory') p.entry({ name: e.name, type: 'directory' });
    else if (e.type === 'symlink') p.entry({ name: e.name, type: 'symlink', linkname: e.linkname! });
    else p.entry({ name: e.name }, typeof e.body === 'string' ? Buffer.from(e.body) : e.body!);
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p as unknown as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

const stream = (buf: Buffer) => Readable.from([buf], { objectMode: false });

const FIXTURES: Entry[] = [
  { name: 'bin/', type: 'directory' },
  { name: 'bin/sh', body: Buffer.alloc(4096, 1) },
  { name: 'etc/os-release', body: 'ID=debian\nVERSION_ID="12"\n' },
  { name: 'var/lib/dpkg/status', body: 'Package: libfoo\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.2-3\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 9\n' },
  { name: 'var/lib/dpkg/status.d/tzdata', body: 'Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n' },
  { name: 'lib/apk/db/installed', body: 'P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\n' },
  { name: 'usr/lib/python3/dist-packages/Flask_Thing-2.0.dist-info/METADATA', body: 'Metadata-Version: 2.1\nName: Flask_Thing\nVersion: 2.0\nLicense: BSD-3-Clause\n\nlong description\n' },
  { name: 'usr/lib/python3/dist-packages/Flask_Thing-2.0.dist-info/RECORD', body: 'x' },
  { name: 'opt/venv/lib/python3.12/site-packages/legacy.egg-info/PKG-INFO', body: 'Metadata-Version: 1.0\nName: legacy\nVersion: 0.9\n' },
  { name: 'app/node_modules/@acme/widget/package.json', body: '{"name":"@acme/widget","version":"3.1.4","license":"MIT"}' },
  { name: 'app/node_modules/@acme/widget/lib/package.json', body: '{"name":"not-a-package","version":"0"}' },
  { name: 'app/node_modules/left-pad/package.json', body: '{"name":"left-pad","version":"1.3.0","license":"WTFPL"}' },
  { name: 'app/package.json', body: '{"name":"the-app","version":"1.0.0"}' },
  { name: 'lib/link', type: 'symlink', linkname: '/var/lib/dpkg/status' },
];

const SUBJECT = {
  imageId: `sha256:${'a'.repeat(64)}`,
  platform: 'linux/amd64',
  images: [{ ref: '127.0.0.1:5000/team/app:1.2', digest: `sha256:${'b'.repeat(64)}`, platform: 'linux/amd64', size: 525, media_type: 'application/vnd.docker.distribution.manifest.v2+json' }],
};

function limits(over: Partial<ScanLimits>): ScanLimits {
  return { ...DEFAULT_SCAN_LIMITS, ...over };
}

/** A validator for CycloneDX 1.5 JSON from the schema files the library ships. */
function cyclonedx15Validator() {
  const require = createRequire(import.meta.url);
  const dir = join(dirname(require.resolve('@cyclonedx/cyclonedx-library/package.json')), 'res', 'schema');
  const load = (f: string, id?: string) => {
    const s = JSON.parse(readFileSync(join(dir, f), 'utf8')) as Record<string, unknown>;
    if (id) s.$id = id;
    return s;
  };
  const ajv = new Ajv({ strict: false, allErrors: true, loadSchema: () => Promise.reject(new Error('no remote schemas')) });
  const addFormats = addFormatsModule as unknown as (a: Ajv) => void;
  addFormats(ajv);
  ajv.addFormat('idn-email', true);
  ajv.addFormat('iri-reference', true);
  ajv.addSchema(load('spdx.SNAPSHOT.schema.json', 'http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json'));
  ajv.addSchema(load('jsf-0.82.SNAPSHOT.schema.json', 'http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json'));
  return ajv.compile(load('bom-1.5.SNAPSHOT.schema.json'));
}

describe('image package scan', () => {
  it('finds exactly the packages of every database, wherever they are, and the OS', async () => {
    const r = await scanTar(stream(await tarOf(FIXTURES)));
    expect(r.warnings).toEqual([]);
    expect(r.partial).toBe(false);
    expect(r.os).toEqual({ id: 'debian', versionId: '12' });
    expect(r.entries).toBe(FIXTURES.length);
    expect(r.packages.map((p) => `${p.ecosystem}:${p.name}@${p.version}`).sort()).toEqual([
      'apk:musl@1.2.4-r2',
      'deb:libfoo@1.2-3',
      'deb:tzdata@2024a-0+deb12u1',
      'npm:@acme/widget@3.1.4',
      'npm:left-pad@1.3.0',
      'pypi:Flask_Thing@2.0',
      'pypi:legacy@0.9',
    ]);
    expect(r.packages.find((p) => p.name === 'legacy')!.source).toBe('/opt/venv/lib/python3.12/site-packages/legacy.egg-info/PKG-INFO');
  });

  it('a database over its size bound is skipped with a warning; the others stand', async () => {
    const big = `Package: x\nStatus: install ok installed\nVersion: 1\nDescription: ${'y'.repeat(3000)}\n`;
    const entries = [...FIXTURES.filter((e) => e.name !== 'var/lib/dpkg/status'), { name: 'var/lib/dpkg/status', body: big }];
    const r = await scanTar(stream(await tarOf(entries)), limits({ maxFileBytes: new Map([...DEFAULT_SCAN_LIMITS.maxFileBytes, ['dpkg-status', 1024]]) }));
    expect(r.warnings).toEqual([`/var/lib/dpkg/status: ${Buffer.byteLength(big)} bytes is over the 1024-byte limit for this file; skipped`]);
    expect(r.packages.map((p) => p.name)).not.toContain('x');
    expect(r.packages).toHaveLength(6);
    expect(r.partial).toBe(true);
  });

  it('the bound on all kept bytes ends with a partial result', async () => {
    const r = await scanTar(stream(await tarOf(FIXTURES)), limits({ maxKeptBytes: 150 }));
    expect(r.partial).toBe(true);
    expect(r.warnings.some((w) => w.includes('the package databases together exceed 150 bytes; skipped'))).toBe(true);
    expect(r.packages.length).toBeLessThan(7);
  });

  it('the entry, stream-byte and package bounds stop the scan with a warning', async () => {
    const tar = await tarOf(FIXTURES);
    const e = await scanTar(stream(tar), limits({ maxEntries: 5 }));
    expect(e).toMatchObject({ partial: true, warnings: ['more than 5 files in the image; the SBOM lists only the packages found before it'] });
    expect(e.packages.map((p) => p.name)).toEqual(['libfoo', 'tzdata']);

    const chunks = new PassThrough();
    const s = scanTar(chunks, limits({ maxStreamBytes: 4096 }));
    for (let i = 0; i < tar.length; i += 1024) chunks.write(tar.subarray(i, i + 1024));
    chunks.end();
    const sb = await s;
    expect(sb.partial).toBe(true);
    expect(sb.warnings[0]).toBe("the image's file system is larger than 4096 bytes; the SBOM lists only the packages found before it");

    const p = await scanTar(stream(tar), limits({ maxPackages: 2 }));
    expect(p.partial).toBe(true);
    expect(p.packages).toHaveLength(2);
    expect(p.warnings.some((w) => w.includes('more than 2 packages'))).toBe(true);
  });

  it('a truncated or garbage tar keeps what was read and says so, never throws', async () => {
    const tar = await tarOf(FIXTURES);
    // Cut in the middle of the header after the dpkg status file.
    const cut = tar.subarray(0, tar.indexOf('var/lib/dpkg/status.d/tzdata') + 100);
    const r = await scanTar(stream(cut));
    expect(r.partial).toBe(true);
    expect(r.packages.map((p) => p.name)).toEqual(['libfoo']);
    expect(r.warnings.at(-1)).toMatch(/not a valid tar past entry \d+/);
    const garbage = Buffer.alloc(2048, 0x41);
    const g = await scanTar(stream(garbage));
    expect(g.packages).toEqual([]);
    expect(g.partial).toBe(true);
  });
});

describe('CycloneDX 1.5 document', () => {
  it('is valid CycloneDX 1.5, lists every package with purl, licence and location, and names the image', async () => {
    const scan = await scanTar(stream(await tarOf(FIXTURES)));
    const json = sbomDocument(scan, SUBJECT);
    const doc = JSON.parse(json) as {
      bomFormat: string;
      specVersion: string;
      serialNumber: string;
      metadata: { component: { type: string; name: string; version: string; purl: string; properties: Array<{ name: string; value: string }> }; properties: Array<{ name: string; value: string }> };
      components: Array<{ type: string; name: string; version: string; purl?: string; licenses?: unknown[]; properties: Array<{ name: string; value: string }> }>;
    };
    const validate = cyclonedx15Validator();
    expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
    expect(doc).toMatchObject({ bomFormat: 'CycloneDX', specVersion: '1.5' });
    expect(doc.metadata.component).toMatchObject({ type: 'container', name: '127.0.0.1:5000/team/app', version: SUBJECT.images[0]!.digest });
    expect(doc.metadata.component.purl).toBe(`pkg:oci/app@sha256:${'b'.repeat(64)}?arch=amd64&repository_url=127.0.0.1%3A5000%2Fteam%2Fapp`);
    expect(doc.metadata.component.properties).toContainEqual({ name: 'kiln:image:ref', value: '127.0.0.1:5000/team/app:1.2' });
    expect(doc.metadata.properties).toContainEqual({ name: 'kiln:sbom:partial', value: 'false' });
    expect(doc.components.map((c) => c.purl).sort()).toEqual([
      'pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12',
      'pkg:deb/debian/libfoo@1.2-3?arch=amd64&distro=debian-12',
      'pkg:deb/debian/tzdata@2024a-0+deb12u1?arch=all&distro=debian-12',
      'pkg:npm/%40acme/widget@3.1.4',
      'pkg:npm/left-pad@1.3.0',
      'pkg:pypi/flask-thing@2.0',
      'pkg:pypi/legacy@0.9',
    ]);
    const widget = doc.components.find((c) => c.name === '@acme/widget')!;
    expect(widget.licenses).toEqual([{ license: { id: 'MIT' } }]);
    expect(widget.properties).toContainEqual({ name: 'kiln:location', value: '/app/node_modules/@acme/widget/package.json' });
    expect(doc.components.find((c) => c.name === 'left-pad')!.licenses).toEqual([{ license: { id: 'WTFPL' } }]);
  });

  it('the same image gives the same bytes; a partial scan says so; duplicates get distinct bom-refs', async () => {
    const tar = await tarOf([...FIXTURES, { name: 'srv/node_modules/left-pad/package.json', body: '{"name":"left-pad","version":"1.3.0"}' }]);
    const a = sbomDocument(await scanTar(stream(tar)), SUBJECT);
    const b = sbomDocument(await scanTar(stream(tar)), SUBJECT);
    expect(a).toBe(b);
    const refs = (JSON.parse(a) as { components: Array<{ 'bom-ref': string }> }).components.map((c) => c['bom-ref']);
    expect(new Set(refs).size).toBe(refs.length);
    expect(refs).toContain('pkg:npm/left-pad@1.3.0#2');
    const partial = JSON.parse(sbomDocument(await scanTar(stream(tar), limits({ maxEntries: 3 })), SUBJECT)) as { metadata: { properties: Array<{ name: string; value: string }> } };
    expect(partial.metadata.properties).toContainEqual({ name: 'kiln:sbom:partial', value: 'true' });
    expect(cyclonedx15Validator()(partial)).toBe(true);
  });

  it('an image with no package database gives a valid SBOM with no components', async () => {
    const scan = await scanTar(stream(await tarOf([{ name: 'bin/busybox', body: 'x' }])));
    const doc = JSON.parse(sbomDocument(scan, SUBJECT)) as { components?: unknown[] };
    expect(doc.components ?? []).toEqual([]);
    expect(cyclonedx15Validator()(doc)).toBe(true);
  });

  it('purls: apk defaults to alpine; a name no purl can hold gets none', () => {
    expect(purlOf({ ecosystem: 'apk', name: 'musl', version: '1', source: 's' }, null)).toBe('pkg:apk/alpine/musl@1');
    expect(purlOf({ ecosystem: 'deb', name: 'x', version: '1', arch: 'arm64', source: 's' }, null)).toBe('pkg:deb/debian/x@1?arch=arm64');
    expect(purlOf({ ecosystem: 'npm', name: '', version: '1', source: 's' }, null)).toBeUndefined();
  });

  it('an index lists the SBOM of each platform node (the first pushed ref that has one)', () => {
    const d = (c: string) => `sha256:${c.repeat(64)}`;
    const img = (sbom: string | null | undefined) => ({ ref: 'r', digest: d('c'), platform: 'linux/amd64', size: 1, media_type: 'm', ...(sbom !== undefined ? { sbom } : {}) });
    expect(
      indexSboms([
        { node: 'a.linux-amd64', platform: 'linux/amd64', images: [img(d('1'))] },
        { node: 'a.linux-arm64', platform: 'linux/arm64', images: [img(null)] },
        { node: 'a.linux-s390x', platform: 'linux/s390x', images: [img(undefined)] },
      ]),
    ).toEqual([
      { platform: 'linux/amd64', sbom: d('1') },
      { platform: 'linux/arm64', sbom: null },
      { platform: 'linux/s390x', sbom: null },
    ]);
  });
});

describe('withSboms', () => {
  /** An engine stand-in whose container exports `tar` (or whose create fails), counting removals. */
  function engine(tar: Buffer | null) {
    const calls = { removed: 0 };
    const docker = {
      createContainer: () =>
        tar === null
          ? Promise.reject(new Error('connect ENOENT /var/run/docker.sock'))
          : Promise.resolve({
              export: () => Promise.resolve(stream(tar)),
              remove: () => {
                calls.removed++;
                return Promise.resolve();
              },
            }),
    } as unknown as Docker;
    return { docker, calls };
  }

  it('uploads the SBOM to the CAS and names it on every ref; the container is removed', async () => {
    const work = await mkdtemp(join(tmpdir(), 'kiln-sbom-'));
    try {
      const uploads: Array<{ digest: string; size: number }> = [];
      const cas = { upload: (digest: string, _path: string, size: number) => (uploads.push({ digest, size }), Promise.resolve()) } as unknown as CasCache;
      const { docker, calls } = engine(await tarOf(FIXTURES));
      const lines: string[] = [];
      const two = [SUBJECT.images[0]!, { ...SUBJECT.images[0]!, ref: '127.0.0.1:5000/team/app:latest' }];
      const out = await withSboms(docker, SUBJECT.imageId, two, 'linux/amd64', { cas, workDir: work, log: (l) => lines.push(l) });
      expect(uploads).toHaveLength(1);
      expect(out.map((i) => i.sbom)).toEqual([uploads[0]!.digest, uploads[0]!.digest]);
      expect(calls.removed).toBe(1);
      expect(lines.at(-1)).toMatch(/^\[kiln\] sbom: 7 packages \(deb 2, apk 1, pypi 2, npm 2\); CycloneDX 1\.5 sha256:[0-9a-f]{64} \(\d+ bytes, 14 files scanned\)\n$/);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it('an engine or CAS failure is logged and leaves sbom: null; it never throws', async () => {
    const work = await mkdtemp(join(tmpdir(), 'kiln-sbom-'));
    try {
      const lines: string[] = [];
      const okCas = { upload: () => Promise.resolve() } as unknown as CasCache;
      const down = await withSboms(engine(null).docker, SUBJECT.imageId, [...SUBJECT.images], 'linux/amd64', { cas: okCas, workDir: work, log: (l) => lines.push(l) });
      expect(down.map((i) => i.sbom)).toEqual([null]);
      expect(lines).toEqual(['[kiln] sbom: could not be made: creating a container to read the image failed: connect ENOENT /var/run/docker.sock (the image is pushed; its record says sbom: null)\n']);
      const badCas = { upload: () => Promise.reject(new Error('uploading: HTTP 503')) } as unknown as CasCache;
      const failed = await withSboms(engine(await tarOf(FIXTURES)).docker, SUBJECT.imageId, [...SUBJECT.images], 'linux/amd64', { cas: badCas, workDir: work, log: (l) => lines.push(l) });
      expect(failed.map((i) => i.sbom)).toEqual([null]);
      expect(lines.at(-1)).toContain('sbom: could not be made: uploading: HTTP 503');
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});
