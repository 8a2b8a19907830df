/**
 * The coordinator's artifact store: one interface for content-addressed blobs (build
 * contexts, node outputs, provenance records), with two backends chosen by config:
 * local disk (local-blob-store.ts, the default) and S3-compatible object storage through
 * the `minio` client (s3-blob-store.ts: MinIO, Garage, AWS S3, s3rver in tests).
 *
 * Contract for every backend:
 * - `put` streams the body in, hashing while it writes, and keeps the blob only if the
 *   bytes hash to `digest` (and their count equals `expectedSize` when given); otherwise
 *   it throws E_DIGEST_MISMATCH and leaves nothing behind. A digest already stored is not
 *   an error (`created: false`, the body is drained). Concurrent puts of one digest leave
 *   one correct blob. Larger than `maxBlobBytes`: E_TOO_LARGE, nothing kept.
 * - `read` of an absent digest throws E_NOT_FOUND.
 * - `list` yields every stored blob (for the find-missing index and retention).
 * - `delete` of an absent digest is not an error.
 */
import type { Readable } from 'node:stream';
import type { Digest } from '../../shared/index.js';

export interface PutResult {
  created: boolean;
  size: number;
}

export interface StoredBlob {
  digest: Digest;
  size: number;
  /** When the blob was stored (ms since epoch). */
  storedAt: number;
}

export interface BlobStore {
  readonly kind: 'local' | 's3';
  /** Human-readable location for logs and the README (`/var/lib/kiln/cas`, `s3://bucket/prefix`). */
  readonly location: string;
  /** Creates directories / checks the bucket; throws E_CONFIG with a clear message when unusable. */
  init(): Promise<void>;
  /** Size of the blob in bytes, or null when absent. */
  size(digest: Digest): Promise<number | null>;
  /** The blob's bytes. Throws E_NOT_FOUND when absent. */
  read(digest: Digest): Promise<Readable>;
  put(digest: Digest, body: AsyncIterable<Uint8Array>, expectedSize?: number): Promise<PutResult>;
  list(): AsyncIterable<StoredBlob>;
  delete(digest: Digest): Promise<void>;
  /**
   * A URL a client can GET the blob from without the coordinator's token, valid for
   * `expiresSeconds` (presigned for S3), or null when the backend has none (local disk:
   * clients use the coordinator's CAS route).
   */
  downloadUrl(digest: Digest, expiresSeconds: number): Promise<string | null>;
}
