/**
 * The `delta` journal entry's compact form of a node's change: its own fields and the
 * attempts that changed, each as an array of values in a fixed field order instead of an
 * object. Nearly every line the dispatch hot path writes is one of these; against the
 * whole node with its attempts as objects (the `node` entry), a transition's line is
 * about half the bytes (450 against 870 for a node with one attempt) and takes about two
 * thirds of the `JSON.stringify` time, and a later attempt's change no longer rewrites
 * the earlier ones (issue 10).
 *
 * An attempt the journal already holds (written whole since the last snapshot) is journaled
 * again as a patch: the positions of its tuple that changed since its last line, with their
 * values (`attemptPatch`). An attempt's later changes (accepted, started, finished) are then
 * about a third of the bytes of a whole tuple; and what a durable write costs on a small
 * machine follows its bytes (the copy into the page cache, the zeros preallocated ahead of
 * the journal, the serialising): without the second whole tuple per node, the dispatch
 * benchmark's coordinator spends ~20 µs less CPU per node (issue 10).
 *
 * The field orders below are the format: a field is never moved or removed. A field added
 * to `AttemptRecord` or to a node's own fields does not compile until it is listed here
 * (`Unlisted` below), and test/unit/state-store.node-delta.test.ts checks that every
 * listed field is written and read back.
 */
import type { AttemptRecord, NodeRecord } from './records.js';

/** An attempt's fields that always exist, in the order of an attempt tuple after its first element. */
export const ATTEMPT_TUPLE_FIELDS = [
  'id',
  'number',
  'agent',
  'session',
  'state',
  'assigned_at',
  'accepted_at',
  'started_at',
  'finished_at',
  'exit_code',
  'error',
  'failed_step',
  'infra',
  'image_id',
  'log_bytes',
  'log_header',
  'reason',
  'fetch_ms',
  'build_ms',
  'inputs',
  'spec_digest',
  'key',
  'base_images',
  'dockerfile_digest',
  'outputs',
  'provenance',
  'reused_from',
] as const;

/** An attempt's optional fields: the tuple's first element is an object with those that are set (absent stays absent). */
export const ATTEMPT_OPTIONAL_FIELDS = ['gpus', 'emulated', 'test_exit_code', 'images', 'cache'] as const;

/** A node's own fields (everything that changes after submission except its attempts), in tuple order. */
export const NODE_HEAD_FIELDS = ['state', 'ready_at', 'started_at', 'finished_at', 'reason', 'reused_from', 'waiting_on', 'retries', 'budget_from'] as const;

type Unlisted = Exclude<keyof AttemptRecord, (typeof ATTEMPT_TUPLE_FIELDS)[number] | (typeof ATTEMPT_OPTIONAL_FIELDS)[number]>;
/** Compile-time check: every attempt field is in one of the two lists. */
const everyAttemptField: [Unlisted] extends [never] ? true : Unlisted = true;
void everyAttemptField;

/** An attempt as a `delta` entry carries it: `[optional fields, ...ATTEMPT_TUPLE_FIELDS values]`. */
export type AttemptTuple = unknown[];
/** A node's own fields as a `delta` entry carries them (NODE_HEAD_FIELDS values). */
export type NodeHeadTuple = unknown[];

/** The length of an attempt tuple. */
export const ATTEMPT_TUPLE_LENGTH = ATTEMPT_TUPLE_FIELDS.length + 1;

/**
 * A patch of an attempt the journal holds: `[attempt index, position, value, position,
 * value, ...]`, positions increasing; position 0 is the optional-fields object (whole),
 * position k ≥ 1 is ATTEMPT_TUPLE_FIELDS[k - 1].
 */
export type AttemptPatch = unknown[];

/**
 * An attempt's tuple as last journaled, for comparison: primitives as they are, objects and
 * arrays as their JSON text (`JsonText`), so that a value changed in place is still seen as
 * changed.
 */
export type JournaledTuple = unknown[];

/** An object's JSON text, in a JournaledTuple (never equal to a primitive). */
class JsonText {
  constructor(readonly text: string) {}
}

const isObject = (v: unknown): v is object => v !== null && typeof v === 'object';

/** `t` (an attemptTuple) as the journal now holds it. */
export function journaledTuple(t: AttemptTuple): JournaledTuple {
  const out = new Array<unknown>(t.length);
  for (let k = 0; k < t.length; k++) {
    const v = t[k];
    out[k] = isObject(v) ? new JsonText(JSON.stringify(v)) : v;
  }
  return out;
}

/**
 * The patch from `prev` (as journaled) to `cur` (an attemptTuple of the same attempt, at
 * `index`), or null when nothing changed. `prev` is updated to `cur` in place.
 */
export function attemptPatch(index: number, prev: JournaledTuple, cur: AttemptTuple): AttemptPatch | null {
  let patch: AttemptPatch | null = null;
  for (let k = 0; k < cur.length; k++) {
    const v = cur[k];
    const was = prev[k];
    let now: unknown = v;
    if (isObject(v)) {
      now = new JsonText(JSON.stringify(v));
      if (was instanceof JsonText && was.text === (now as JsonText).text) continue;
    } else if (v === was || (v === undefined && was === null) || (v === null && was === undefined)) {
      continue;
    }
    prev[k] = now;
    (patch ??= [index]).push(k, v ?? null);
  }
  return patch;
}

