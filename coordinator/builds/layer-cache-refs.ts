/**
 * The fleet-wide layer cache, coordinator side: which cache ref an attempt imports from and
 * exports to, and in which mode.
 *
 * One ref per build name, node and platform, `<registry>:<platform>-<node>--<build>`
 * (`127.0.0.1:5000/kiln-cache:linux-amd64-app--web`): every agent of a pool (same platform)
 * imports what any agent of that pool exported, whichever build of that spec it was, and a
 * node called `app` in another spec does not overwrite it. Tags follow the distribution
 * spec (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`); a long build name is cut and given a hash.
 *
 * The mode is the node's `cache:` (else its build's, see shared/spec/cache-spec.ts), else
 * the coordinator's `cache.mode`. It is a run setting (node-execution.ts `nodeRunLimits`),
 * not part of the reuse key: importing or exporting cache does not change what is built.
 */
import { sha256, type AssignCachePayload, type CacheMode } from '../../shared/index.js';

/** `cache.registry` (a validated repository, no tag) and the default `cache.mode`. */
export interface LayerCacheConfig {
  registry: string;
  mode: CacheMode;
}

const MAX_TAG = 128;

/** The cache tag of a node of a build for a platform (valid per the distribution spec). */
export function cacheTag(platform: string, buildName: string, nodeName: string): string {
  const clean = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');
  const head = `${clean(platform.replaceAll('/', '-'))}-${clean(nodeName)}`;
  const build = clean(buildName);
  const tag = `${head}--${build}`;
  if (tag.length <= MAX_TAG && /^[A-Za-z0-9_]/.test(tag)) return tag;
  const hash = sha256(`${platform}\n${buildName}\n${nodeName}`).slice(7, 19);
  const room = Math.max(0, MAX_TAG - head.length - hash.length - 3);
  return `${head}--${build.slice(0, room)}-${hash}`.replace(/^[^A-Za-z0-9_]/, '_').slice(0, MAX_TAG);
}

/** What an attempt of this node is told about the cache (null: none). */
export function nodeCache(
  config: LayerCacheConfig | null | undefined,
  build: { name: string },
  node: { name: string; platform: string; cache_mode?: CacheMode },
): AssignCachePayload | null {
  if (!config) return null;
  const mode = node.cache_mode ?? config.mode;
  if (mode === 'off') return null;
  return { ref: `${config.registry}:${cacheTag(node.platform, build.name, node.name)}`, mode };
}
