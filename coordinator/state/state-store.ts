/**
 * The coordinator's durable state: a lowdb snapshot (`state.json`, written through the
 * durable adapter) plus an append-only journal (`journal.jsonl`), with group commit and
 * archiving of finished builds.
 *
 * Callers change `data` in memory (synchronously, so changes are atomic with respect to
 * each other), mark what they changed (`markNew`, `markBuild`, `markNode`), and then
 * `await commit()`; the promise resolves once everything changed before the call is on
 * disk. A commit appends one line per changed build/node to the journal and fdatasyncs
 * it: its cost follows the number of changes, not the size of the state, and commits
 * that arrive while a write is in flight share the next one. When the journal grows past
 * the snapshot's size (and a floor), the whole state is written as a new snapshot
 * (temp, fsync, rename, fsync dir) and the journal is emptied.
 *
 * Journal entries are idempotent upserts, so replaying a journal on top of a snapshot that
 * already contains some of it (a crash between snapshot and truncation) is harmless. A
 * final line without its newline is a write that was never acknowledged and is dropped;
 * any other bad line is corruption and stops the coordinator with the file and line named.
 */
import { mkdir, open, readFile, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Low } from 'lowdb';
import { KilnError, errnoCode } from '../../shared/index.js';
import { DurableJsonAdapter } from './durable-json-adapter.js';
import { fsyncDir, writeFileDurable } from './durable-file.js';
import { emptyState, stateProblem, summarize, type AgentControlRecord, type BuildRecord, type BuildSummaryRecord, type DeadLetterRecord, type NodeRecord, type StateData } from './records.js';

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

/** Build fields that change after creation (the rest of a build is immutable). */
type BuildHead = Pick<BuildRecord, 'id' | 'state' | 'cancel_requested' | 'started_at' | 'finished_at' | 'pinned'>;
/** Node fields that change after creation. */
type NodeMutable = Pick<NodeRecord, 'state' | 'attempts' | 'ready_at' | 'started_at' | 'finished_at' | 'reason' | 'reused_from' | 'waiting_on' | 'retries' | 'budget_from'>;

