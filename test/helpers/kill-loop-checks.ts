/**
 * The invariants of the coordinator kill loop (test/integration/fault.coordinator-kill-loop.test.ts)
 * as pure functions of three sources: what the client was acknowledged (builds 201, cancels
 * 202 with their answer, pins 200), what the coordinator shows afterwards (build views and
 * the build list) and what the agents really ran (the noop executor's record file,
 * KILN_NOOP_RECORD). Pure, so the same checks run on made-up histories in the test file.
 *
 * What counts as a legitimate second run of a node: the agents ran attempt A to completion,
 * then attempt B of the same node, and the coordinator's final state lists A as `lost`
 * (it gave the agent up: silent, gone past the reconnect grace, restarted) or as an
 * infrastructure failure (`failed` with `infra`). Any other earlier run is a node run twice:
 * in particular one under an attempt the coordinator never recorded.
 */
import type { NoopRunRecord } from '../../agent/executors/noop-executor.js';
import type { AttemptViewT, BuildSummaryT, BuildViewT } from '../../shared/index.js';
import { API_ROUTES, apiPath } from '../../shared/index.js';

export type ViolationKind =
  /** An acknowledged build (201) is not listed or cannot be read. */
  | 'build-lost'
  /** An acknowledged cancel (202) did not hold: the build is not `cancelled`, a node changed, or a new attempt appeared. */
  | 'cancel-lost'
  /** An acknowledged pin (200): GET /api/v1/builds/{id} says `pinned: false`. */
  | 'pin-lost'
  /** An acknowledged pin (200): the build list says `pinned: false`. */
  | 'pin-lost-in-list'
  /** An agent ran an attempt to completion that the coordinator has no record of. */
  | 'unknown-attempt'
  /** A node ran to completion twice where the first run was not given up (lost / infra failure) by the coordinator. */
  | 'ran-twice'
  /** The coordinator records two successful attempts of one node. */
  | 'two-successes'
  /** The same attempt id ran to completion twice, or on another agent than the coordinator says. */
  | 'attempt-misrun'
  /** The coordinator records a successful attempt that no agent ran to completion (or the run record is broken). */
  | 'success-not-run'
  /** A build did not end (hang guard) after the load stopped. */
  | 'not-finished'
  /** A coordinator restart failed, or the coordinator died on its own / did not stop cleanly. */
  | 'restart-failed';

export interface Violation {
  kind: ViolationKind;
  /** Build (or other subject) the violation is about, for de-duplication across rounds. */
  subject: string;
  detail: string;
}

/** One line of the noop executor's record file. */
export type RunRecord = NoopRunRecord;

export interface AckedCancel {
  id: string;
  /** The 202 answer: the build as the coordinator committed the cancel. */
  answer: BuildViewT;
}

export interface AckedPin {
  id: string;
  /** ms between the client seeing the build end (SSE `end`) and sending the pin; null if not seen live. */
  afterEndMs: number | null;
}

const TERMINAL_BUILD = new Set(['success', 'failed', 'partial', 'cancelled']);

export function isTerminalBuild(state: string): boolean {
  return TERMINAL_BUILD.has(state);
}

/** The coordinator gave this attempt up, so another attempt of its node may run even if it ran. */
export function gaveUp(a: Pick<AttemptViewT, 'state' | 'infra'>): boolean {
  return a.state === 'lost' || (a.state === 'failed' && a.infra);
}

/** Parses the record file's text; a last line without its newline (being written) is ignored. */
export function parseRunRecords(text: string): RunRecord[] {
  const lines = text.split('\n');
  lines.pop();
  return lines.filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as RunRecord);
}

/** Every acknowledged build is in the list (ids) or at least readable (views). */
export function checkBuildsExist(acked: Iterable<string>, listed: ReadonlySet<string>, views: ReadonlyMap<string, BuildViewT | null>): Violation[] {
  const out: Violation[] = [];
  for (const id of acked) {
    const listedHere = listed.has(id);
    const view = views.get(id);
    if (!listedHere || view === null) {
      out.push({ kind: 'build-lost', subject: id, detail: `build ${id} was acknowledged (201) but is ${!listedHere ? `not in GET ${API_ROUTES.builds.template}` : ''}${!listedHere && view === null ? ' and ' : ''}${view === null ? `not readable by GET ${API_ROUTES.build.template}` : ''}` });
    }
  }
  return out;
}

