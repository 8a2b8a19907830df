/**
 * Storing a blob that must hash to a known digest: the bytes stream into a temp file
 * (batched writes, shared/file-writer.ts) while they are hashed and counted; the file is
 * fsynced and kept only when the digest matches, the count equals the expected size (when
 * one is known) and stays under the limit. Anything else throws (E_DIGEST_MISMATCH,
 * E_TOO_LARGE, or the body's own error) and removes the temp file, so a partial or wrong
 * blob never sits where a good one would. The caller renames the file into place.
 * Used by the coordinator's local store (uploads) and the agent's CAS cache (downloads).
 */
import { open, unlink } from 'node:fs/promises';
import { KilnError } from './errors.js';
import { hasherDigest, newHasher, type Digest } from './digest.js';
import { BatchedFileWriter } from './file-writer.js';

export interface VerifiedWriteOptions {
  digest: Digest;
  /** Exact number of bytes expected (Content-Length), when known. */
  size?: number;
  /** Where `size` came from, for messages. @default 'Content-Length' */
  sizeSource?: string;
  /** Most bytes accepted. */
  maxBytes?: number;
  /** How the bytes arrived, for messages: `uploaded`, `downloaded`. */
  verb: string;
  /** What happens to bad bytes, for messages: `nothing was stored`, `discarded`. */
  outcome: string;
  /** Called with the number of bytes read, whatever the outcome. */
  onRead?: (bytes: number) => void;
}

/** Writes `body` to `tmpPath` and verifies it (see the header); returns its size. */
export async function writeVerifiedFile(tmpPath: string, body: AsyncIterable<Uint8Array>, o: VerifiedWriteOptions): Promise<number> {
  const fh = await open(tmpPath, 'w', 0o644);
  const hash = newHasher();
  let size = 0;
  let keep = false;
  try {
    const out = new BatchedFileWriter(fh);
    try {
      for await (const chunk of body) {
        size += chunk.length;
        if (o.maxBytes !== undefined && size > o.maxBytes) throw new KilnError('E_TOO_LARGE', `blob is larger than the limit of ${o.maxBytes} bytes; ${o.outcome}`);
        if (o.size !== undefined && size > o.size) throw new KilnError('E_DIGEST_MISMATCH', `${o.digest}: ${o.verb} more than the ${o.size} bytes ${o.sizeSource ?? 'Content-Length'} said; ${o.outcome}`);
        hash.update(chunk);
        await out.write(chunk);
      }
      await out.flush();
    } finally {
      o.onRead?.(size);
    }
    const actual = hasherDigest(hash);
    if (actual !== o.digest) throw new KilnError('E_DIGEST_MISMATCH', `${o.verb} ${size} bytes hash to ${actual}, not ${o.digest}; ${o.outcome}`);
    if (o.size !== undefined && size !== o.size) throw new KilnError('E_DIGEST_MISMATCH', `${o.verb} ${size} bytes but ${o.sizeSource ?? 'Content-Length'} said ${o.size}; ${o.outcome}`);
    await fh.sync();
    keep = true;
    return size;
  } finally {
    await fh.close();
    if (!keep) await unlink(tmpPath).catch(() => {});
  }
}
