/**
 * The coordinator's durable state: the state in memory, what changed in it, the journal
 * lines for those changes, and archiving of finished builds. Making them durable and reading
 * them back is a backend's (`state-backend.ts`): the embedded one by default (a lowdb
 * snapshot `state.json`, the O_DSYNC journal `journal.jsonl`, `builds/<id>.json`; see
 * `embedded-backend.ts` and `JournalWriter`, whose header states the durability contract),
 * or PostgreSQL (`pg/pg-state-backend.ts`). Both replay the same journal text.
 *
 * Callers change `data` in memory (synchronously, so changes are atomic with respect to
 * each other), mark what they changed (`markNew`, `markBuild`, `markNodeFields`,
 * `markAttempt`, or `markNode` for a whole node), and then `await commit()`; the promise
 * resolves once everything changed before the call is on disk. A commit appends one line
 * per changed build/node to the journal, and a node's line carries only what changed in
 * it (its own fields, the attempts from the first changed one on, each whole the first time
 * after a start or a snapshot and then as a patch of what changed): its cost follows the
 * number of changes, not the size of the state or of a node's history, and commits that
 * arrive while a write is in flight share the next one.
 *
 * Only entries that replay are written: every index is a Map (no key can reach
 * Object.prototype), `markBuild`/`markNode` refuse a build or node the state does not
 * hold (the caller's request fails; nothing is journaled), and each entry is checked by
 * the same `entryProblem` that replay uses before its line is appended.
 *
 * Archive files (`builds/<id>.json`) are written one at a time per build (archive, pin,
 * revive), and an archive whose build changed while its file was being written (a pin
 * racing the archive) is written again, so a change acknowledged meanwhile is in the file.
 */
import { join } from 'node:path';
import { KilnError, coerceError } from '../../shared/index.js';
import { entryProblem, type JournalEntry } from './journal-entries.js';
import { attemptPatch, attemptTuple, journaledTuple, nodeHeadTuple, type AttemptPatch, type JournaledTuple } from './node-delta.js';
import { EmbeddedBackend, JOURNAL_FILE, STATE_FILE } from './embedded-backend.js';
import type { StateBackend } from './state-backend.js';
import { emptyState, summarize, type AttemptRecord, type BuildRecord, type BuildSummaryRecord, type NodeRecord, type StateData } from './records.js';

export interface StateStoreOptions {
  dataDir: string;
  /** false = keep everything in memory (benchmarks only): commit() resolves at once. */
  persist: boolean;
  /** Create a new state when state.json is missing. Never overwrites an existing one. */
  init: boolean;
  /**
   * Journal size that triggers a snapshot, at least. A snapshot serialises the whole state
   * on the main thread, so its cost per journaled byte is (state size / this floor) while
   * the state is smaller than the floor; a bigger floor means a longer replay after a crash
   * (a 57 MiB journal of a 45,000-node build: 4 s to open on a loaded 2-core VM, snapshot
   * included). Redis rewrites its append-only file from 64 MB up. @default 32 MiB
   */
  minCompactBytes?: number;
  /** Benchmarks only (JournalWriterOptions.unsynced): the journal is written but never synced. */
  unsyncedJournal?: boolean;
  /** Another backend than the embedded files in `dataDir` (PostgreSQL, issue 14). */
  backend?: StateBackend;
}

/** What changed in a node since the last batch: its own fields, and its attempts from index `from` on (Infinity: none). */
interface DirtyNode {
  head: boolean;
  from: number;
}

export class StateStore {
  readonly path: string;
  readonly journalPath: string;
  readonly archiveDir: string;
  /** Where the state is kept; null when nothing is (persist: false). */
  private readonly backend: StateBackend | null;
  private state: StateData = emptyState();
  private readonly newBuilds = new Set<string>();
  private readonly dirtyBuilds = new Set<string>();
  private readonly dirtyNodes = new Map<string, Map<string, DirtyNode>>();
  private archived: Array<{ id: string; s: BuildSummaryRecord }> = [];
  private readonly revived = new Set<string>();
  /** Each attempt as the journal holds it since the last snapshot (absent: its next line is whole). */
  private journaled = new WeakMap<AttemptRecord, JournaledTuple>();
  /** Node name -> record per build node list (journal lines look nodes up by name). */
  private readonly nodeIndex = new WeakMap<readonly NodeRecord[], Map<string, NodeRecord>>();
  private readonly dirtyDlq = new Set<string>();
  private readonly dirtyControls = new Set<string>();
  private readonly archiveCache = new Map<string, BuildRecord>();
  /** Changes marked per active build: an archive write that saw a different count is written again. */
  private readonly versions = new Map<string, number>();
  /** The archive-file operation running per build (archive, pin, revive run one at a time). */
  private readonly fileOps = new Map<string, Promise<unknown>>();
  /** This open created a new, empty state (--init or a new data dir); false when one was read. */
  created = false;

