/**
 * The state journal's entries (`journal.jsonl`, one JSON object per line): their shapes,
 * and `entryProblem`, the one check that says whether an entry can be replayed on a state.
 * The store runs it on every line it is about to append (so only entries that replay are
 * written) and on every line it replays (so a bad line stops the coordinator, naming it).
 *
 * A node's change is journaled as what changed in it (issue 10): a `delta` entry with its
 * own fields when they changed and the attempts from the first changed one on, as value
 * tuples (node-delta.ts), never the node's whole attempt history; an attempt the journal
 * already holds goes as a patch of the fields that changed (`p`, in a `patch` entry, which
 * a coordinator from before patches refuses rather than replaying the line without them).
 * The `node` entry (the
 * whole node with all of its attempts, as objects) is no longer written; journals that
 * hold it still replay.
 */
import type { AgentControlRecord, BuildRecord, BuildSummaryRecord, DeadLetterRecord, NodeRecord, StateData } from './records.js';
import { attemptPatchProblem, attemptTupleProblem, nodeHeadTupleProblem, type AttemptPatch, type AttemptTuple, type NodeHeadTuple } from './node-delta.js';

/** Build fields that change after creation (the rest of a build is immutable). */
export type BuildHead = Pick<BuildRecord, 'id' | 'state' | 'cancel_requested' | 'started_at' | 'finished_at' | 'pinned'>;
/** Node fields that change after creation. */
export type NodeMutable = Pick<NodeRecord, 'state' | 'attempts' | 'ready_at' | 'started_at' | 'finished_at' | 'reason' | 'reused_from' | 'waiting_on' | 'retries' | 'budget_from'>;

/** What a `node` entry carries for `n`: its fields that change after creation (the C8 benchmark's sqlite row too). */
export function nodeMutable(n: NodeRecord): NodeMutable {
  return {
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
}

export type JournalEntry =
  | { t: 'new'; b: BuildRecord }
  /** An archived build made active again (a node retried): the whole build, replacing its summary. */
  | { t: 'revive'; b: BuildRecord }
  /** A dead-letter record set (r) or removed (null), by `<build>/<node>`. */
  | { t: 'dlq'; k: string; r: DeadLetterRecord | null }
  /** An agent's operator control set (r) or cleared (null). */
  | { t: 'control'; name: string; r: AgentControlRecord | null }
  | { t: 'build'; b: BuildHead }
  /** A whole node (own fields and every attempt): written before `delta` existed, still replayed. */
  | { t: 'node'; id: string; name: string; n: NodeMutable }
  /** What changed in a node: its attempts from index `i` on (replaced or appended, whole; may be none) and its own fields when they changed (`n`). */
  | { t: 'delta'; id: string; name: string; i: number; a: AttemptTuple[]; n?: NodeHeadTuple }
  /** A `delta` with patches of attempts before `i` the journal already holds (`p`, never empty). */
  | { t: 'patch'; id: string; name: string; i: number; a: AttemptTuple[]; p: AttemptPatch[]; n?: NodeHeadTuple }
  | { t: 'archive'; id: string; s: BuildSummaryRecord };

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/**
 * Why a journal entry cannot be replayed on `data` (shape, or what it refers to), or null.
 * Used on replay and, before anything is appended, on every line written.
 */
export function entryProblem(e: unknown, data: StateData, nodeOf: (b: BuildRecord, name: string) => NodeRecord | undefined = (b, name) => b.nodes.find((n) => n.name === name)): string | null {
  if (!isObj(e)) return 'not a JSON object';
  switch (e.t) {
    case 'new':
    case 'revive': {
      const b = e.b;
      if (!isObj(b) || !isStr(b.id) || !Array.isArray(b.nodes)) return `${e.t} entry without a build record`;
      return null;
    }
    case 'build': {
      const b = e.b;
      if (!isObj(b) || !isStr(b.id)) return 'build entry without a build id';
      if (!data.builds.has(b.id) && !data.archived.has(b.id)) return `update of unknown build ${b.id}`;
      return null;
    }
    case 'node': {
      if (!isStr(e.id) || !isStr(e.name) || !isObj(e.n)) return 'node entry without build id, node name or fields';
      const b = data.builds.get(e.id);
      if (!b) return data.archived.has(e.id) ? null : `update of a node of unknown build ${e.id}`;
      if (!nodeOf(b, e.name)) return `update of unknown node ${e.id}/${e.name}`;
      return null;
    }
    case 'delta':
    case 'patch': {
      if (!isStr(e.id) || !isStr(e.name) || !Array.isArray(e.a)) return `${e.t} entry without build id, node name or attempts`;
      const where = `${e.t} entry of ${e.id}/${e.name}`;
      if (typeof e.i !== 'number' || !Number.isInteger(e.i) || e.i < 0) return `${where} without a valid attempt index`;
      if (e.t === 'patch' ? !Array.isArray(e.p) || e.p.length === 0 : e.p !== undefined) return `${where} whose attempt patches are not ${e.t === 'patch' ? 'a non-empty array' : 'allowed (a patch entry carries them)'}`;
      if (e.n === undefined && e.a.length === 0 && e.p === undefined) return `${where} that changes nothing`;
      for (const t of e.a as unknown[]) {
        const problem = attemptTupleProblem(t);
        if (problem) return `${where}: ${problem}`;
      }
      for (const p of (e.p ?? []) as unknown[]) {
        const problem = attemptPatchProblem(p, e.i);
        if (problem) return `${where}: ${problem}`;
      }
      const headProblem = e.n === undefined ? null : nodeHeadTupleProblem(e.n);
      if (headProblem) return `${where}: ${headProblem}`;
      const b = data.builds.get(e.id);
      if (!b) return data.archived.has(e.id) ? null : `update of a node of unknown build ${e.id}`;
      const n = nodeOf(b, e.name);
      if (!n) return `update of unknown node ${e.id}/${e.name}`;
      if (!Array.isArray(n.attempts)) return `${where}: the node has no attempt list`;
      // Attempts are only ever appended: an index past the end would leave a hole.
      if (e.i > n.attempts.length) return `${where} at attempt index ${e.i}, but the node has ${n.attempts.length} attempts`;
      for (const p of (e.p ?? []) as unknown[][]) {
        if (!isObj(n.attempts[p[0] as number])) return `${where}: a patch of attempt index ${String(p[0])}, which is not an attempt record`;
      }
      return null;
    }
    case 'archive':
      if (!isStr(e.id) || !isObj(e.s) || e.s.id !== e.id) return 'archive entry without build id or summary';
      return null;
    case 'dlq':
      if (!isStr(e.k) || (e.r !== null && !isObj(e.r))) return 'dlq entry without key or record';
      return null;
    case 'control':
      if (!isStr(e.name) || (e.r !== null && !isObj(e.r))) return 'control entry without agent name or record';
      return null;
    default:
      return `unknown entry type ${JSON.stringify(e.t)}`;
  }
}
