/**
 * Retention of the layer cache's tags in the cache registry: keep the last N versioned tags
 * per node and platform (`cache.keep`), delete the manifests of older ones.
 *
 * Each readwrite push goes to the node's moving tag (`<base>`, what builds import) and to a
 * versioned one, `<base>.t<9 base-36 digits of the dispatch time in ms>`
 * (layer-cache-refs.ts), so the versions of a base sort by name. A sweep lists the
 * repository's tags (paginated), groups the versioned ones by base, and deletes every version
 * but the newest N. The registry deletes manifests by digest, and a digest deleted takes
 * every tag naming it along: a digest is deleted only when no kept version and no moving
 * tag names it. What the registry frees on disk is up to its garbage collection
 * (`scripts/infra/registry-gc.sh`).
 *
 * The registry is spoken to over plain HTTP when its host is a loopback address (an
 * insecure local registry, as Docker itself allows), over HTTPS otherwise; no credentials.
 * Needs `storage.delete.enabled` in the registry's config (a 405 says it is off).
 */
import { coerceError, readBoundedText } from '../../shared/index.js';

/** `<base>.t<9 base-36 digits>`: a versioned cache tag. */
export const VERSIONED_TAG_RE = /^(.+)\.t([0-9a-z]{9})$/;
/** Manifest media types a cache tag may have (what the engine pushes). */
const MANIFEST_ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.index.v1+json',
].join(', ');
/** Tags listed at most (a bound on one sweep's work). */
const MAX_TAGS = 100_000;

export interface PruneReport {
  tags: number;
  kept: number;
  deleted: string[];
  /** Versions not deleted because a kept or moving tag has the same manifest. */
  shared: number;
}

/** The versioned tags to drop, oldest first, given every tag of the repository. */
export function tagsToDrop(tags: readonly string[], keep: number): string[] {
  const byBase = new Map<string, string[]>();
  for (const t of tags) {
    const m = VERSIONED_TAG_RE.exec(t);
    if (!m) continue;
    let list = byBase.get(m[1]!);
    if (!list) byBase.set(m[1]!, (list = []));
    list.push(t);
  }
  const drop: string[] = [];
  for (const list of byBase.values()) {
    list.sort();
    drop.push(...list.slice(0, Math.max(0, list.length - keep)));
  }
  return drop;
}

/** `host[:port]/path` -> the registry's base URL and the repository name. */
export function registryEndpoint(repository: string): { base: string; name: string } {
  const slash = repository.indexOf('/');
  const host = repository.slice(0, slash);
  const hostname = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0]!;
  const loopback = hostname === 'localhost' || /^127\./.test(hostname) || hostname === '[::1]';
  return { base: `${loopback ? 'http' : 'https'}://${host}`, name: repository.slice(slash + 1) };
}

type Fetch = typeof fetch;

/** Longest tag-list page read, pages read per sweep, and the time one registry request may take. */
const MAX_PAGE_BYTES = 4 * 1024 * 1024;
const MAX_PAGES = 100;
const REQUEST_TIMEOUT_MS = 30_000;

async function listTags(base: string, name: string, f: Fetch): Promise<string[]> {
  const tags: string[] = [];
  let path: string | null = `/v2/${name}/tags/list?n=1000`;
  for (let page = 0; path !== null && tags.length < MAX_TAGS; page++) {
    if (page >= MAX_PAGES) throw new Error(`listing the tags of ${name}: more than ${MAX_PAGES} pages`);
    const res: Response = await f(`${base}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    if (res.status === 404) return tags; // no repository yet
    if (!res.ok) throw new Error(`listing the tags of ${name}: HTTP ${res.status}`);
    const answer = await readBoundedText(res, MAX_PAGE_BYTES);
    if (answer.truncated) throw new Error(`listing the tags of ${name}: the registry answered more than ${MAX_PAGE_BYTES} bytes`);
    const body = JSON.parse(answer.text) as { tags?: unknown };
    const listed = body.tags ?? [];
    if (!Array.isArray(listed) || !listed.every((t): t is string => typeof t === 'string')) throw new Error(`listing the tags of ${name}: the registry's tag list is not a list of strings`);
    for (const t of listed) if (tags.length < MAX_TAGS) tags.push(t);
    // `Link: </v2/<name>/tags/list?last=...&n=1000>; rel="next"`
    const next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
    path = next ? next[1]! : null;
  }
  return tags;
}

async function digestOf(base: string, name: string, tag: string, f: Fetch): Promise<string | null> {
  const res = await f(`${base}/v2/${name}/manifests/${encodeURIComponent(tag)}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`HEAD ${name}:${tag}: HTTP ${res.status}`);
  return res.headers.get('docker-content-digest');
}

/** One retention sweep of the cache repository. Throws on a registry error (the next sweep retries). */
export async function pruneCacheTags(repository: string, keep: number, f: Fetch = fetch): Promise<PruneReport> {
  const { base, name } = registryEndpoint(repository);
  const tags = await listTags(base, name, f);
  const drop = new Set(tagsToDrop(tags, keep));
  const report: PruneReport = { tags: tags.length, kept: 0, deleted: [], shared: 0 };
  if (drop.size === 0) return report;
  // Digests that must stay: every tag not dropped names one (moving tags and kept versions).
  const protectedDigests = new Set<string>();
  for (const t of tags) {
    if (drop.has(t)) continue;
    report.kept++;
    const d = await digestOf(base, name, t, f);
    if (d) protectedDigests.add(d);
  }
  for (const t of drop) {
    const d = await digestOf(base, name, t, f);
    if (d === null) continue;
    if (protectedDigests.has(d)) {
      report.shared++;
      continue;
    }
    const res = await f(`${base}/v2/${name}/manifests/${d}`, { method: 'DELETE', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    if (res.status === 405) throw new Error(`the registry refuses deletes (enable storage.delete in its config)`);
    if (!res.ok && res.status !== 404) throw new Error(`DELETE ${name}@${d} (${t}): HTTP ${res.status}`);
    protectedDigests.add(d); // deleted: later versions with this digest are gone too
    report.deleted.push(t);
  }
  return report;
}

/** A sweep that never throws: logs what it did or why it could not. */
export async function sweepCacheTags(repository: string, keep: number, log: { info(o: object, m: string): void; warn(o: object, m: string): void }, f: Fetch = fetch): Promise<void> {
  try {
    const r = await pruneCacheTags(repository, keep, f);
    if (r.deleted.length > 0) log.info({ repository, deleted: r.deleted.length, kept: r.kept }, 'layer cache: old cache tags deleted');
  } catch (err) {
    log.warn({ repository, err: coerceError(err).message }, 'layer cache: retention sweep failed');
  }
}
