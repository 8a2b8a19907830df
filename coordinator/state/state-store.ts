/**
 * The coordinator's durable state: a lowdb snapshot (`state.json`, written through the
 * durable adapter) plus an append-only journal (`journal.jsonl`), with group commit and
 * archiving of finished builds.
 *
 * Callers change `data` in memory (synchronously, so changes are atomic with respect to
 * each other), mark what they changed (`markNew`, `markBuild`, `markNode`), and then
 * `await commit()`; the promise resolves once everything changed before the call is on
 * disk. A commit appends one line per changed build/node to the journal, opened O_DSYNC
 * so that the append returns once it is on disk (the fdatasync is part of the write): its
 * cost follows the number of changes, not the size of the state, and commits that arrive
 * while a write is in flight share the next one. When the journal grows past the
 * snapshot's size (and a floor), the whole state is written as a new snapshot (temp,
 * fsync, rename, fsync dir) while commits go on, and the journal is then replaced by the
 * lines written since (see `startCompaction`).
 *
 * Journal entries are idempotent upserts, so replaying a journal on top of a snapshot that
 * already contains some of it (a crash between snapshot and truncation) is harmless. A
 * final line without its newline is a write that was never acknowledged and is dropped;
 * any other bad line is corruption and stops the coordinator with the file and line named.
 *
 * Only entries that replay are written: every index is a Map (no key can reach
 * Object.prototype), `markBuild`/`markNode` refuse a build or node the state does not
 * hold (the caller's request fails; nothing is journaled), and each line is checked by
 * the same `entryProblem` that replay uses before it is appended.
 *
 * Archive files (`builds/<id>.json`) are written one at a time per build (archive, pin,
 * revive), and an archive whose build changed while its file was being written (a pin
 * racing the archive) is written again, so a change acknowledged meanwhile is in the file.
 */
import { constants, mkdir, open, readFile, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Low } from 'lowdb';
import { KilnError, coerceError, errnoCode } from '../../shared/index.js';
import { DurableJsonAdapter } from './durable-json-adapter.js';
import { fsyncDir, writeFileDurable } from './durable-file.js';
import { entryProblem, type JournalEntry, type NodeMutable } from './journal-entries.js';
import { emptyState, stateFromFile, stateToFile, summarize, type BuildRecord, type BuildSummaryRecord, type NodeRecord, type StateData } from './records.js';

export interface StateStoreOptions {
  dataDir: string;
  /** false = keep everything in memory (benchmarks only): commit() resolves at once. */
  persist: boolean;
  /** Create a new state when state.json is missing. Never overwrites an existing one. */
  init: boolean;
  /** Journal size that triggers a snapshot, at least. @default 16 MiB */
  minCompactBytes?: number;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

const STATE_FILE = 'state.json';
const JOURNAL_FILE = 'journal.jsonl';
/** Append, create, and every write durable before it returns (O_DSYNC: data plus the size, like fdatasync). */
const JOURNAL_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC;

function openJournal(path: string): Promise<FileHandle> {
  return open(path, JOURNAL_FLAGS, 0o600);
}

export class StateStore {
  readonly path: string;
  readonly journalPath: string;
  readonly archiveDir: string;
  private readonly db: Low<StateData>;
  private journal: FileHandle | null = null;
  private journalBytes = 0;
  private snapshotBytes = 0;
  private waiting: Waiter[] = [];
  private writing = false;
  private scheduled = false;
  private failed: Error | null = null;
  /**
   * A snapshot being written while commits keep appending to the journal: `tail` holds
   * what was appended since the snapshot's state was serialized, which becomes the new
   * journal once the snapshot is on disk.
   */
  private compaction: { tail: string[]; snapshotted: boolean; done: Promise<void>; finish: (err?: unknown) => void } | null = null;
  private readonly newBuilds = new Set<string>();
  private readonly dirtyBuilds = new Set<string>();
  private readonly dirtyNodes = new Map<string, Set<string>>();
  private archived: Array<{ id: string; s: BuildSummaryRecord }> = [];
  private readonly revived = new Set<string>();
  /** Node name -> record per build node list (journal lines look nodes up by name). */
  private readonly nodeIndex = new WeakMap<readonly NodeRecord[], Map<string, NodeRecord>>();
  private readonly dirtyDlq = new Set<string>();
  private readonly dirtyControls = new Set<string>();
  private readonly archiveCache = new Map<string, BuildRecord>();
  /** Changes marked per active build: an archive write that saw a different count is written again. */
  private readonly versions = new Map<string, number>();
  /** The archive-file operation running per build (archive, pin, revive run one at a time). */
  private readonly fileOps = new Map<string, Promise<unknown>>();
  private readonly minCompactBytes: number;
  /** Durable writes done: journal appends and snapshots (for tests and metrics). */
  writes = 0;
  /** Snapshots written (compactions). */
  snapshots = 0;
  /** This open created a new, empty state (--init or a new data dir); false when one was read. */
  created = false;

