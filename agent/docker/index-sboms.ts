/**
 * A multi-platform index has no SBOM of its own: its pushed-image record lists its
 * platform images' SBOMs (`platform_sboms`), taken from the platform nodes' results the
 * coordinator put in the assignment (`index` entries). Nothing is scanned again.
 */
import type { Digest, IndexEntryPayload } from '../../shared/core.js';

/** For each platform node, the SBOM its pushed image records (the first ref that has one), or null. */
export function indexSboms(entries: readonly IndexEntryPayload[]): Array<{ platform: string; sbom: Digest | null }> {
  return entries.map((e) => ({ platform: e.platform, sbom: (e.images.find((i) => i.sbom)?.sbom as Digest | undefined) ?? null }));
}