type JournalEntry =
  | { t: 'new'; b: BuildRecord }
  /** An archived build made active again (a node retried): the whole build, replacing its summary. */
  | { t: 'revive'; b: BuildRecord }
  /** A dead-letter record set (r) or removed (null), by `<build>/<node>`. */
  | { t: 'dlq'; k: string; r: DeadLetterRecord | null }
  /** An agent's operator control set (r) or cleared (null). */
  | { t: 'control'; name: string; r: AgentControlRecord | null }
  | { t: 'build'; b: BuildHead }
  | { t: 'node'; id: string; name: string; n: NodeMutable }
  | { t: 'archive'; id: string; s: BuildSummaryRecord };

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
  private readonly minCompactBytes: number;
  /** Durable writes done: journal appends and snapshots (for tests and metrics). */
  writes = 0;
  /** Snapshots written (compactions). */
  snapshots = 0;

  private constructor(private readonly opts: StateStoreOptions) {
    this.path = join(opts.dataDir, STATE_FILE);
    this.journalPath = join(opts.dataDir, JOURNAL_FILE);
    this.archiveDir = join(opts.dataDir, 'builds');
    this.minCompactBytes = opts.minCompactBytes ?? 16 * 1024 * 1024;
    const adapter = new DurableJsonAdapter<StateData>(this.path, {
      validate: stateProblem,
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
      if (errnoCode(err) !== 'ENOENT') throw new KilnError('E_STATE', `state file ${store.path} cannot be read (${errnoCode(err) ?? (err as Error).message})`, { cause: err });
      exists = false;
    }
    if (!exists && opts.init) {
      let journalExists = true;
      await readFile(store.journalPath).catch(() => (journalExists = false));
      if (journalExists) throw new KilnError('E_STATE', `journal ${store.journalPath} exists but ${store.path} does not; refusing to start a new state over it (move it away to start over)`);
      await store.db.write();
      store.writes++;
      store.journal = await open(store.journalPath, 'a', 0o600);
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

  /** A build created since the last commit (journaled whole). */
  markNew(buildId: string): void {
    this.newBuilds.add(buildId);
  }

  /** Build-level fields (state, cancel_requested, times) changed. */
  markBuild(buildId: string): void {
    this.dirtyBuilds.add(buildId);
  }

  /** A node's state, attempts or times changed. */
  markNode(buildId: string, node: string): void {
    let set = this.dirtyNodes.get(buildId);
    if (!set) {
      set = new Set();
      this.dirtyNodes.set(buildId, set);
    }
    set.add(node);
  }

  /** A dead-letter entry was added or removed (`data.dead_letter[key]`). */
  markDeadLetter(key: string): void {
    this.dirtyDlq.add(key);
  }

  /** An agent's control was set or cleared (`data.agent_controls[name]`). */
  markControl(name: string): void {
    this.dirtyControls.add(name);
  }

  /**
   * Makes an archived build active again (a retry of one of its nodes): loads its file,
   * puts it back in `data.builds` and journals it whole at the next commit. Returns the
   * active build (already active: as it is).
   */
  async revive(id: string): Promise<BuildRecord | null> {
    const active = this.data.builds[id];
    if (active) return active;
    const build = await this.getBuild(id);
    if (!build) return null;
    if (this.data.builds[id]) return this.data.builds[id]!;
    delete this.data.archived[id];
    this.archiveCache.delete(id);
    this.data.builds[id] = build;
    this.archived = this.archived.filter((a) => a.id !== id);
    this.revived.add(id);
    return build;
  }

  /** Resolves when every change made (and marked) before this call is durable. */
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

  /** Journal lines for everything marked, read from the current in-memory state. */
  private takeEntries(): string {
    const lines: string[] = [];
    const builds = this.data.builds;
    for (const id of this.revived) {
      const b = builds[id];
      if (b) lines.push(JSON.stringify({ t: 'revive', b } satisfies JournalEntry));
      this.newBuilds.delete(id);
      this.dirtyBuilds.delete(id);
      this.dirtyNodes.delete(id);
    }
    this.revived.clear();
    for (const id of this.newBuilds) {
      const b = builds[id];
      if (b) lines.push(JSON.stringify({ t: 'new', b } satisfies JournalEntry));
      this.dirtyBuilds.delete(id);
      this.dirtyNodes.delete(id);
    }
    for (const id of this.dirtyBuilds) {
      const b = builds[id];
      if (b) lines.push(JSON.stringify({ t: 'build', b: { id: b.id, state: b.state, cancel_requested: b.cancel_requested, started_at: b.started_at, finished_at: b.finished_at, pinned: b.pinned ?? false } } satisfies JournalEntry));
    }
    for (const [id, names] of this.dirtyNodes) {
      const b = builds[id];
      if (!b) continue;
      // A build's node list never changes after submission: index it once, not per commit.
      let byName = this.nodeIndex.get(b.nodes);
      if (!byName) {
        byName = new Map(b.nodes.map((n) => [n.name, n]));
        this.nodeIndex.set(b.nodes, byName);
      }
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
        lines.push(JSON.stringify({ t: 'node', id, name, n: m } satisfies JournalEntry));
      }
    }
    for (const a of this.archived) lines.push(JSON.stringify({ t: 'archive', id: a.id, s: a.s } satisfies JournalEntry));
    for (const k of this.dirtyDlq) lines.push(JSON.stringify({ t: 'dlq', k, r: this.data.dead_letter?.[k] ?? null } satisfies JournalEntry));
    for (const name of this.dirtyControls) lines.push(JSON.stringify({ t: 'control', name, r: this.data.agent_controls?.[name] ?? null } satisfies JournalEntry));
    this.dirtyDlq.clear();
    this.dirtyControls.clear();
    this.newBuilds.clear();
    this.dirtyBuilds.clear();
    this.dirtyNodes.clear();
    this.archived = [];
    return lines.length > 0 ? `${lines.join('\n')}\n` : '';
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    if (this.writing || this.waiting.length === 0) return;
    this.writing = true;
    const batch = this.waiting;
    this.waiting = [];
    try {
      const text = this.takeEntries();
      if (text) {
        const fh = await this.journalHandle();
        await fh.write(text);
        await fh.datasync();
        this.journalBytes += Buffer.byteLength(text);
        this.writes++;
      }
      if (this.journalBytes > Math.max(this.minCompactBytes, this.snapshotBytes)) await this.compact();
      for (const w of batch) w.resolve();
    } catch (err) {
      // A failed state write means durability can no longer be promised: every waiter and
      // every later commit fails, and the coordinator stops acknowledging.
      this.failed = new KilnError('E_STATE', `writing the state in ${this.opts.dataDir} failed: ${(err as Error).message}`, { cause: err });
      for (const w of batch) w.reject(this.failed);
      for (const w of this.waiting.splice(0)) w.reject(this.failed);
    } finally {
      this.writing = false;
    }
    if (this.waiting.length > 0 && !this.failed) await this.flush();
  }

  /** Writes a full snapshot, then empties the journal (called with `writing` held). */
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
      this.journal = await open(this.journalPath, 'a', 0o600);
      await fsyncDir(this.opts.dataDir);
    }
    return this.journal;
  }

  private async replayJournal(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.journalPath, 'utf8');
    } catch (err) {
      const what = errnoCode(err) === 'ENOENT' ? 'is missing' : `cannot be read (${errnoCode(err) ?? (err as Error).message})`;
      throw new KilnError('E_STATE', `state journal ${this.journalPath} ${what}; it holds changes newer than ${this.path}. Restore it from a backup.`, { cause: err });
    }
    const lines = text.split('\n');
    const torn = lines.pop() ?? ''; // text after the last newline: an unacknowledged partial write
    lines.forEach((line, i) => {
      if (!line) return;
      let entry: JournalEntry;
      try {
        entry = JSON.parse(line) as JournalEntry;
      } catch (err) {
        throw new KilnError('E_STATE', `state journal ${this.journalPath} is corrupt at line ${i + 1} (${(err as Error).message}); it was left as it is for inspection`);
      }
      this.apply(entry, i + 1);
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

  private apply(e: JournalEntry, line: number): void {
    const builds = this.data.builds;
    const bad = (why: string) => new KilnError('E_STATE', `state journal ${this.journalPath} line ${line}: ${why}`);
    switch (e.t) {
      case 'new':
        if (!this.data.archived[e.b.id]) builds[e.b.id] = e.b;
        return;
      case 'build': {
        const b = builds[e.b.id];
        if (!b) {
          if (this.data.archived[e.b.id]) return;
          throw bad(`update of unknown build ${e.b.id}`);
        }
        Object.assign(b, e.b);
        return;
      }
      case 'node': {
        const b = builds[e.id];
        if (!b) {
          if (this.data.archived[e.id]) return;
          throw bad(`update of a node of unknown build ${e.id}`);
        }
        const n = b.nodes.find((x) => x.name === e.name);
        if (!n) throw bad(`update of unknown node ${e.id}/${e.name}`);
        Object.assign(n, e.n);
        return;
      }
      case 'archive':
        delete builds[e.id];
        this.data.archived[e.id] = e.s;
        return;
      case 'revive':
        delete this.data.archived[e.b.id];
        builds[e.b.id] = e.b;
        return;
      case 'dlq': {
        const dl = (this.data.dead_letter ??= {});
        if (e.r) dl[e.k] = e.r;
        else delete dl[e.k];
        return;
      }
      case 'control': {
        const ctl = (this.data.agent_controls ??= {});
        if (e.r) ctl[e.name] = e.r;
        else delete ctl[e.name];
        return;
      }
      default:
        throw bad(`unknown entry type ${JSON.stringify((e as { t?: unknown }).t)}`);
    }
  }

  /** Waits for in-flight writes, writes a final snapshot and closes the journal (shutdown). */
  async drain(): Promise<void> {
    if (!this.opts.persist) return;
    while (this.writing || this.waiting.length > 0 || this.scheduled) {
      await this.commit().catch(() => {});
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
   * replaces the build by its summary (journaled by the caller's next commit). If the
   * process dies in between, the build is still active on restart and is archived again.
   */
  async archive(build: BuildRecord): Promise<void> {
    if (this.opts.persist) await writeFileDurable(this.archivePath(build.id), JSON.stringify(build), 0o600);
    this.archiveCache.set(build.id, build);
    this.trimCache();
    delete this.data.builds[build.id];
    const s = summarize(build);
    this.data.archived[build.id] = s;
    this.newBuilds.delete(build.id);
    this.dirtyBuilds.delete(build.id);
    this.dirtyNodes.delete(build.id);
    this.archived.push({ id: build.id, s });
  }

  /**
   * Pins or unpins a build (pinned builds keep their artifacts past retention). An active
   * build is changed in memory and journaled; an archived one has its file rewritten
   * durably and its summary journaled again. Resolves once durable.
   */
  async setPinned(id: string, pinned: boolean): Promise<BuildRecord | null> {
    const active = this.data.builds[id];
    if (active) {
      active.pinned = pinned;
      this.markBuild(id);
      await this.commit();
      return active;
    }
    const build = await this.getBuild(id);
    if (!build) return null;
    if (this.data.builds[id]) return this.setPinned(id, pinned); // revived (a retry) meanwhile
    build.pinned = pinned;
    if (this.opts.persist) await writeFileDurable(this.archivePath(id), JSON.stringify(build), 0o600);
    const revived = this.data.builds[id] as BuildRecord | undefined;
    if (revived) {
      // Revived while the file was written: the active build is the truth now.
      revived.pinned = pinned;
      this.markBuild(id);
      await this.commit();
      return revived;
    }
    const s = summarize(build);
    this.data.archived[id] = s;
    this.archived.push({ id, s });
    await this.commit();
    return build;
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
