/**
 * Artifact retention: blobs that no build still needs are deleted from the store.
 *
 * A build's blobs (contexts, inputs, outputs, provenance records, image SBOMs) are *live*
 * while the build is unfinished, while it is pinned, and for `retentionMs` after it finished; its
 * artifacts' `expires_at` is `finished_at + retentionMs` (null when pinned). A sweep marks
 * the blobs of every live build (archived builds older than the retention period and not
 * pinned are not even read), then deletes every other blob that was stored and last
 * touched (uploaded, found by find-missing, submitted) more than `graceMs` ago, so
 * uploads not yet referenced by a submitted build survive. Reuse records of expired
 * results stay on disk but are not used once their outputs are gone.
 */
import type { Logger } from 'pino';
import { digestHex, type Digest } from '../../shared/index.js';
import type { BuildRecord } from '../state/records.js';
import type { StateStore } from '../state/state-store.js';
import type { Cas } from './cas.js';

export interface RetentionOptions {
  /** How long a finished, unpinned build's artifacts are kept. */
  retentionMs: number;
  /** Blobs stored or touched more recently than this are never deleted. */
  graceMs: number;
}

export interface SweepResult {
  live: number;
  deleted: number;
  bytesFreed: number;
  kept: number;
}

/** Every blob a build refers to. */
export function buildDigests(build: BuildRecord): Set<string> {
  const out = new Set<string>();
  for (const n of build.nodes) {
    if (n.context) out.add(n.context);
    for (const i of n.inputs ?? []) if (i.digest) out.add(i.digest);
    for (const a of n.attempts) {
      for (const d of Object.values(a.inputs ?? {})) out.add(d);
      for (const o of a.outputs ?? []) out.add(o.digest);
      if (a.provenance) out.add(a.provenance);
      for (const i of a.images ?? []) if (i.sbom) out.add(i.sbom);
    }
  }
  return out;
}

export class Retention {
  private running: Promise<SweepResult> | null = null;

  constructor(
    private readonly deps: { cas: Cas; store: StateStore; logger: Logger; clock?: () => number },
    readonly opts: RetentionOptions,
  ) {}

  private now(): number {
    return (this.deps.clock ?? Date.now)();
  }

  /** When retention may delete the build's artifacts; null while it runs or when pinned. */
  expiresAt(build: { finished_at: number | null; pinned?: boolean }): number | null {
    if (build.pinned || build.finished_at === null) return null;
    return build.finished_at + this.opts.retentionMs;
  }

  /** Resolves when no sweep is running. */
  async idle(): Promise<void> {
    await this.running?.catch(() => {});
  }

  /** Runs one sweep (concurrent calls share it). */
  sweep(): Promise<SweepResult> {
    this.running ??= this.doSweep().finally(() => (this.running = null));
    return this.running;
  }

  private async doSweep(): Promise<SweepResult> {
    const started = this.now();
    const { cas, store } = this.deps;
    const live = new Set<string>();
    const add = (b: BuildRecord) => {
      for (const d of buildDigests(b)) live.add(digestHex(d as Digest));
    };
    for (const b of store.data.builds.values()) add(b);
    for (const s of store.data.archived.values()) {
      const exp = this.expiresAt(s);
      if (exp !== null && exp <= started) continue;
      const b = await store.getBuild(s.id).catch((err: unknown) => {
        this.deps.logger.error({ err, build: s.id }, 'retention: cannot read an archived build; keeping every blob this sweep');
        throw err;
      });
      if (b) add(b);
    }
    // Builds submitted while the archived ones were read.
    for (const b of store.data.builds.values()) add(b);

    let deleted = 0;
    let bytesFreed = 0;
    let kept = 0;
    const cutoff = started - this.opts.graceMs;
    for await (const blob of cas.list()) {
      const hex = digestHex(blob.digest);
      const touched = cas.touchedAt(blob.digest);
      if (live.has(hex) || blob.storedAt > cutoff || (touched !== null && touched > cutoff)) {
        kept++;
        continue;
      }
      await cas.delete(blob.digest);
      deleted++;
      bytesFreed += blob.size;
    }
    cas.forgetTouchesBefore(cutoff);
    if (deleted > 0) this.deps.logger.info({ deleted, bytes_freed: bytesFreed, kept, live: live.size }, 'retention: deleted expired artifacts');
    return { live: live.size, deleted, bytesFreed, kept };
  }
}
