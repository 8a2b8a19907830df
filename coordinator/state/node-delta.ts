/**
 * The `delta` journal entry's compact form of a node's change: its own fields and the
 * attempts that changed, each as an array of values in a fixed field order instead of an
 * object. Nearly every line the dispatch hot path writes is one of these; against the
 * whole node with its attempts as objects (the `node` entry), a transition's line is
 * about half the bytes (450 against 870 for a node with one attempt) and takes about two
 * thirds of the `JSON.stringify` time, and a later attempt's change no longer rewrites
 * the earlier ones (issue 10).
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