/** Every acknowledged cancel holds: build cancelled, every node as the 202 answer left it, no attempt added or turned successful since. */
export function checkCancels(cancels: readonly AckedCancel[], views: ReadonlyMap<string, BuildViewT | null>): Violation[] {
  const out: Violation[] = [];
  for (const { id, answer } of cancels) {
    const v = views.get(id);
    if (!v) continue; // reported as build-lost (or not looked up)
    const problems: string[] = [];
    if (v.state !== 'cancelled') problems.push(`build state is ${v.state}`);
    if (!v.cancel_requested) problems.push('cancel_requested is false');
    for (const before of answer.nodes) {
      const now = v.nodes.find((n) => n.name === before.name);
      if (!now) {
        problems.push(`node ${before.name} is gone`);
        continue;
      }
      if (now.state !== before.state) problems.push(`node ${before.name} was ${before.state} in the 202 answer, now ${now.state}`);
      const known = new Map(before.attempts.map((a) => [a.id, a]));
      for (const a of now.attempts) {
        const b = known.get(a.id);
        if (!b) problems.push(`node ${before.name} got attempt ${a.number} (${a.id}, ${a.state}) after the cancel`);
        else if (a.state === 'success' && b.state !== 'success') problems.push(`node ${before.name} attempt ${a.number} (${a.id}) was ${b.state} at the cancel and is success now`);
      }
    }
    if (problems.length > 0) out.push({ kind: 'cancel-lost', subject: id, detail: `cancel of ${id} acknowledged (202) but: ${problems.join('; ')}` });
  }
  return out;
}

/** Every acknowledged pin holds in the build view and in the build list. */
export function checkPins(pins: readonly AckedPin[], views: ReadonlyMap<string, BuildViewT | null>, summaries: ReadonlyMap<string, BuildSummaryT>): Violation[] {
  const out: Violation[] = [];
  for (const { id, afterEndMs } of pins) {
    const when = afterEndMs === null ? '' : ` (sent ${afterEndMs} ms after the build ended)`;
    const v = views.get(id);
    if (v && v.pinned !== true) out.push({ kind: 'pin-lost', subject: id, detail: `pin of ${id} acknowledged (200)${when} but GET ${apiPath.build(id)} says pinned: false (state ${v.state})` });
    const s = summaries.get(id);
    if (s && s.pinned !== true) out.push({ kind: 'pin-lost-in-list', subject: id, detail: `pin of ${id} acknowledged (200)${when} but GET ${API_ROUTES.builds.template} lists it with pinned: false` });
  }
  return out;
}

/** At most one successful attempt per node, as the coordinator records it. */
export function checkSuccesses(views: Iterable<BuildViewT>): Violation[] {
  const out: Violation[] = [];
  for (const v of views) {
    for (const n of v.nodes) {
      const ok = n.attempts.filter((a) => a.state === 'success');
      if (ok.length > 1) out.push({ kind: 'two-successes', subject: `${v.id}/${n.name}`, detail: `node ${v.id}/${n.name} has ${ok.length} successful attempts: ${ok.map((a) => `${a.number} on ${a.agent}`).join(', ')}` });
    }
  }
  return out;
}

/**
 * What the agents ran against what the coordinator recorded, per node: every run to
 * completion is an attempt the coordinator knows (on that agent, once), and of a node's runs
 * in the order they started, each but the last was given up by the coordinator (gaveUp).
 * So a node has at most (attempts the coordinator gave up) + 1 runs, all of them attempts it
 * knows. `views` must hold every build the records name (null: the coordinator has none).
 */