  private constructor(private readonly opts: StateStoreOptions) {
    this.path = join(opts.dataDir, STATE_FILE);
    this.journalPath = join(opts.dataDir, JOURNAL_FILE);
    this.archiveDir = join(opts.dataDir, 'builds');
    this.minCompactBytes = opts.minCompactBytes ?? 16 * 1024 * 1024;
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

  /**
   * Opens the state in `dataDir` (which must exist): snapshot, then journal replay. A
   * missing state file is an error unless `init` is set; a corrupt one is always an error
   * and is left untouched.
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
      if (errnoCode(err) !== 'ENOENT') throw new KilnError('E_STATE', `state file ${store.path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
      exists = false;
    }
    if (!exists && opts.init) {
      let journalExists = true;
      await readFile(store.journalPath).catch(() => (journalExists = false));
      if (journalExists) throw new KilnError('E_STATE', `journal ${store.journalPath} exists but ${store.path} does not; refusing to start a new state over it (move it away to start over)`);
      await store.db.write();
      store.writes++;
      store.created = true;
      store.journal = await openJournal(store.journalPath);
      await store.journal.sync();
      await fsyncDir(opts.dataDir);
      return store;
    }
    await store.db.read(); // throws E_STATE when missing or corrupt
    store.snapshotBytes = (await stat(store.path)).size;
    await store.replayJournal();
    return store;
  }

  get data(): StateData {
    return this.db.data;
  }

  /** false: everything stays in memory (benchmarks, simulations). */
  get persist(): boolean {
    return this.opts.persist;
  }

  private bump(buildId: string): void {
    this.versions.set(buildId, (this.versions.get(buildId) ?? 0) + 1);
  }

  private activeBuild(buildId: string, what: string): BuildRecord {
    const b = this.data.builds.get(buildId);
    // A programming error, never input: refusing here keeps an entry that could not be replayed out of the journal.
    if (!b) throw new KilnError('E_INTERNAL', `state: ${what} of build ${JSON.stringify(buildId)}, which is not active`);
    return b;
  }

  /** A build created since the last commit (journaled whole). */
  markNew(buildId: string): void {
    this.activeBuild(buildId, 'creation');
    this.newBuilds.add(buildId);
    this.bump(buildId);
  }

  /** Build-level fields (state, cancel_requested, times, pinned) changed. */
  markBuild(buildId: string): void {
    this.activeBuild(buildId, 'update');
    this.dirtyBuilds.add(buildId);
    this.bump(buildId);
  }

  /** A node's state, attempts or times changed. */
  markNode(buildId: string, node: string): void {
    const b = this.activeBuild(buildId, `update of node ${JSON.stringify(node)}`);
    if (!this.nodesByName(b).has(node)) throw new KilnError('E_INTERNAL', `state: update of unknown node ${JSON.stringify(node)} of build ${buildId}`);
    let set = this.dirtyNodes.get(buildId);
    if (!set) {
      set = new Set();
      this.dirtyNodes.set(buildId, set);
    }
    set.add(node);
    this.bump(buildId);
  }

  /** A dead-letter entry was added or removed (`data.deadLetter`). */
  markDeadLetter(key: string): void {
    this.dirtyDlq.add(key);
  }

  /** An agent's control was set or cleared (`data.agentControls`). */
  markControl(name: string): void {
    this.dirtyControls.add(name);
  }

  private nodesByName(b: BuildRecord): Map<string, NodeRecord> {
    // A build's node list never changes after submission: index it once, not per commit.
    let byName = this.nodeIndex.get(b.nodes);
    if (!byName) {
      byName = new Map(b.nodes.map((n) => [n.name, n]));
      this.nodeIndex.set(b.nodes, byName);
    }
    return byName;
  }

  /** Runs `fn` after every earlier archive-file operation on this build has finished. */
  private withBuildFile<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.fileOps.get(id) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    this.fileOps.set(id, tail);
    void tail.then(() => {
      if (this.fileOps.get(id) === tail) this.fileOps.delete(id);
    });
    return run;
  }

