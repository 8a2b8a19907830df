/**
 * The log store's interface (issue 14): what the engine, the log follower, the log routes and
 * the error report use. Two implementations behave the same: `LogStore` (log-store.ts, files
 * in the data dir, the default) and `PgLogStore` (pg-log-store.ts, chunks in PostgreSQL, so a
 * standby that takes over serves every build's logs). `createLogStore` (create-log-store.ts)
 * picks one.
 *
 * Model, common to both: an attempt's log is its header (the coordinator's, empty for a first
 * attempt) followed by the agent's bytes, addressed by the agent's own offset (a resent chunk
 * is written once, a gap is refused: the agent resends from the returned offset). A node's log
 * is the concatenation of its attempts' logs in order; node-level offsets index it and are
 * what SSE event ids carry. `append` resolves (the offset the agent is acked with) only once
 * the bytes are durable in the store; `append` events are emitted after that.
 */
import type { Listener } from '../../shared/index.js';

export interface AttemptLogRef {
  buildId: string;
  node: string;
  number: number;
  header: string;
}

/** An attempt, without its header (reads and closes). */
export type AttemptKey = Pick<AttemptLogRef, 'buildId' | 'node' | 'number'>;

/** What the log store emits: event name -> listener arguments. */
export interface LogEvents {
  /** Bytes were written (durably) to an attempt of the node. */
  append: [buildId: string, node: string];
}

export interface LogStorage {
  /** Where the logs are (a directory, or the redacted database URL), for messages. */
  readonly location: string;
  /** false while the store cannot write (a shared store whose database is away): /readyz. */
  readonly healthy: boolean;
  on<K extends keyof LogEvents & string>(event: K, listener: Listener<LogEvents[K]>): unknown;
  off<K extends keyof LogEvents & string>(event: K, listener: Listener<LogEvents[K]>): unknown;
  /**
   * Writes agent bytes `data` that start at agent offset `offset`. Bytes already written are
   * skipped; a chunk that starts beyond what was written (a gap) is not written. Resolves
   * with the number of agent bytes stored afterwards (the offset to ack) once they are durable.
   */
  append(ref: AttemptLogRef, offset: number, data: Uint8Array): Promise<number>;
  /** Appends a coordinator note after whatever the agent sent (counted as agent bytes). */
  appendNote(ref: AttemptLogRef, text: string): Promise<void>;
  /** Makes sure the attempt exists (with its header) even when the agent sent no bytes. */
  ensure(ref: AttemptLogRef): Promise<void>;
  /** Agent bytes already stored for the attempt (creating it with its header if needed). */
  agentBytes(ref: AttemptLogRef): Promise<number>;
  /** The attempt gets no more bytes: finishes its writes and forgets its open state. */
  close(ref: AttemptKey): Promise<void>;
  /** Finishes every pending write and closes every attempt (the coordinator stops). */
  closeAll(): Promise<void>;
  /** Sizes (header + agent bytes) of the node's attempts 1..attempts (0 for one not created yet). */
  nodeSizes(buildId: string, node: string, attempts: number): Promise<number[]>;
  /** Whether node-level `offset` falls between two UTF-8 characters (see `isCharBoundaryIn`). */
  isCharBoundary(buildId: string, node: string, sizes: number[], offset: number): Promise<boolean>;
  /** Node-level bytes [start, end) across the attempts whose sizes are `sizes`. */
  read(buildId: string, node: string, sizes: number[], start: number, end: number): Promise<Buffer>;
  /** The last `maxBytes` (at most) of one attempt's log, header included, and where they start. */
  tail(ref: AttemptKey, maxBytes: number): Promise<{ start: number; bytes: Buffer }>;
}

/**
 * Whether node-level `offset` falls between two characters (UTF-8), reading around it with
 * `read(start, end)`: false when the byte there continues a multi-byte character that starts
 * before it. Offsets at or past the end count as boundaries.
 */
export async function isCharBoundaryIn(read: (start: number, end: number) => Promise<Buffer>, offset: number): Promise<boolean> {
  if (offset === 0) return true;
  const around = await read(Math.max(0, offset - 3), offset + 1);
  const before = around.subarray(0, Math.min(3, offset));
  const at = around[before.length];
  if (at === undefined || (at & 0xc0) !== 0x80) return true;
  // `at` is a continuation byte: inside a character if one starts in the 3 bytes before and is not complete there.
  let i = before.length - 1;
  let cont = 0;
  while (i >= 0 && (before[i]! & 0xc0) === 0x80) {
    i--;
    cont++;
  }
  if (i < 0) return true; // no lead byte in reach: invalid UTF-8 here, any offset is as good as another
  const lead = before[i]!;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return need <= cont + 1;
}
