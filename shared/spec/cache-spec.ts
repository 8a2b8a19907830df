/**
 * The layer-cache part of the build spec: `cache:` on a build or a node overrides the
 * coordinator's cache mode (config `cache.mode`) for it. Written as `cache: off` or
 * `cache: {mode: readwrite|read|off}`; a node's setting wins over its build's.
 *
 * - readwrite: import the node's cache ref from the cache registry, and after a successful
 *   build push the image with its inline cache to that ref;
 * - read: import only (never push);
 * - off: neither.
 *
 * Nothing here changes what a node builds, so the cache mode is not part of the reuse key.
 */
import { z } from 'zod';

export const CACHE_MODES = ['readwrite', 'read', 'off'] as const;
export type CacheMode = (typeof CACHE_MODES)[number];

/** `cache: off` or `cache: {mode: ...}`. */
export const CacheSpecSchema = z.union([z.literal('off'), z.strictObject({ mode: z.enum(CACHE_MODES) })]);
export type CacheSpecInput = z.input<typeof CacheSpecSchema>;

/** The mode a node's `cache:` (or else its build's) sets, or undefined when neither sets one. */
export function specCacheMode(node: CacheSpecInput | undefined, build: CacheSpecInput | undefined): CacheMode | undefined {
  const pick = (c: CacheSpecInput | undefined) => (c === undefined ? undefined : c === 'off' ? 'off' : c.mode);
  return pick(node) ?? pick(build);
}
