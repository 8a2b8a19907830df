/**
 * The coordinator's durable state: lowdb over a durable adapter, with group commit and
 * archiving of finished builds.
 *
 * Callers change `data` in memory (synchronously, so changes are atomic with respect to
 * each other) and then `await commit()`; the promise resolves once a write that includes
 * every change made before the call is on disk. Commits coalesce: while one write is in
 * flight, all later commit() calls share the next write, so throughput does not depend
 * on how long one write takes. Acknowledge to agents and clients only after commit().
 */
import { mkdir, readFile, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Low } from 'lowdb';
import { KilnError, errnoCode } from '../../shared/index.js';
import { DurableJsonAdapter } from './durable-json-adapter.js';
import { writeFileDurable } from './durable-file.js';
import { emptyState, stateProblem, summarize, type BuildRecord, type BuildSummaryRecord, type StateData } from './records.js';

export interface StateStoreOptions {
  dataDir: string;
  /** false = keep everything in memory (benchmarks only): commit() resolves at once. */
  persist: boolean;
  /** Create a new state file when it is missing. Never overwrites an existing one. */
  init: boolean;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

const STATE_FILE = 'state.json';

export class StateStore {
  readonly path: string;
  readonly archiveDir: string;
  private readonly db: Low<StateData>;
  private waiting: Waiter[] = [];
  private writing = false;
  private scheduled = false;
  private failed: Error | null = null;
  private readonly archiveCache = new Map<string, BuildRecord>();
  /** Count of durable writes done (for tests and metrics). */
  writes = 0;

  private constructor(private readonly opts: StateStoreOptions) {
    this.path = join(opts.dataDir, STATE_FILE);
    this.archiveDir = join(opts.dataDir, 'builds');
    const adapter = new DurableJsonAdapter<StateData>(this.path, {
      validate: stateProblem,
      recoveryHint: `Restore it from a backup, or start the coordinator with --init to create a new empty state (only when ${STATE_FILE} does not exist).`,
      write: (p, text) => writeFileDurable(p, text, 0o600),
    });
    this.db = new Low<StateData>(adapter, emptyState());
  }

  /**
   * Opens the state in `dataDir` (which must exist). A missing state file is an error
   * unless `init` is set; a corrupt one is always an error and is left untouched.
   */
  static async open(opts: StateStoreOptions): Promise<StateStore> {
    const store = new StateStore(opts);
    await mkdir(store.archiveDir, { recursive: true });
    if (!opts.persist) return store;
    await store.removeStaleTemps();
    let exists = true;
    try {
      await readFile(store.path);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new KilnError('E_STATE', `state file ${store.path} cannot be read (${errnoCode(err) ?? (err as Error).message})`, { cause: err });
      exists = false;
    }
    if (!exists && opts.init) {
      await store.db.write();
      store.writes++;
      return store;
    }
    await store.db.read(); // throws E_STATE when missing or corrupt
    return store;
  }

  get data(): StateData {
    return this.db.data;
  }

  /** Resolves when every change made before this call is durable. */
  commit(): Promise<void> {
    if (!this.opts.persist) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.writing && !this.scheduled) {
        this.scheduled = true;
        // setImmediate: changes made in the same turn of the event loop share one write.
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    if (this.writing || this.waiting.length === 0) return;
    this.writing = true;
    const batch = this.waiting;
    this.waiting = [];
    try {
      await this.db.write();
      this.writes++;
      for (const w of batch) w.resolve();
    } catch (err) {
      // A failed state write means we can no longer promise durability: every waiter and
      // every later commit fails, and the coordinator stops acknowledging.
      this.failed = new KilnError('E_STATE', `writing ${this.path} failed: ${(err as Error).message}`, { cause: err });
      for (const w of batch) w.reject(this.failed);
      for (const w of this.waiting.splice(0)) w.reject(this.failed);
    } finally {
      this.writing = false;
    }
    if (this.waiting.length > 0 && !this.failed) await this.flush();
  }

  /** Waits for in-flight writes (shutdown). */
  async drain(): Promise<void> {
    while (this.writing || this.waiting.length > 0 || this.scheduled) {
      await this.commit().catch(() => {});
      await new Promise((r) => setImmediate(r));
    }
  }

  archivePath(id: string): string {
    return join(this.archiveDir, `${id}.json`);
  }

  /**
   * Moves a finished build out of the hot state: writes builds/<id>.json durably, then
   * replaces the build by its summary (the caller commits). If the process dies between
   * the two, the build is still in state.json and the archive file is rewritten later.
   */
  async archive(build: BuildRecord): Promise<void> {
    if (this.opts.persist) await writeFileDurable(this.archivePath(build.id), JSON.stringify(build), 0o600);
    this.archiveCache.set(build.id, build);
    this.trimCache();
    delete this.data.builds[build.id];
    this.data.archived[build.id] = summarize(build);
  }

  /** A build by id: active ones from memory, archived ones from their file. */
  async getBuild(id: string): Promise<BuildRecord | null> {
    const active = this.data.builds[id];
    if (active) return active;
    if (!this.data.archived[id]) return null;
    const cached = this.archiveCache.get(id);
    if (cached) return cached;
    const path = this.archivePath(id);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new KilnError('E_STATE', `archived build file ${path} cannot be read (${errnoCode(err) ?? (err as Error).message})`, { cause: err });
    }
    let build: BuildRecord;
    try {
      build = JSON.parse(text) as BuildRecord;
    } catch (err) {
      throw new KilnError('E_STATE', `archived build file ${path} is corrupt (${(err as Error).message})`, { cause: err });
    }
    this.archiveCache.set(id, build);
    this.trimCache();
    return build;
  }

  summaries(): BuildSummaryRecord[] {
    return [...Object.values(this.data.builds).map(summarize), ...Object.values(this.data.archived)];
  }

  private trimCache(): void {
    while (this.archiveCache.size > 256) {
      const first = this.archiveCache.keys().next().value;
      if (first === undefined) break;
      this.archiveCache.delete(first);
    }
  }

  private async removeStaleTemps(): Promise<void> {
    for (const dir of [this.opts.dataDir, this.archiveDir]) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        if (name.startsWith('.') && name.includes('.tmp-')) await unlink(join(dir, name)).catch(() => {});
      }
    }
  }
}
