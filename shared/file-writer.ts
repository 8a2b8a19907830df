/**
 * Writing a stream of chunks to a file fast: chunks are gathered into batches of about
 * 1 MiB and written with one `writev` each, with one batch in flight while the caller
 * hashes and gathers the next. Used wherever kiln stores a blob while hashing it (the
 * coordinator's local store, the agent's CAS cache), where writing each 64 KiB network
 * chunk and waiting for it before reading the next halved throughput.
 */
import type { FileHandle } from 'node:fs/promises';

export class BatchedFileWriter {
  private batch: Uint8Array[] = [];
  private batchBytes = 0;
  private inflight: Promise<unknown> = Promise.resolve();
  private failed: unknown = null;

  constructor(
    private readonly fh: FileHandle,
    private readonly maxBatchBytes = 1024 * 1024,
  ) {}

  /** Queues `chunk`; resolves when the caller may hand over the next one. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.failed) throw this.failed;
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes >= this.maxBatchBytes) await this.send();
  }

  /** Writes what is queued and waits for every write to finish. */
  async flush(): Promise<void> {
    if (this.batchBytes > 0) await this.send();
    await this.inflight;
    if (this.failed) throw this.failed;
  }

  private async send(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    // One batch in flight: wait for the previous write before starting this one.
    await this.inflight;
    if (this.failed) throw this.failed;
    this.inflight = this.fh.writev(batch).catch((err: unknown) => {
      this.failed = err;
    });
  }
}