  private constructor(private readonly opts: StateStoreOptions) {
    this.journalPath = join(opts.dataDir, JOURNAL_FILE);
    this.archiveDir = join(opts.dataDir, 'builds');
    this.backend = !opts.persist
      ? null
      : (opts.backend ??
        new EmbeddedBackend({ dataDir: opts.dataDir, minCompactBytes: opts.minCompactBytes ?? 32 * 1024 * 1024, unsyncedJournal: opts.unsyncedJournal ?? false }));
    this.path = this.backend?.kind === 'postgres' ? this.backend.location : join(opts.dataDir, STATE_FILE);
  }

  /** Which backend keeps the state (embedded also when nothing is persisted). */
  get kind(): 'embedded' | 'postgres' {
    return this.backend?.kind ?? 'embedded';
  }

  /** Durable writes done: journal appends and snapshots (for tests and metrics). */
  get writes(): number {
    return this.backend?.writes ?? 0;
  }

  /** Snapshots written (compactions). */
  get snapshots(): number {
    return this.backend?.snapshots ?? 0;
  }

  /** Runs of zeros written ahead of the journal's end. */
  get preallocations(): number {
    return this.backend?.preallocations ?? 0;
  }

  /**
   * Opens the state: snapshot, then journal replay. A missing state is an error unless
   * `init` is set; a corrupt one is always an error and is left untouched.
   */
  static async open(opts: StateStoreOptions): Promise<StateStore> {
    const store = new StateStore(opts);
    if (!store.backend) return store;
    const { data, created } = await store.backend.open(
      {
        data: () => store.state,
        takeText: () => store.journalText(store.takeEntries()),
        nodesByName: (b) => store.nodesByName(b),
        snapshotTaken: () => {
          store.journaled = new WeakMap();
        },
      },
      opts.init,
    );
    store.state = data;
    store.created = created;
    return store;
  }