export function checkRuns(records: readonly RunRecord[], views: ReadonlyMap<string, BuildViewT | null>): Violation[] {
  const out: Violation[] = [];
  const byAttempt = new Map<string, RunRecord[]>();
  const byNode = new Map<string, RunRecord[]>();
  for (const r of records) {
    if (r.status !== 'success') continue;
    byAttempt.set(r.attempt_id, [...(byAttempt.get(r.attempt_id) ?? []), r]);
    const key = `${r.build_id}/${r.node}`;
    const list = byNode.get(key) ?? [];
    if (!list.some((x) => x.attempt_id === r.attempt_id)) list.push(r);
    byNode.set(key, list);
  }
  for (const [id, runs] of byAttempt) {
    if (runs.length > 1) out.push({ kind: 'attempt-misrun', subject: id, detail: `attempt ${id} of ${runs[0]!.build_id}/${runs[0]!.node} ran to completion ${runs.length} times (${runs.map((r) => r.agent).join(', ')})` });
  }
  const attemptOf = (r: RunRecord): AttemptViewT | undefined => views.get(r.build_id)?.nodes.find((n) => n.name === r.node)?.attempts.find((a) => a.id === r.attempt_id);
  const describe = (r: RunRecord): string => {
    const a = attemptOf(r);
    return `attempt ${r.attempt} ${r.attempt_id} on ${r.agent} (coordinator: ${a ? `${a.state}${a.infra ? ', infra' : ''}${a.reason ? `, ${a.reason}` : ''}` : 'never recorded'})`;
  };
  for (const [key, runs] of byNode) {
    const view = views.get(runs[0]!.build_id);
    for (const r of runs) {
      const a = attemptOf(r);
      if (!a) {
        const where = view === undefined ? 'was not looked up' : view === null ? 'does not exist' : 'has no such attempt';
        out.push({ kind: 'unknown-attempt', subject: r.attempt_id, detail: `agent ${r.agent} ran ${key} attempt ${r.attempt} (${r.attempt_id}) to completion, but the coordinator's build ${where}` });
      } else if (a.agent !== r.agent) {
        out.push({ kind: 'attempt-misrun', subject: r.attempt_id, detail: `agent ${r.agent} ran ${key} attempt ${r.attempt_id}, which the coordinator gave to ${a.agent}` });
      }
    }
    if (runs.length < 2) continue;
    const ordered = [...runs].sort((x, y) => x.started_at - y.started_at || x.attempt - y.attempt);
    for (let i = 0; i + 1 < ordered.length; i++) {
      const first = ordered[i]!;
      const a = attemptOf(first);
      if (a && gaveUp(a)) continue;
      out.push({
        kind: 'ran-twice',
        subject: key,
        detail: `node ${key} ran to completion ${ordered.length} times: ${ordered.map(describe).join(' then ')}; ${describe(first)} was not given up by the coordinator before the next run`,
      });
      break;
    }
  }
  return out;
}

/**
 * The other direction: every attempt the coordinator records as successful was run to
 * completion by its agent. (Noop agents build nothing to reuse, so every success is a run.)
 * Also proves the run record works: without it checkRuns would pass on no records at all.
 */
export function checkSuccessesRan(records: readonly RunRecord[], views: Iterable<BuildViewT>): Violation[] {
  const ran = new Set(records.filter((r) => r.status === 'success').map((r) => r.attempt_id));
  const out: Violation[] = [];
  for (const v of views) {
    for (const n of v.nodes) {
      for (const a of n.attempts) {
        if (a.state === 'success' && !ran.has(a.id)) out.push({ kind: 'success-not-run', subject: a.id, detail: `the coordinator records ${v.id}/${n.name} attempt ${a.number} (${a.id}) on ${a.agent} as successful, but no agent recorded running it to completion` });
      }
    }
  }
  return out;
}

/** Keeps the first violation per (kind, subject). */
export function dedupe(violations: Iterable<Violation>): Violation[] {
  const seen = new Set<string>();
  const out: Violation[] = [];
  for (const v of violations) {
    const k = `${v.kind}\0${v.subject}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(v);
  }
  return out;
}

export function countByKind(violations: readonly Violation[]): Partial<Record<ViolationKind, number>> {
  const out: Partial<Record<ViolationKind, number>> = {};
  for (const v of violations) out[v.kind] = (out[v.kind] ?? 0) + 1;
  return out;
}
