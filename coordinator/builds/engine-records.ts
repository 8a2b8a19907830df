/**
 * The engine's one door to the state store's records. Reads go through its queries (no
 * module reaches into `store.data`); writes go through its change methods, each of which
 * changes a record and marks it for the state journal in the same call, so a change can
 * never be made without being recorded (there is no separate "mark" step to forget).
 * test/unit/engine.records.test.ts checks that no other engine module calls the store's
 * mark methods or touches `store.data`. Committing stays with the callers
 * (`store.commit()`), which decide when a batch of changes must be durable.
 *
 *   records.node(build, node, (n) => { n.reason = null; n.finished_at = null; });
 *   records.attempt(act, (a) => { a.accepted_at = now; });
 */
import type { AgentControlRecord, AttemptRecord, BuildRecord, BuildSummaryRecord, DeadLetterRecord, NodeRecord } from '../state/records.js';
import type { StateStore } from '../state/state-store.js';

export class Records {
  constructor(private readonly store: StateStore) {}

  // ------------------------------------------------------------ queries

  /** An active (not archived) build, or undefined. */
  activeBuild(id: string): BuildRecord | undefined {
    return this.store.data.builds.get(id);
  }

  /** Every active build, in submission order. */
  activeBuilds(): IterableIterator<BuildRecord> {
    return this.store.data.builds.values();
  }

  /** Ids of the active builds, then of the archived ones. */
  buildIds(): string[] {
    return [...this.store.data.builds.keys(), ...this.store.data.archived.keys()];
  }

  /** The index entry of an archived build, or undefined. */
  archivedSummary(id: string): BuildSummaryRecord | undefined {
    return this.store.data.archived.get(id);
  }

  /** The dead-letter list, by `<build>/<node>`. */
  deadLetters(): ReadonlyMap<string, DeadLetterRecord> {
    return this.store.data.deadLetter;
  }

  /** What an operator set for an agent (paused or draining), or undefined when active. */
  agentControl(name: string): AgentControlRecord | undefined {
    return this.store.data.agentControls.get(name);
  }

  /** Every agent control that is set (paused or draining agents). */
  agentControls(): ReadonlyMap<string, AgentControlRecord> {
    return this.store.data.agentControls;
  }

  // ------------------------------------------------------------ changes (each marks what it changes)

  /** A newly submitted build (journaled whole). */
  addBuild(build: BuildRecord): void {
    this.store.data.builds.set(build.id, build);
    this.store.markNew(build.id);
  }

  /** Changes build-level fields (state, cancel_requested, times). */
  build(build: BuildRecord, change: (b: BuildRecord) => void): void {
    change(build);
    this.store.markBuild(build.id);
  }

  /** Changes a node's own fields (its attempts change only through `attempt` and `addAttempt`, which journal just that attempt). */
  node(build: BuildRecord, node: NodeRecord, change: (n: NodeRecord) => void): void {
    change(node);
    this.store.markNodeFields(build.id, node.name);
  }

  /** Changes one attempt of a node (journaled alone, not with the node's other attempts). */
  attempt(act: { build: BuildRecord; node: NodeRecord; attempt: AttemptRecord }, change: (a: AttemptRecord) => void): void {
    change(act.attempt);
    const attempts = act.node.attempts;
    // Nearly always the node's last attempt; an attempt that is not the node's is a programming error the store refuses.
    const index = attempts[attempts.length - 1] === act.attempt ? attempts.length - 1 : attempts.indexOf(act.attempt);
    this.store.markAttempt(act.build.id, act.node.name, index);
  }

  /** Adds a new attempt to a node. */
  addAttempt(build: BuildRecord, node: NodeRecord, attempt: AttemptRecord): void {
    node.attempts.push(attempt);
    this.store.markAttempt(build.id, node.name, node.attempts.length - 1);
  }

  /**
   * Raises the count of log bytes received for an attempt. Deliberately not journaled on
   * its own (one entry per log chunk would dominate the journal): it rides along with the
   * attempt's next recorded change, and a restart learns it from the log file anyway.
   */
  logBytes(attempt: AttemptRecord, bytes: number): void {
    attempt.log_bytes = Math.max(attempt.log_bytes, bytes);
  }

  /** Puts a node on the dead-letter list (record) or takes it off (null); returns whether it changed. */
  setDeadLetter(key: string, record: DeadLetterRecord | null): boolean {
    const dlq = this.store.data.deadLetter;
    const changed = record ? (dlq.set(key, record), true) : dlq.delete(key);
    if (changed) this.store.markDeadLetter(key);
    return changed;
  }

  /** Sets (record) or clears (null: active again) an operator's control of an agent. */
  setAgentControl(name: string, record: AgentControlRecord | null): void {
    const controls = this.store.data.agentControls;
    if (record) controls.set(name, record);
    else controls.delete(name);
    this.store.markControl(name);
  }
}