  get data(): StateData {
    return this.state;
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

  /** The whole node changed: its own fields and all of its attempts. */
  markNode(buildId: string, node: string): void {
    const d = this.dirtyNode(buildId, node);
    d.head = true;
    d.from = 0;
  }

  /** A node's own fields (state, times, reason, ...) changed; not its attempts. */
  markNodeFields(buildId: string, node: string): void {
    this.dirtyNode(buildId, node).head = true;
  }

  /** The attempt at `index` of a node changed, or was added (journaled alone, not with the node's other attempts). */
  markAttempt(buildId: string, node: string, index: number): void {
    const d = this.dirtyNode(buildId, node, index);
    if (index < d.from) d.from = index;
  }

  /** The dirty record of a node of an active build (refusing one the state does not hold, or an attempt index it does not have). */
  private dirtyNode(buildId: string, node: string, attempt?: number): DirtyNode {
    const b = this.activeBuild(buildId, `update of node ${JSON.stringify(node)}`);
    const n = this.nodesByName(b).get(node);
    if (!n) throw new KilnError('E_INTERNAL', `state: update of unknown node ${JSON.stringify(node)} of build ${buildId}`);
    if (attempt !== undefined && !(Number.isInteger(attempt) && attempt >= 0 && attempt < n.attempts.length)) {
      throw new KilnError('E_INTERNAL', `state: update of attempt ${attempt} of node ${buildId}/${node}, which has ${n.attempts.length} attempts`);
    }
    let nodes = this.dirtyNodes.get(buildId);
    if (!nodes) {
      nodes = new Map();
      this.dirtyNodes.set(buildId, nodes);
    }
    let d = nodes.get(node);
    if (!d) {
      d = { head: false, from: Infinity };
      nodes.set(node, d);
    }
    this.bump(buildId);
    return d;
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
    if (!this.backend) return Promise.resolve();
    return this.backend.commit();
  }

  /**
   * A build journaled whole (`new`, `revive`): its attempts' next lines are whole too. A
   * revived build can come back as the same objects (the archive cache), whose last
   * journaled tuples may predate changes only the archive file and the whole line carry.
   */
  private forgetJournaled(b: BuildRecord): void {
    for (const n of b.nodes) for (const a of n.attempts) this.journaled.delete(a);
  }

  /** Journal entries for everything marked, read from the current in-memory state. */
  private takeEntries(): JournalEntry[] {
    const entries: JournalEntry[] = [];
    const builds = this.data.builds;
    for (const id of this.revived) {
      const b = builds.get(id);
      if (b) {
        entries.push({ t: 'revive', b });
        this.forgetJournaled(b);
      }
      this.newBuilds.delete(id);
      this.dirtyBuilds.delete(id);
      this.dirtyNodes.delete(id);
    }
    this.revived.clear();
    for (const id of this.newBuilds) {
      const b = builds.get(id);
      if (b) {
        entries.push({ t: 'new', b });
        this.forgetJournaled(b);
      }
      this.dirtyBuilds.delete(id);
      this.dirtyNodes.delete(id);
    }
    for (const id of this.dirtyBuilds) {
      const b = builds.get(id);
      if (b) entries.push({ t: 'build', b: { id: b.id, state: b.state, cancel_requested: b.cancel_requested, started_at: b.started_at, finished_at: b.finished_at, pinned: b.pinned ?? false } });
    }
    for (const [id, nodes] of this.dirtyNodes) {
      const b = builds.get(id);
      if (!b) continue;
      const byName = this.nodesByName(b);
      for (const [name, d] of nodes) {
        const n = byName.get(name);
        if (!n) continue;
        let k = Math.min(d.from, n.attempts.length);
        // Attempts the journal holds (whole, since the last snapshot): the fields that changed.
        let p: AttemptPatch[] | undefined;
        for (; k < n.attempts.length; k++) {
          const prev = this.journaled.get(n.attempts[k]!);
          if (!prev) break;
          const patch = attemptPatch(k, prev, attemptTuple(n.attempts[k]!));
          if (patch) (p ??= []).push(patch);
        }
        // The rest whole (new attempts; after a restart or a snapshot, every attempt once).
        const i = k;
        const a = [];
        for (; k < n.attempts.length; k++) {
          const t = attemptTuple(n.attempts[k]!);
          a.push(t);
          this.journaled.set(n.attempts[k]!, journaledTuple(t));
        }
        if (a.length === 0 && !p && !d.head) continue;
        // With patches, a `patch` entry: a coordinator that does not know patches refuses it instead of skipping them.
        const e: Extract<JournalEntry, { t: 'delta' | 'patch' }> = p ? { t: 'patch', id, name, i, a, p } : { t: 'delta', id, name, i, a };
        if (d.head) e.n = nodeHeadTuple(n);
        entries.push(e);
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
      const problem = entryProblem(e, this.data, (b, name) => this.nodesByName(b).get(name));
      if (problem) {
        // Cannot happen through markX (which refuse unknown builds and nodes); never write what replay would refuse.
        process.emitWarning(`kiln state: journal entry refused before it was written: ${problem}`);
        continue;
      }
      lines.push(JSON.stringify(e));
    }
    return lines.length > 0 ? `${lines.join('\n')}\n` : '';
  }

  /** Waits for in-flight writes, writes a final snapshot and closes the journal (shutdown). */
  async drain(): Promise<void> {
    if (!this.backend) return;
    while (this.fileOps.size > 0) await Promise.allSettled([...this.fileOps.values()]);
    await this.backend.drain();
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
      if (this.backend) {
        for (;;) {
          const version = this.versions.get(build.id);
          await this.backend?.writeArchive(build.id, JSON.stringify(build));
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
      await this.backend?.writeArchive(id, JSON.stringify(build));
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
    const where = this.backend?.kind === 'postgres' ? `archived build ${id} in ${this.path}` : `archived build file ${this.archivePath(id)}`;
    if (!this.backend) throw new KilnError('E_STATE', `${where} cannot be read (nothing is persisted)`);
    const text = await this.backend.readArchive(id);
    let build: BuildRecord;
    try {
      build = JSON.parse(text) as BuildRecord;
    } catch (err) {
      throw new KilnError('E_STATE', `${where} is corrupt (${coerceError(err).message})`, { cause: err });
    }
    if (build?.id !== id || !Array.isArray(build.nodes)) throw new KilnError('E_STATE', `${where} does not hold build ${id}`);
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
}
