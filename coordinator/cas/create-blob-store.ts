/**
 * Picks the CAS backend the config names: local disk under the data dir (the default) or
 * an S3-compatible bucket.
 */
import type { CasConfig } from '../config.js';
import type { BlobStore } from './blob-store.js';
import { LocalBlobStore } from './local-blob-store.js';
import { S3BlobStore } from './s3-blob-store.js';

export function createBlobStore(cfg: CasConfig, dataDir: string, maxBlobBytes: number): BlobStore {
  switch (cfg.backend) {
    case 'local':
      return new LocalBlobStore(dataDir, maxBlobBytes);
    case 's3':
      return new S3BlobStore({ ...cfg.s3, maxBlobBytes });
  }
}
