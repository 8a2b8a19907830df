/**
 * SBOMs of pushed images: after a node's push the agent scans the image's package
 * databases (image-packages.ts: dpkg, apk, Python dist-info/egg-info, npm package.json),
 * writes a CycloneDX 1.5 JSON document with the CycloneDX JavaScript library
 * (`@cyclonedx/cyclonedx-library`: the document model, its normaliser and serialiser) and
 * uploads it to the coordinator's CAS; each pushed image's record carries its digest
 * (`sbom`). Purls come from `packageurl-js`.
 *
 * The document is deterministic: no timestamp, the serial number derived from the image id
 * and manifest digest, components sorted, so the same image gives the same SBOM digest.
 * Each package component has a purl (`pkg:deb/debian/...?arch=&distro=`, `pkg:apk/alpine/…`,
 * `pkg:pypi/…`, `pkg:npm/…`), its licence where the database states one and the file it
 * was read from (`kiln:location`); the image itself is `metadata.component` (a container,
 * `pkg:oci/…@<manifest digest>`), with its refs, image id and platform as properties and
 * `kiln:sbom:partial` saying whether a bound cut the scan short.
 *
 * An index's row lists its platform images' SBOMs instead (index-sboms.ts).
 *
 * `withSboms` never throws: an SBOM that cannot be made (engine trouble, CAS upload
 * failure) is logged and the images keep `sbom: null`; the push succeeded and stands.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as CDX from '@cyclonedx/cyclonedx-library';
import type Docker from 'dockerode';
import { PackageURL } from 'packageurl-js';
import { coerceError, parseImageRef, sha256, KILN_VERSION, type Digest, type PushedImagePayload } from '../../shared/core.js';
import type { CasCache } from '../cas-cache.js';
import { scanImagePackages, type ScanLimits, type ScanResult } from './image-packages.js';
import type { FoundPackage } from './package-dbs.js';

export const SBOM_MEDIA_TYPE = 'application/vnd.cyclonedx+json;version=1.5';

/** The image an SBOM describes. */
export interface SbomSubject {
  imageId: string;
  platform: string;
  /** The refs it was pushed to (one manifest digest). */
  images: readonly PushedImagePayload[];
}

/** The package's purl, or undefined when its name cannot be one. */
export function purlOf(p: FoundPackage, os: ScanResult['os']): string | undefined {
  try {
    switch (p.ecosystem) {
      case 'deb':
      case 'apk': {
        const ns = os?.id ?? (p.ecosystem === 'deb' ? 'debian' : 'alpine');
        const q: Record<string, string> = {};
        if (p.arch) q.arch = p.arch;
        if (os?.versionId) q.distro = `${os.id}-${os.versionId}`;
        return new PackageURL(p.ecosystem, ns, p.name, p.version, q, undefined).toString();
      }
      case 'pypi':
        // The purl spec: lower case, `_` as `-`.
        return new PackageURL('pypi', undefined, p.name.toLowerCase().replace(/[._]+/g, '-'), p.version, undefined, undefined).toString();
      case 'npm': {
        const slash = p.name.startsWith('@') ? p.name.indexOf('/') : -1;
        const ns = slash > 0 ? p.name.slice(0, slash) : undefined;
        const name = slash > 0 ? p.name.slice(slash + 1) : p.name;
        return new PackageURL('npm', ns, name, p.version, undefined, undefined).toString();
      }
    }
  } catch {
    return undefined;
  }
}

