/**
 * Content digests. kiln addresses every blob (build contexts, later artifacts) by
 * `sha256:<64 lowercase hex>`; these helpers parse, compute and verify them.
 */
import { createHash, type Hash } from 'node:crypto';
import { KilnError } from './errors.js';

export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
export const HEX_RE = /^[0-9a-f]{64}$/;

export type Digest = `sha256:${string}`;

export function isDigest(value: string): value is Digest {
  return DIGEST_RE.test(value);
}

/** Validates a digest string, throwing E_INVALID with a message naming the bad value. */
export function parseDigest(value: string, what = 'digest'): Digest {
  if (!isDigest(value)) {
    throw new KilnError('E_INVALID', `${what} '${value.slice(0, 80)}' is not a sha256 digest (expected sha256:<64 lowercase hex digits>)`);
  }
  return value;
}

export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}

export function sha256(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function newHasher(): Hash {
  return createHash('sha256');
}

export function hasherDigest(hash: Hash): Digest {
  return `sha256:${hash.digest('hex')}`;
}