  /**
   * Makes an archived build active again (a retry of one of its nodes): loads its file,
   * puts it back in `data.builds` and journals it whole at the next commit. Returns the
   * active build (already active: as it is).
   */
  revive(id: string): Promise<BuildRecord | null> {
    return this.withBuildFile(id, async () => {
      const active = this.data.builds.get(id);
      if (active) return active;
      const build = await this.getBuild(id);
      if (!build) return null;
      const now = this.data.builds.get(id);
      if (now) return now;
      this.data.archived.delete(id);
      this.archiveCache.delete(id);
      this.data.builds.set(id, build);
      this.archived = this.archived.filter((a) => a.id !== id);
      this.revived.add(id);
      this.bump(id);
      return build;
    });
  }

  /** Resolves when every change made (and marked) before this call is durable. */
  commit(): Promise<void> {
    if (!this.opts.persist) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.writing && !this.scheduled) {
        this.scheduled = true;
        // Two setImmediate hops: changes made in this turn, and in every setImmediate callback
        // already queued (the engine's placement pass, whose dispatches wait for this write),
        // share one write; one hop let a result's commit start writing just before the
        // placement it triggered, which then waited for a second write.
        setImmediate(() => setImmediate(() => void this.flush()));
      }
    });
  }

  /** Journal entries for everything marked, read from the current in-memory state. */
  private takeEntries(): JournalEntry[] {
    const entries: JournalEntry[] = [];
    const builds = this.data.builds;
    for (const id of this.revived) {
      const b = builds.get(id);
      if (b) entries.push({ t: 'revive', b });
      this.newBuilds.delete(id);
      this.dirtyBuilds.delete(id);
      this.dirtyNodes.delete(id);
    }
    this.revived.clear();
    for (const id of this.newBuilds) {
      const b = builds.get(id);
      if (b) entries.push({ t: 'new', b });
      this.dirtyBuilds.delete(id);
      this.dirtyNodes.delete(id);
    }
    for (const id of this.dirtyBuilds) {
      const b = builds.get(id);
      if (b) entries.push({ t: 'build', b: { id: b.id, state: b.state, cancel_requested: b.cancel_requested, started_at: b.started_at, finished_at: b.finished_at, pinned: b.pinned ?? false } });
    }
    for (const [id, names] of this.dirtyNodes) {
      const b = builds.get(id);
      if (!b) continue;
      const byName = this.nodesByName(b);
      for (const name of names) {
        const n = byName.get(name);
        if (!n) continue;
        const m: NodeMutable = {
          state: n.state,
          attempts: n.attempts,
          ready_at: n.ready_at,
          started_at: n.started_at,
          finished_at: n.finished_at,
          reason: n.reason,
          reused_from: n.reused_from ?? null,
          waiting_on: n.waiting_on ?? null,
          retries: n.retries ?? 0,
          budget_from: n.budget_from ?? 0,
        };
        entries.push({ t: 'node', id, name, n: m });
      }
    }
    for (const a of this.archived) entries.push({ t: 'archive', id: a.id, s: a.s });
    for (const k of this.dirtyDlq) entries.push({ t: 'dlq', k, r: this.data.deadLetter.get(k) ?? null });
    for (const name of this.dirtyControls) entries.push({ t: 'control', name, r: this.data.agentControls.get(name) ?? null });
    this.dirtyDlq.clear();
    this.dirtyControls.clear();
    this.newBuilds.clear();
    this.dirtyBuilds.clear();
    this.dirtyNodes.clear();
    this.archived = [];
    return entries;
  }

  /** The journal text for `entries`; an entry that would not replay is left out and reported. */
  private journalText(entries: JournalEntry[]): string {
    const lines: string[] = [];
    for (const e of entries) {
      const problem = entryProblem(e, this.data, (b, name) => this.nodesByName(b).has(name));
      if (problem) {
        // Cannot happen through markX (which refuse unknown builds and nodes); never write what replay would refuse.
        process.emitWarning(`kiln state: journal entry refused before it was written: ${problem}`);
        continue;
      }
      lines.push(JSON.stringify(e));
    }
    return lines.length > 0 ? `${lines.join('\n')}\n` : '';
  }

  /**
   * Writes what is marked, batch after batch, while commits wait. One batch is in flight at
   * a time (journal lines stay in order); commits that arrive meanwhile share the next
   * batch, which starts as soon as the previous one is durable. The journal is opened with
   * O_DSYNC, so the append returns only once the data is on disk (the fdatasync happens in
   * the same system call: one trip to the thread pool per batch, not two).
   */
  private async flush(): Promise<void> {
    this.scheduled = false;
    if (this.writing) return;
    this.writing = true;
    try {
      for (;;) {
        if (this.compaction?.snapshotted) await this.swapJournal();
        if (this.waiting.length === 0 || this.failed) break;
        const batch = this.waiting;
        this.waiting = [];
        try {
          const text = this.journalText(this.takeEntries());
          if (text) {
            const fh = await this.journalHandle();
            await fh.write(text);
            this.journalBytes += Buffer.byteLength(text);
            this.compaction?.tail.push(text);
            this.writes++;
          }
          for (const w of batch) w.resolve();
          if (!this.compaction && this.journalBytes > Math.max(this.minCompactBytes, this.snapshotBytes)) this.startCompaction();
        } catch (err) {
          this.fail(err, batch);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /**
   * A failed state write means durability can no longer be promised: every waiter and
   * every later commit fails, and the coordinator stops acknowledging.
   */
  private fail(err: unknown, batch: Waiter[] = []): void {
    this.failed ??= new KilnError('E_STATE', `writing the state in ${this.opts.dataDir} failed: ${coerceError(err).message}`, { cause: err });
    for (const w of batch) w.reject(this.failed);
    for (const w of this.waiting.splice(0)) w.reject(this.failed);
  }

  /**
   * Compaction without stopping commits: the state is serialized now (synchronously, in
   * `db.write()`), and while that snapshot is written, synced and renamed, commits go on
   * appending to the journal and are acknowledged as before (their lines are kept in
   * `tail`). Once the snapshot is durable, the journal is replaced (temp file, fsync,
   * rename, fsync dir) by just those lines, between two batches (`swapJournal`). A crash
   * at any point leaves a snapshot and a journal whose replay gives every acknowledged
   * change: before the rename, the whole old journal replays over the newer snapshot
   * (entries are idempotent upserts); after it, only the lines written since the snapshot.
   */
  private startCompaction(): void {
    let finish!: (err?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => {
      finish = (err?: unknown) => (err === undefined ? resolve() : reject(coerceError(err)));
    });
    const c = { tail: [] as string[], snapshotted: false, done, finish };
    this.compaction = c;
    void done.catch(() => {}); // failures reach waiters through fail()
    this.db.write().then(
      () => {
        c.snapshotted = true;
        // No batch in flight: swap now; otherwise the flush loop swaps between two batches.
        if (!this.writing) void this.flush();
      },
      (err: unknown) => {
        this.compaction = null;
        this.fail(err);
        c.finish(err);
      },
    );
  }

  /** Replaces the journal by the lines written since the snapshot (called with `writing` held). */
  private async swapJournal(): Promise<void> {
    const c = this.compaction;
    if (!c) return;
    this.compaction = null;
    try {
      const text = c.tail.join('');
      await writeFileDurable(this.journalPath, text, 0o600);
      await this.journal?.close();
      this.journal = null;
      this.journalBytes = Buffer.byteLength(text);
      this.writes++;
      this.snapshots++;
      c.finish();
    } catch (err) {
      this.fail(err);
      c.finish(err);
    }
  }

  /** Writes a full snapshot, then empties the journal (called with `writing` held, no compaction running). */
  private async compact(): Promise<void> {
    await this.db.write();
    const fh = await this.journalHandle();
    await fh.truncate(0);
    await fh.datasync();
    this.journalBytes = 0;
    this.writes++;
    this.snapshots++;
  }

  private async journalHandle(): Promise<FileHandle> {
    if (!this.journal) {
      this.journal = await openJournal(this.journalPath);
      await fsyncDir(this.opts.dataDir);
    }
    return this.journal;
  }

  private async replayJournal(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.journalPath, 'utf8');
    } catch (err) {
      const what = errnoCode(err) === 'ENOENT' ? 'is missing' : `cannot be read (${errnoCode(err) ?? coerceError(err).message})`;
      throw new KilnError('E_STATE', `state journal ${this.journalPath} ${what}; it holds changes newer than ${this.path}. Restore it from a backup.`, { cause: err });
    }
    const lines = text.split('\n');
    const torn = lines.pop() ?? ''; // text after the last newline: an unacknowledged partial write
    lines.forEach((line, i) => {
      if (!line) return;
      let entry: unknown;
      try {
        entry = JSON.parse(line);
      } catch (err) {
        throw new KilnError('E_STATE', `state journal ${this.journalPath} is corrupt at line ${i + 1} (${coerceError(err).message}); it was left as it is for inspection`);
      }
      const problem = entryProblem(entry, this.data, (b, name) => this.nodesByName(b).has(name));
      if (problem) throw new KilnError('E_STATE', `state journal ${this.journalPath} line ${i + 1}: ${problem}; it was left as it is for inspection`);
      this.apply(entry as JournalEntry);
    });
    this.journal = await open(this.journalPath, 'r+');
    if (torn) await this.journal.truncate(Buffer.byteLength(text) - Buffer.byteLength(torn));
    this.journalBytes = Buffer.byteLength(text) - Buffer.byteLength(torn);
    await this.journal.close();
    this.journal = null;
    if (this.journalBytes > 0) {
      await this.compact();
    }
  }

  /** Applies an entry `entryProblem` accepted. */
  private apply(e: JournalEntry): void {
    const { builds, archived } = this.data;
    switch (e.t) {
      case 'new':
        if (!archived.has(e.b.id)) builds.set(e.b.id, e.b);
        return;
      case 'build': {
        const b = builds.get(e.b.id);
        if (b) Object.assign(b, e.b); // else archived later in the journal: the archive file has it
        return;
      }
      case 'node': {
        const b = builds.get(e.id);
        const n = b ? this.nodesByName(b).get(e.name) : undefined;
        if (n) Object.assign(n, e.n);
        return;
      }
      case 'archive':
        builds.delete(e.id);
        archived.set(e.id, e.s);
        return;
      case 'revive':
        archived.delete(e.b.id);
        builds.set(e.b.id, e.b);
        return;
      case 'dlq':
        if (e.r) this.data.deadLetter.set(e.k, e.r);
        else this.data.deadLetter.delete(e.k);
        return;
      case 'control':
        if (e.r) this.data.agentControls.set(e.name, e.r);
        else this.data.agentControls.delete(e.name);
        return;
    }
  }

  /** Waits for in-flight writes, writes a final snapshot and closes the journal (shutdown). */
  async drain(): Promise<void> {
    if (!this.opts.persist) return;
    while (this.fileOps.size > 0) await Promise.allSettled([...this.fileOps.values()]);
    while (this.writing || this.waiting.length > 0 || this.scheduled || this.compaction) {
      await this.commit().catch(() => {});
      await this.compaction?.done.catch(() => {});
      await new Promise((r) => setImmediate(r));
    }
    if (!this.failed && this.journalBytes > 0) {
      this.writing = true;
      try {
        await this.compact();
      } finally {
        this.writing = false;
      }
    }
    await this.journal?.close();
    this.journal = null;
  }

  archivePath(id: string): string {
    return join(this.archiveDir, `${id}.json`);
  }

  /**
   * Moves a finished build out of the hot state: writes builds/<id>.json durably, then
   * replaces the build by its summary (journaled by the caller's next commit). A change
   * marked while the file was being written (a pin) makes it write the file again, so the
   * file has every change acknowledged before the build leaves the hot state. If the
   * process dies in between, the build is still active on restart and is archived again.
   */
  archive(build: BuildRecord): Promise<void> {
    return this.withBuildFile(build.id, async () => {
      if (this.data.builds.get(build.id) !== build) return; // revived or archived meanwhile
      if (this.opts.persist) {
        for (;;) {
          const version = this.versions.get(build.id);
          await writeFileDurable(this.archivePath(build.id), JSON.stringify(build), 0o600);
          if (this.versions.get(build.id) === version) break;
        }
      }
      this.archiveCache.set(build.id, build);
      this.trimCache();
      this.data.builds.delete(build.id);
      this.versions.delete(build.id);
      const s = summarize(build);
      this.data.archived.set(build.id, s);
      this.newBuilds.delete(build.id);
      this.dirtyBuilds.delete(build.id);
      this.dirtyNodes.delete(build.id);
      this.archived.push({ id: build.id, s });
    });
  }

  /**
   * Pins or unpins a build (pinned builds keep their artifacts past retention). An active
   * build is changed in memory and journaled (an archive in progress writes its file
   * again); an archived one has its file rewritten durably and its summary journaled
   * again. Resolves once durable.
   */
  async setPinned(id: string, pinned: boolean): Promise<BuildRecord | null> {
    const active = this.data.builds.get(id);
    if (active) {
      active.pinned = pinned;
      this.markBuild(id);
      await this.commit();
      // An archive that was writing the file sees the change and writes it again: wait for that too.
      await this.fileOps.get(id);
      return active;
    }
    if (!this.data.archived.has(id)) return null;
    return this.withBuildFile(id, async () => {
      const now = this.data.builds.get(id);
      if (now) {
        // Revived (a retry) meanwhile: the active build is the truth now.
        now.pinned = pinned;
        this.markBuild(id);
        await this.commit();
        return now;
      }
      const build = await this.getBuild(id);
      if (!build) return null;
      build.pinned = pinned;
      if (this.opts.persist) await writeFileDurable(this.archivePath(id), JSON.stringify(build), 0o600);
      const s = summarize(build);
      this.data.archived.set(id, s);
      this.archived.push({ id, s });
      await this.commit();
      return build;
    });
  }

  /** A build by id: active ones from memory, archived ones from their file. */
  async getBuild(id: string): Promise<BuildRecord | null> {
    const active = this.data.builds.get(id);
    if (active) return active;
    if (!this.data.archived.has(id)) return null;
    const cached = this.archiveCache.get(id);
    if (cached) return cached;
    const path = this.archivePath(id);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new KilnError('E_STATE', `archived build file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
    }
    let build: BuildRecord;
    try {
      build = JSON.parse(text) as BuildRecord;
    } catch (err) {
      throw new KilnError('E_STATE', `archived build file ${path} is corrupt (${coerceError(err).message})`, { cause: err });
    }
    if (build?.id !== id || !Array.isArray(build.nodes)) throw new KilnError('E_STATE', `archived build file ${path} does not hold build ${id}`);
    // Loaded while it was revived or re-archived: the record in memory wins.
    const raced = this.data.builds.get(id) ?? this.archiveCache.get(id);
    if (raced) return raced;
    this.archiveCache.set(id, build);
    this.trimCache();
    return build;
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
