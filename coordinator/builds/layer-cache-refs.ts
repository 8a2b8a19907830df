/**
 * The fleet-wide layer cache, coordinator side: which cache ref an attempt imports from and
 * exports to, and in which mode.
 *
 * One ref per build name, node and platform, `<registry>:<platform>-<node>--<build>`
 * (`127.0.0.1:5000/kiln-cache:linux-amd64-app--web`): every agent of a pool (same platform)
 * imports what any agent of that pool exported, whichever build of that spec it was, and a
 * node called `app` in another spec does not overwrite it. Tags follow the distribution
 * spec (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`); a long build name is cut and given a hash.
 * A readwrite push also goes to a versioned tag (`<tag>.t<time>`, `keep_ref`), of which the
 * retention sweep keeps the last `cache.keep` per node and platform (cache-retention.ts).
 *
 * The mode is the node's `cache:` (else its build's, see shared/spec/cache-spec.ts), else
 * the coordinator's `cache.mode`. It is a run setting (node-execution.ts `nodeRunLimits`),
 * not part of the reuse key: importing or exporting cache does not change what is built.
 */
import { sha256, type AssignCachePayload, type CacheMode } from '../../shared/index.js';

/** `cache.registry` (a validated repository, no tag), the default `cache.mode`, and `cache.keep`. */
export interface LayerCacheConfig {
  registry: string;
  mode: CacheMode;
  /** Versioned tags kept per node and platform (cache-retention.ts); 0: push only the moving tag. */
  keep: number;
}

/** Room for the versioned suffix `.t<9 digits>` within the distribution spec's 128 characters. */
const MAX_TAG = 128 - 11;

/**
 * The cache tag of a node of a build for a platform (valid per the distribution spec).
 * Readable when that is unambiguous; a hash of the three names is added when a name had
 * to be changed (`my build` and `my_build`), when the node name holds the `--` separator
 * (node `a--b` of build `c` against node `a` of build `b--c`), or when it is too long.
 */
export function cacheTag(platform: string, buildName: string, nodeName: string): string {
  const clean = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');
  const head = `${clean(platform.replaceAll('/', '-'))}-${clean(nodeName)}`;
  const build = clean(buildName);
  const tag = `${head}--${build}`;
  const unambiguous = build === buildName && !nodeName.includes('--');
  if (unambiguous && tag.length <= MAX_TAG && /^[A-Za-z0-9_]/.test(tag)) return tag;
  const hash = sha256(`${platform}\n${buildName}\n${nodeName}`).slice(7, 19);
  const room = Math.max(0, MAX_TAG - head.length - hash.length - 3);
  return `${head}--${build.slice(0, room)}-${hash}`.replace(/^[^A-Za-z0-9_]/, '_').slice(0, MAX_TAG);
}

/** The versioned tag of a push at `at` (ms): `<tag>.t<9 base-36 digits>`, sorting by time. */
export function versionedTag(tag: string, at: number): string {
  return `${tag}.t${Math.max(0, Math.floor(at)).toString(36).padStart(9, '0').slice(-9)}`;
}

/** What an attempt of this node, dispatched at `at`, is told about the cache (null: none). */
export function nodeCache(
  config: LayerCacheConfig | null | undefined,
  build: { name: string },
  node: { name: string; platform: string; cache_mode?: CacheMode },
  at = 0,
): AssignCachePayload | null {
  if (!config) return null;
  const mode = node.cache_mode ?? config.mode;
  if (mode === 'off') return null;
  const tag = cacheTag(node.platform, build.name, node.name);
  const out: AssignCachePayload = { ref: `${config.registry}:${tag}`, mode };
  if (mode === 'readwrite' && config.keep > 0) out.keep_ref = `${config.registry}:${versionedTag(tag, at)}`;
  return out;
}