/** A name-based (version 5 layout) UUID from `parts`, for a serial number that is the same for the same image. */
function stableUuid(...parts: string[]): string {
  const h = createHash('sha1').update('kiln-sbom\0').update(parts.join('\0')).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function licenseModel(l: string): CDX.Models.NamedLicense | CDX.Models.SpdxLicense {
  return CDX.SPDX.isSupportedSpdxId(l) ? new CDX.Models.SpdxLicense(l) : new CDX.Models.NamedLicense(l);
}

const ORDER = new Map([
  ['deb', 0],
  ['apk', 1],
  ['pypi', 2],
  ['npm', 3],
]);

/** The CycloneDX 1.5 JSON document for `scan` of `subject`. */
export function sbomDocument(scan: ScanResult, subject: SbomSubject): string {
  const first = subject.images[0];
  const bom = new CDX.Models.Bom();
  bom.serialNumber = `urn:uuid:${stableUuid(subject.imageId, first?.digest ?? '')}`;
  bom.metadata.tools.components.add(new CDX.Models.Component(CDX.Enums.ComponentType.Application, 'kiln', { version: KILN_VERSION, group: 'kiln' }));
  const parsed = first ? parseImageRef(first.ref) : null;
  const repo = parsed?.ok ? `${parsed.ref.domain}/${parsed.ref.path}` : (first?.ref ?? subject.imageId);
  const arch = subject.platform.split('/')[1];
  let imagePurl: string | undefined;
  try {
    imagePurl = first ? new PackageURL('oci', undefined, repo.slice(repo.lastIndexOf('/') + 1), first.digest, { repository_url: repo, ...(arch ? { arch } : {}) }, undefined).toString() : undefined;
  } catch {
    imagePurl = undefined;
  }
  const image = new CDX.Models.Component(CDX.Enums.ComponentType.Container, repo, { bomRef: 'image', ...(first ? { version: first.digest } : {}), ...(imagePurl ? { purl: imagePurl } : {}) });
  image.properties.add(new CDX.Models.Property('kiln:image:id', subject.imageId));
  image.properties.add(new CDX.Models.Property('kiln:image:platform', subject.platform));
  for (const i of subject.images) image.properties.add(new CDX.Models.Property('kiln:image:ref', i.ref));
  bom.metadata.component = image;
  bom.metadata.properties.add(new CDX.Models.Property('kiln:sbom:partial', String(scan.partial)));
  bom.metadata.properties.add(new CDX.Models.Property('kiln:sbom:warnings', String(scan.warnings.length)));
  if (scan.os) bom.metadata.properties.add(new CDX.Models.Property('kiln:os', scan.os.versionId ? `${scan.os.id} ${scan.os.versionId}` : scan.os.id));

  const sorted = [...scan.packages].sort(
    (a, b) => ORDER.get(a.ecosystem)! - ORDER.get(b.ecosystem)! || cmp(a.name, b.name) || cmp(a.version, b.version) || cmp(a.source, b.source),
  );
  const refs = new Map<string, number>();
  for (const p of sorted) {
    const purl = purlOf(p, scan.os);
    const key = purl ?? `${p.ecosystem}:${p.name}@${p.version}`;
    const seen = refs.get(key) ?? 0;
    refs.set(key, seen + 1);
    const c = new CDX.Models.Component(CDX.Enums.ComponentType.Library, p.name, { version: p.version, bomRef: seen === 0 ? key : `${key}#${seen + 1}`, ...(purl ? { purl } : {}) });
    if (p.license) c.licenses.add(licenseModel(p.license));
    c.properties.add(new CDX.Models.Property('kiln:package:type', p.ecosystem));
    c.properties.add(new CDX.Models.Property('kiln:location', p.source));
    bom.components.add(c);
  }
  const serializer = new CDX.Serialize.JsonSerializer(new CDX.Serialize.JSON.Normalize.Factory(CDX.Spec.Spec1dot5));
  return serializer.serialize(bom, { sortLists: true });
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface SbomDeps {
  cas: CasCache;
  workDir: string;
  log: (line: string) => void;
  signal?: AbortSignal;
  limits?: ScanLimits;
}

/** Most warnings written to the node's log. */
const LOGGED_WARNINGS = 20;

/** Scans the image, writes its SBOM and uploads it to the coordinator's CAS. Throws when any step fails. */
export async function generateSbom(docker: Docker, subject: SbomSubject, deps: SbomDeps): Promise<{ digest: Digest; size: number; packages: number; partial: boolean }> {
  const scan = await scanImagePackages(docker, subject.imageId, { ...(deps.signal ? { signal: deps.signal } : {}), ...(deps.limits ? { limits: deps.limits } : {}) });
  for (const w of scan.warnings.slice(0, LOGGED_WARNINGS)) deps.log(`[kiln] sbom: warning: ${w}\n`);
  if (scan.warnings.length > LOGGED_WARNINGS) deps.log(`[kiln] sbom: ${scan.warnings.length - LOGGED_WARNINGS} more warnings\n`);
  const bytes = Buffer.from(sbomDocument(scan, subject));
  const digest = sha256(bytes);
  const dir = join(deps.workDir, 'sbom');
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `${digest.slice(7, 19)}-${randomBytes(6).toString('hex')}.json`);
  try {
    await writeFile(tmp, bytes);
    await deps.cas.upload(digest, tmp, bytes.length, deps.signal);
  } finally {
    await rm(tmp, { force: true });
  }
  const by = new Map<string, number>();
  for (const p of scan.packages) by.set(p.ecosystem, (by.get(p.ecosystem) ?? 0) + 1);
  const counts = [...by]
    .sort((a, b) => ORDER.get(a[0])! - ORDER.get(b[0])!)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  deps.log(`[kiln] sbom: ${scan.packages.length} packages${counts ? ` (${counts})` : ''}${scan.partial ? ' (partial)' : ''}; CycloneDX 1.5 ${digest} (${bytes.length} bytes, ${scan.entries} files scanned)\n`);
  return { digest, size: bytes.length, packages: scan.packages.length, partial: scan.partial };
}

/**
 * The pushed images with their SBOM's digest (`sbom`), one SBOM for the image whatever
 * its refs. Never throws: a failure is logged and leaves `sbom: null`.
 */
export async function withSboms(docker: Docker, imageId: string, images: PushedImagePayload[], platform: string, deps: SbomDeps): Promise<PushedImagePayload[]> {
  if (images.length === 0) return images;
  let sbom: Digest | null = null;
  try {
    sbom = (await generateSbom(docker, { imageId, platform: images[0]!.platform || platform, images }, deps)).digest;
  } catch (err) {
    deps.log(`[kiln] sbom: could not be made: ${coerceError(err).message} (the image is pushed; its record says sbom: null)\n`);
  }
  return images.map((i) => ({ ...i, sbom }));
}
