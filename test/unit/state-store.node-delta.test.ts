/**
 * The `delta` journal entry's tuples (coordinator/state/node-delta.ts): every attempt
 * field and every node field is written and read back exactly (through JSON, as the
 * journal does), null stays null and an optional field that is absent stays absent, the
 * field lists name every field of a fully set attempt, and `entryProblem` refuses a delta
 * that would leave a hole in a node's attempts.
 */
import { describe, expect, it } from 'vitest';
import { entryProblem, nodeMutable } from '../../coordinator/state/journal-entries.js';
import {
  ATTEMPT_OPTIONAL_FIELDS,
  ATTEMPT_TUPLE_FIELDS,
  NODE_HEAD_FIELDS,
  applyNodeHead,
  attemptFromTuple,
  attemptTuple,
  nodeHeadTuple,
} from '../../coordinator/state/node-delta.js';
import { assignedAttempt, emptyState, type AttemptRecord } from '../../coordinator/state/records.js';
import { buildRecord } from '../helpers/build-record.js';
import { fullAttempt } from '../helpers/full-attempt.js';

/** Through the journal: tuple, JSON text, tuple, record. */
const roundTrip = (a: AttemptRecord) => attemptFromTuple(JSON.parse(JSON.stringify(attemptTuple(a))) as unknown[]);

describe('delta entry tuples', () => {
  it('list every attempt field, once', () => {
    const fields = [...ATTEMPT_TUPLE_FIELDS, ...ATTEMPT_OPTIONAL_FIELDS];
    expect(new Set(fields).size).toBe(fields.length);
    expect([...fields].sort()).toEqual(Object.keys(fullAttempt()).sort());
  });

  it('write and read back every attempt field, in the order the record has them', () => {
    const a = fullAttempt();
    const back = roundTrip(a);
    expect(back).toEqual(a);
    expect(Object.keys(back)).toEqual(Object.keys(a));
    // each field on its own: changing it changes what is read back, in that field only
    for (const f of [...ATTEMPT_TUPLE_FIELDS, ...ATTEMPT_OPTIONAL_FIELDS]) {
      const changed = fullAttempt() as unknown as Record<string, unknown>;
      changed[f] = typeof changed[f] === 'string' ? `${changed[f] as string}!` : typeof changed[f] === 'number' ? (changed[f] as number) + 100 : typeof changed[f] === 'boolean' ? !changed[f] : null;
      expect(roundTrip(changed as unknown as AttemptRecord)).toEqual(changed);
    }
  });

  it('keeps null as null, and an optional field that is absent absent', () => {
    const a = assignedAttempt({ id: 'a-1', number: 1, agent: 'x', session: 's', assigned_at: 1, log_header: '', inputs: {}, spec_digest: null });
    const back = roundTrip(a);
    expect(back).toEqual(a);
    for (const f of ATTEMPT_OPTIONAL_FIELDS) expect(f in back).toBe(false);
    a.test_exit_code = null;
    const withNull = roundTrip(a);
    expect('test_exit_code' in withNull).toBe(true);
    expect(withNull.test_exit_code).toBeNull();
    expect(withNull.spec_digest).toBeNull();
  });

  it('write and read back a node’s own fields as a whole-node entry would set them', () => {
    const n = buildRecord('b-1', 1).nodes[0]!;
    Object.assign(n, { state: 'running', ready_at: 1, started_at: 2, finished_at: null, reason: 'r', reused_from: { build_id: 'b', node: 'n', attempt_id: 'a', attempt_number: 1 }, waiting_on: 'a-9', retries: 3, budget_from: 2 });
    const target = buildRecord('b-1', 1).nodes[0]!;
    applyNodeHead(target, JSON.parse(JSON.stringify(nodeHeadTuple(n))) as unknown[]);
    const { attempts: _a, ...mutable } = nodeMutable(n);
    for (const f of NODE_HEAD_FIELDS) expect(target[f]).toEqual(mutable[f]);
    expect(Object.keys(mutable).sort()).toEqual([...NODE_HEAD_FIELDS].sort());
  });

  it('refuses a delta whose attempts would start past the end of the node’s attempts', () => {
    const data = emptyState();
    const b = buildRecord('b-1', 1);
    data.builds.set('b-1', b);
    const t = JSON.parse(JSON.stringify(attemptTuple(fullAttempt()))) as unknown[];
    expect(entryProblem({ t: 'delta', id: 'b-1', name: 'n0', i: 0, a: [t] }, data)).toBeNull();
    expect(entryProblem({ t: 'delta', id: 'b-1', name: 'n0', i: 1, a: [t] }, data)).toMatch(/at attempt index 1, but the node has 0 attempts/);
    expect(entryProblem({ t: 'delta', id: 'b-1', name: 'n0', i: 0, a: [[...t.slice(0, 1), '', ...t.slice(2)]] }, data)).toMatch(/without id, number or state/);
    // a delta of a build archived later in the journal is skipped, not refused
    data.builds.delete('b-1');
    data.archived.set('b-1', { id: 'b-1', name: 'b', state: 'success', created_at: 1, started_at: 1, finished_at: 2, node_counts: {} });
    expect(entryProblem({ t: 'delta', id: 'b-1', name: 'n0', i: 5, a: [t] }, data)).toBeNull();
  });
});
