/**
 * Where the coordinator's state is kept (issue 14): the interface between `StateStore`
 * (the state in memory, what changed in it, the journal lines for those changes) and a
 * backend that makes them durable and reads them back. Two backends behave the same:
 *
 * - `embedded` (the default, `embedded-backend.ts`): a snapshot file, an O_DSYNC journal and
 *   one file per archived build in the data dir;
 * - `postgres` (`pg/pg-state-backend.ts`): the same snapshot, journal batches and archived
 *   builds as rows, each write fenced by the leader lease's epoch, so several coordinators
 *   can share one database (one leads, the others follow its journal).
 *
 * Both take the same journal text (`journal-entries.ts` lines, built by the store) and
 * replay it with the same code (`journal-replay.ts`), so a state cannot mean something
 * different by backend. Group commit is the backend's: `commit()` resolves once every
 * change marked before the call is durable, and commits that arrive while a write is in
 * flight share the next one.
 */
import type { NodesByName } from './journal-replay.js';
import type { StateData } from './records.js';

export interface StateBackendContext {
  /** The state in memory (valid once `open` has returned it). */
  data(): StateData;
  /** The journal text for everything changed since the last call ('' when nothing); called synchronously as a batch starts. */
  takeText(): string;
  /** A build's nodes by name (the store's cached index), for replay. */
  nodesByName: NodesByName;
  /**
   * Called just before the state is serialized as a snapshot (in the same synchronous
   * step): journal lines after the snapshot replay over it, so the next line of each
   * attempt must be whole again, not a patch of a line the snapshot replaced.
   */
  snapshotTaken(): void;
}

export interface StateBackend {
  readonly kind: 'embedded' | 'postgres';
  /** Where the state is, for logs and errors (a path, or a URL without its password). */
  readonly location: string;
  /**
   * Reads the state (snapshot, then the journal replayed). Without a state: a new empty one
   * when `init` is set, else E_STATE naming what is missing. A corrupt state is always an
   * error, never taken for an empty one.
   */
  open(ctx: StateBackendContext, init: boolean): Promise<{ data: StateData; created: boolean }>;
  /** Resolves when every change marked before this call is durable. */
  commit(): Promise<void>;
  /** Writes a finished build's full record (JSON) durably, replacing any earlier one. */
  writeArchive(id: string, json: string): Promise<void>;
  /** An archived build's JSON (E_STATE naming where, when it is missing or cannot be read). */
  readArchive(id: string): Promise<string>;
  /** Waits for writes in flight, leaves a compact state behind and closes. */
  drain(): Promise<void>;
  /** Durable writes done (journal batches and snapshots), snapshots, preallocations: for tests and metrics. */
  readonly writes: number;
  readonly snapshots: number;
  readonly preallocations: number;
}
