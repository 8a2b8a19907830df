/**
 * The one place the engine writes builds, nodes and attempts: each method changes a
 * record and marks it for the state journal in the same call, so a change can never be
 * made without being recorded (there is no separate "mark" step to forget). Engine
 * modules change records only through here (test/unit/engine.changes.test.ts checks
 * that no other engine module calls the store's mark methods or reaches into its data).
 *
 *   changes.node(build, node, (n) => { n.reason = null; n.finished_at = null; });
 *   changes.attempt(act, (a) => { a.accepted_at = now; });
 */
import type { AgentControlRecord, AttemptRecord, BuildRecord, DeadLetterRecord, NodeRecord } from '../state/records.js';
import type { StateStore } from '../state/state-store.js';

export class Changes {
  constructor(private readonly store: StateStore) {}

  /** A newly submitted build (journaled whole). */
  addBuild(build: BuildRecord): void {
    this.store.addBuild(build);
  }

  /** Changes build-level fields (state, cancel_requested, times). */
  build(build: BuildRecord, change: (b: BuildRecord) => void): void {
    change(build);
    this.store.markBuild(build.id);
  }

  /** Changes a node's fields (its attempts too: see `attempt`, `addAttempt`). */
  node(build: BuildRecord, node: NodeRecord, change: (n: NodeRecord) => void): void {
    change(node);
    this.store.markNode(build.id, node.name);
  }

  /** Changes one attempt of a node. */
  attempt(act: { build: BuildRecord; node: NodeRecord; attempt: AttemptRecord }, change: (a: AttemptRecord) => void): void {
    change(act.attempt);
    this.store.markNode(act.build.id, act.node.name);
  }

  /** Adds a new attempt to a node. */
  addAttempt(build: BuildRecord, node: NodeRecord, attempt: AttemptRecord): void {
    node.attempts.push(attempt);
    this.store.markNode(build.id, node.name);
  }

  /**
   * Raises the count of log bytes received for an attempt. Deliberately not journaled on
   * its own (one entry per log chunk would dominate the journal): it rides along with the
   * node's next recorded change, and a restart learns it from the log file anyway.
   */
  logBytes(attempt: AttemptRecord, bytes: number): void {
    attempt.log_bytes = Math.max(attempt.log_bytes, bytes);
  }

  /** Puts a node on the dead-letter list (record) or takes it off (null); returns whether it changed. */
  deadLetter(key: string, record: DeadLetterRecord | null): boolean {
    return this.store.setDeadLetter(key, record);
  }

  /** Sets (record) or clears (null) an operator's control of an agent. */
  agentControl(name: string, record: AgentControlRecord | null): void {
    this.store.setAgentControl(name, record);
  }
}