/** Sets the fields a patch carries on `a` (one `attemptPatchProblem` accepted). */
export function applyAttemptPatch(a: AttemptRecord, p: AttemptPatch): void {
  const rec = a as unknown as Record<string, unknown>;
  for (let j = 1; j < p.length; j += 2) {
    const k = p[j] as number;
    const v = p[j + 1];
    if (k === 0) {
      const optional = v as Record<string, unknown>;
      for (const f of ATTEMPT_OPTIONAL_FIELDS) {
        if (optional[f] !== undefined) rec[f] = optional[f];
        else delete rec[f];
      }
    } else rec[ATTEMPT_TUPLE_FIELDS[k - 1]!] = v ?? null;
  }
}

/** Why `p` is not a patch of one of the first `before` attempts of a node, or null. */
export function attemptPatchProblem(p: unknown, before: number): string | null {
  if (!Array.isArray(p) || p.length < 3 || p.length % 2 === 0) return 'an attempt patch is not an array of an index and position-value pairs';
  const index: unknown = p[0];
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= before) return `an attempt patch of attempt index ${JSON.stringify(index)}, but the patches are of the first ${before} attempts`;
  let last = -1;
  for (let j = 1; j < p.length; j += 2) {
    const k: unknown = p[j];
    const v: unknown = p[j + 1];
    if (typeof k !== 'number' || !Number.isInteger(k) || k <= last || k >= ATTEMPT_TUPLE_LENGTH) return `an attempt patch with position ${JSON.stringify(k)} (positions increase, below ${ATTEMPT_TUPLE_LENGTH})`;
    last = k;
    if (k === 0 && !(isObject(v) && !Array.isArray(v))) return 'an attempt patch whose optional fields are not an object';
    if ((k === 1 || k === 5) && (typeof v !== 'string' || v === '')) return `an attempt patch that sets ${ATTEMPT_TUPLE_FIELDS[k - 1]} to ${JSON.stringify(v)}`;
    if (k === 2 && typeof v !== 'number') return `an attempt patch that sets number to ${JSON.stringify(v)}`;
  }
  return null;
}

/** `a` as a tuple (written out field by field: the order of ATTEMPT_TUPLE_FIELDS). */
export function attemptTuple(a: AttemptRecord): AttemptTuple {
  // Undefined values are left out by JSON.stringify: the object holds only the optional fields that are set.
  const optional = { gpus: a.gpus, emulated: a.emulated, test_exit_code: a.test_exit_code, images: a.images, cache: a.cache };
  return [
    optional,
    a.id,
    a.number,
    a.agent,
    a.session,
    a.state,
    a.assigned_at,
    a.accepted_at,
    a.started_at,
    a.finished_at,
    a.exit_code,
    a.error,
    a.failed_step,
    a.infra,
    a.image_id,
    a.log_bytes,
    a.log_header,
    a.reason,
    a.fetch_ms,
    a.build_ms,
    a.inputs,
    a.spec_digest,
    a.key,
    a.base_images,
    a.dockerfile_digest,
    a.outputs,
    a.provenance,
    a.reused_from,
  ];
}

/** The attempt a tuple describes (one `entryProblem` accepted), its fields in the order `assignedAttempt` makes them. */
export function attemptFromTuple(t: AttemptTuple): AttemptRecord {
  const a = {} as Record<string, unknown>;
  for (let k = 0; k < ATTEMPT_TUPLE_FIELDS.length; k++) a[ATTEMPT_TUPLE_FIELDS[k]!] = t[k + 1] ?? null;
  const optional = t[0] as Record<string, unknown>;
  for (const f of ATTEMPT_OPTIONAL_FIELDS) if (optional[f] !== undefined) a[f] = optional[f];
  return a as unknown as AttemptRecord;
}

/** A node's own fields as a tuple, normalised as a `node` entry writes them (absent optional fields as null or 0). */
export function nodeHeadTuple(n: NodeRecord): NodeHeadTuple {
  return [n.state, n.ready_at, n.started_at, n.finished_at, n.reason, n.reused_from ?? null, n.waiting_on ?? null, n.retries ?? 0, n.budget_from ?? 0];
}

/** Sets a node's own fields from a tuple (one `entryProblem` accepted). */
export function applyNodeHead(n: NodeRecord, t: NodeHeadTuple): void {
  const rec = n as unknown as Record<string, unknown>;
  for (let k = 0; k < NODE_HEAD_FIELDS.length; k++) rec[NODE_HEAD_FIELDS[k]!] = t[k];
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Why `t` is not an attempt tuple this coordinator reads, or null. */
export function attemptTupleProblem(t: unknown): string | null {
  if (!Array.isArray(t) || t.length !== ATTEMPT_TUPLE_LENGTH) return `an attempt is not an array of ${ATTEMPT_TUPLE_LENGTH} values`;
  if (!isObj(t[0])) return 'an attempt without its optional-fields object';
  if (typeof t[1] !== 'string' || t[1] === '' || typeof t[2] !== 'number' || typeof t[5] !== 'string') return 'an attempt without id, number or state';
  return null;
}

/** Why `t` is not a node-fields tuple this coordinator reads, or null. */
export function nodeHeadTupleProblem(t: unknown): string | null {
  if (!Array.isArray(t) || t.length !== NODE_HEAD_FIELDS.length || typeof t[0] !== 'string') return `node fields are not an array of ${NODE_HEAD_FIELDS.length} values starting with the state`;
  return null;
}
