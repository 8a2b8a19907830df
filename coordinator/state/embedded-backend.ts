/**
 * The embedded state backend (the default): everything in the coordinator's data dir.
 * `state.json` is the snapshot (lowdb, written through the durable adapter: temp, fsync,
 * rename, fsync dir), `journal.jsonl` the O_DSYNC journal after it (`JournalWriter`: group
 * commit, preallocation, compaction; its header states the durability contract), and
 * `builds/<id>.json` one file per archived build. Reading it back at start is
 * `replayJournal`'s; a missing state file is an error unless a new state is asked for, and a
 * corrupt one is always an error, left untouched.
 */
import { mkdir, readFile, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Low } from 'lowdb';
import { KilnError, coerceError, errnoCode, writeFileDurable } from '../../shared/index.js';
import { DurableJsonAdapter } from './durable-json-adapter.js';
import { replayJournal } from './journal-replay.js';
import { JournalWriter } from './journal-writer.js';
import { emptyState, stateFromFile, stateToFile, type StateData } from './records.js';
import type { StateBackend, StateBackendContext } from './state-backend.js';

export interface EmbeddedBackendOptions {
  dataDir: string;
  /** Journal size that triggers a snapshot, at least (see StateStoreOptions.minCompactBytes). */
  minCompactBytes: number;
  /** Benchmarks only (JournalWriterOptions.unsynced): the journal is written but never synced. */
  unsyncedJournal: boolean;
}

export const STATE_FILE = 'state.json';
export const JOURNAL_FILE = 'journal.jsonl';

export class EmbeddedBackend implements StateBackend {
  readonly kind = 'embedded';
  readonly path: string;
  readonly journalPath: string;
  readonly archiveDir: string;
  private readonly db: Low<StateData>;
  private journal: JournalWriter | null = null;
  private snapshotBytes = 0;

  constructor(private readonly opts: EmbeddedBackendOptions) {
    this.path = join(opts.dataDir, STATE_FILE);
    this.journalPath = join(opts.dataDir, JOURNAL_FILE);
    this.archiveDir = join(opts.dataDir, 'builds');
    const adapter = new DurableJsonAdapter<StateData>(this.path, {
      decode: stateFromFile,
      encode: stateToFile,
      recoveryHint: `Restore it from a backup, or start the coordinator with --init to create a new empty state (only when ${STATE_FILE} does not exist).`,
      write: async (p, text) => {
        await writeFileDurable(p, text, 0o600);
        this.snapshotBytes = Buffer.byteLength(text);
      },
    });
    this.db = new Low<StateData>(adapter, emptyState());
  }

  get location(): string {
    return this.path;
  }

  get writes(): number {
    return this.journal?.writes ?? 0;
  }

  get snapshots(): number {
    return this.journal?.snapshots ?? 0;
  }

  get preallocations(): number {
    return this.journal?.preallocations ?? 0;
  }

  archivePath(id: string): string {
    return join(this.archiveDir, `${id}.json`);
  }

  async open(ctx: StateBackendContext, init: boolean): Promise<{ data: StateData; created: boolean }> {
    await mkdir(this.archiveDir, { recursive: true });
    await this.removeStaleTemps();
    const journal = new JournalWriter({
      dataDir: this.opts.dataDir,
      journalPath: this.journalPath,
      minCompactBytes: this.opts.minCompactBytes,
      takeText: () => ctx.takeText(),
      // looked up at each call: tests hold the snapshot by wrapping db.write (which serializes at once)
      writeSnapshot: () => {
        ctx.snapshotTaken();
        return this.db.write();
      },
      snapshotBytes: () => this.snapshotBytes,
      unsynced: this.opts.unsyncedJournal,
    });
    this.journal = journal;
    let exists = true;
    try {
      await readFile(this.path);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new KilnError('E_STATE', `state file ${this.path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
      exists = false;
    }
    if (!exists && init) {
      let journalExists = true;
      await readFile(this.journalPath).catch(() => (journalExists = false));
      if (journalExists) throw new KilnError('E_STATE', `journal ${this.journalPath} exists but ${this.path} does not; refusing to start a new state over it (move it away to start over)`);
      await journal.create();
      return { data: this.db.data, created: true };
    }
    await this.db.read(); // throws E_STATE when missing or corrupt
    this.snapshotBytes = (await stat(this.path)).size;
    const { bytes, torn } = await replayJournal(this.journalPath, this.path, this.db.data, ctx.nodesByName);
    await journal.recover(bytes, torn);
    return { data: this.db.data, created: false };
  }

  commit(): Promise<void> {
    if (!this.journal) return Promise.reject(new KilnError('E_INTERNAL', 'state: commit before the state was opened'));
    return this.journal.commit();
  }

  async writeArchive(id: string, json: string): Promise<void> {
    await writeFileDurable(this.archivePath(id), json, 0o600);
  }

  async readArchive(id: string): Promise<string> {
    const path = this.archivePath(id);
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      throw new KilnError('E_STATE', `archived build file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
    }
  }

  async drain(): Promise<void> {
    await this.journal?.drain();
  }

  private async removeStaleTemps(): Promise<void> {
    for (const dir of [this.opts.dataDir, this.archiveDir]) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        if (name.startsWith('.') && name.includes('.tmp-')) await unlink(join(dir, name)).catch(() => {});
      }
    }
  }
}
