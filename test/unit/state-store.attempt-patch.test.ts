/**
 * Attempt patches in the journal's `delta` entry (coordinator/state/node-delta.ts, issue
 * 10): an attempt the journal already holds is journaled again as the positions that
 * changed. Every field, changed on its own, is carried and read back exactly (through JSON,
 * as the journal does); an object changed in place counts as changed; an optional field
 * that goes away is gone after replay; `entryProblem` refuses a malformed patch; and after
 * a snapshot the next line of each attempt is whole again, so a field that went A → B →
 * A around the snapshot cannot come back as B on replay.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { entryProblem } from '../../coordinator/state/journal-entries.js';
import { applyJournalLines } from '../../coordinator/state/journal-replay.js';
import { ATTEMPT_OPTIONAL_FIELDS, ATTEMPT_TUPLE_FIELDS, applyAttemptPatch, attemptFromTuple, attemptPatch, attemptTuple, journaledTuple } from '../../coordinator/state/node-delta.js';
import { assignedAttempt, emptyState, stateFromFile, stateToFile, type AttemptRecord, type StateData } from '../../coordinator/state/records.js';
import type { StateBackend, StateBackendContext } from '../../coordinator/state/state-backend.js';
import { StateStore } from '../../coordinator/state/state-store.js';
import { EmbeddedBackend } from '../../coordinator/state/embedded-backend.js';
import { buildRecord } from '../helpers/build-record.js';
import { fullAttempt } from '../helpers/full-attempt.js';

const json = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

/** `before` as the journal holds it, then `after` journaled as a patch and applied to a copy of `before` read back from its tuple. */
function throughPatch(before: AttemptRecord, after: AttemptRecord): { back: AttemptRecord; patch: unknown[] | null } {
  const prev = journaledTuple(attemptTuple(before));
  const patch = attemptPatch(3, prev, attemptTuple(after));
  const back = attemptFromTuple(json(attemptTuple(before)));
  if (patch) applyAttemptPatch(back, json(patch));
  return { back, patch };
}

describe('attempt patches', () => {
  it('carry each field changed on its own, and only it', () => {
    for (const f of [...ATTEMPT_TUPLE_FIELDS, ...ATTEMPT_OPTIONAL_FIELDS]) {
      const changed = fullAttempt() as unknown as Record<string, unknown>;
      const v = changed[f];
      changed[f] = typeof v === 'string' ? `${v}!` : typeof v === 'number' ? v + 100 : typeof v === 'boolean' ? !v : v === null ? 'now set' : null;
      const { back, patch } = throughPatch(fullAttempt(), changed as unknown as AttemptRecord);
      expect(back, f).toEqual(changed);
      const optional = (ATTEMPT_OPTIONAL_FIELDS as readonly string[]).includes(f);
      // [index, position, value]: one position (the optional-fields object is one position)
      expect(patch, f).toEqual([3, optional ? 0 : ATTEMPT_TUPLE_FIELDS.indexOf(f as (typeof ATTEMPT_TUPLE_FIELDS)[number]) + 1, optional ? expect.any(Object) : changed[f]]);
    }
  });

  it('is null when nothing changed, and updates what it compares with', () => {
    const a = fullAttempt();
    const prev = journaledTuple(attemptTuple(a));
    expect(attemptPatch(0, prev, attemptTuple(a))).toBeNull();
    a.log_bytes = 99;
    expect(attemptPatch(0, prev, attemptTuple(a))).toEqual([0, ATTEMPT_TUPLE_FIELDS.indexOf('log_bytes') + 1, 99]);
    expect(attemptPatch(0, prev, attemptTuple(a))).toBeNull();
  });

  it('sees an object changed in place', () => {
    const a = fullAttempt();
    const prev = journaledTuple(attemptTuple(a));
    a.outputs!.push({ name: 'p', digest: 'sha256:more', size: 1, media_type: 'application/octet-stream' });
    (a.gpus as number[]).push(6);
    const patch = attemptPatch(0, prev, attemptTuple(a))!;
    expect(patch.filter((_, j) => j % 2 === 1)).toEqual([0, ATTEMPT_TUPLE_FIELDS.indexOf('outputs') + 1]);
    const back = attemptFromTuple(json(attemptTuple(fullAttempt())));
    applyAttemptPatch(back, json(patch));
    expect(back).toEqual(a);
  });

  it('drops an optional field that went away, and sets one that came', () => {
    const a = fullAttempt();
    const b = fullAttempt();
    delete b.gpus;
    delete b.cache;
    b.images = [];
    const { back } = throughPatch(a, b);
    expect(back).toEqual(b);
    expect('gpus' in back).toBe(false);
    expect('cache' in back).toBe(false);
  });

  it('are refused when malformed, naming what is wrong', () => {
    const data = emptyState();
    const b = buildRecord('b-1', 1);
    b.nodes[0]!.attempts.push(fullAttempt());
    data.builds.set('b-1', b);
    const delta = (p: unknown, i = 1) => entryProblem({ t: 'patch', id: 'b-1', name: 'n0', i, a: [], p }, data);
    expect(delta([[0, 5, 'running']])).toBeNull();
    // patches only in a patch entry: a coordinator from before them refuses it instead of skipping them
    expect(entryProblem({ t: 'delta', id: 'b-1', name: 'n0', i: 1, a: [], p: [[0, 5, 'running']] }, data)).toMatch(/delta entry of b-1\/n0 whose attempt patches are not allowed/);
    expect(entryProblem({ t: 'patch', id: 'b-1', name: 'n0', i: 1, a: [] }, data)).toMatch(/patch entry of b-1\/n0 whose attempt patches are not a non-empty array/);
    expect(delta([[0, 5, 'running', 8, 20]])).toBeNull();
    expect(delta([])).toMatch(/attempt patches are not a non-empty array/);
    expect(delta('x')).toMatch(/attempt patches are not a non-empty array/);
    expect(delta([[0, 5]])).toMatch(/not an array of an index and position-value pairs/);
    expect(delta([[1, 5, 'running']])).toMatch(/attempt index 1, but the patches are of the first 1 attempts/);
    expect(delta([[0, 5, 'running']], 0)).toMatch(/attempt index 0, but the patches are of the first 0 attempts/);
    expect(delta([[0, 8, 1, 5, 'running']])).toMatch(/position 5 \(positions increase/);
    expect(delta([[0, 28, 1]])).toMatch(/position 28/);
    expect(delta([[0, 1.5, 1]])).toMatch(/position 1.5/);
    expect(delta([[0, 0, [1]]])).toMatch(/optional fields are not an object/);
    expect(delta([[0, 5, '']])).toMatch(/sets state to ""/);
    expect(delta([[0, 1, null]])).toMatch(/sets id to null/);
    expect(delta([[0, 2, 'two']])).toMatch(/sets number to "two"/);
    // an attempt that is not a record (a hand-edited journal) is refused, not a TypeError on replay
    b.nodes[0]!.attempts[0] = null as unknown as AttemptRecord;
    expect(delta([[0, 5, 'running']])).toMatch(/a patch of attempt index 0, which is not an attempt record/);
  });
});

/** A backend that keeps journal lines in memory and lets the test take a snapshot when it says. */
class MemoryBackend implements StateBackend {
  readonly kind = 'embedded';
  readonly location = 'memory';
  writes = 0;
  snapshots = 0;
  preallocations = 0;
  lines: string[] = [];
  snapshot = '';
  ctx!: StateBackendContext;

  open(ctx: StateBackendContext): Promise<{ data: StateData; created: boolean }> {
    this.ctx = ctx;
    return Promise.resolve({ data: emptyState(), created: true });
  }
  commit(): Promise<void> {
    const text = this.ctx.takeText();
    if (text) this.lines.push(...text.trimEnd().split('\n'));
    return Promise.resolve();
  }
  /** A snapshot now (the journal's lines so far are folded into it). */
  takeSnapshot(): void {
    this.ctx.snapshotTaken();
    this.snapshot = JSON.stringify(stateToFile(this.ctx.data()));
    this.lines = [];
  }
  writeArchive(): Promise<void> {
    return Promise.resolve();
  }
  readArchive(): Promise<string> {
    return Promise.reject(new Error('none'));
  }
  drain(): Promise<void> {
    return Promise.resolve();
  }
}

describe('attempt patches and snapshots', () => {
  it('journal an attempt whole again after a snapshot: a field that went A, B (in the snapshot only), A replays as A', async () => {
    const backend = new MemoryBackend();
    const s = await StateStore.open({ dataDir: '/nonexistent', persist: true, init: true, backend });
    const b = buildRecord('b-1', 1);
    s.data.builds.set('b-1', b);
    s.markNew('b-1');
    await s.commit();
    const node = b.nodes[0]!;
    const a = assignedAttempt({ id: 'a-1', number: 1, agent: 'x', session: 's', assigned_at: 1, log_header: '', inputs: {}, spec_digest: null });
    node.attempts.push(a);
    s.markAttempt('b-1', 'n0', 0);
    await s.commit(); // the attempt whole, error null
    expect(JSON.parse(backend.lines.at(-1)!)).toMatchObject({ t: 'delta', i: 0, a: [expect.any(Array)] });
    a.log_bytes = 5;
    s.markAttempt('b-1', 'n0', 0);
    await s.commit(); // a patch
    expect(JSON.parse(backend.lines.at(-1)!)).toMatchObject({ t: 'patch', i: 1, a: [], p: [[0, ATTEMPT_TUPLE_FIELDS.indexOf('log_bytes') + 1, 5]] });
    a.error = 'B';
    s.markAttempt('b-1', 'n0', 0); // marked, not yet journaled: the snapshot holds it
    backend.takeSnapshot();
    a.error = null;
    a.state = 'running';
    s.markAttempt('b-1', 'n0', 0);
    await s.commit();
    const line = JSON.parse(backend.lines.at(-1)!) as { a: unknown[]; p?: unknown[] };
    expect(line.a).toHaveLength(1); // whole, not a patch
    expect(line.p).toBeUndefined();
    // replay: the snapshot, then the lines after it
    const data = stateFromFile(JSON.parse(backend.snapshot));
    if (typeof data === 'string') throw new Error(data);
    const attempt0 = () => data.builds.get('b-1')!.nodes[0]!.attempts[0]!;
    expect(attempt0().error).toBe('B');
    applyJournalLines(backend.lines, 'memory', data, (x) => new Map(x.nodes.map((n) => [n.name, n])));
    expect(attempt0().error).toBeNull();
    expect(attempt0().state).toBe('running');
    // and the next change is a patch again
    a.state = 'success';
    s.markAttempt('b-1', 'n0', 0);
    await s.commit();
    expect(JSON.parse(backend.lines.at(-1)!)).toMatchObject({ t: 'patch', i: 1, a: [], p: [[0, 5, 'success']] });
  });
});

describe('the embedded backend and snapshots', () => {
  it('tells the store before it serialises a snapshot (at creation and at the final compaction)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-patch-'));
    try {
      const backend = new EmbeddedBackend({ dataDir: dir, minCompactBytes: 1, unsyncedJournal: false });
      let data = emptyState();
      let calls = 0;
      const ctx: StateBackendContext = {
        data: () => data,
        takeText: () => `{"t":"control","name":"c-${calls}","r":null}\n`,
        nodesByName: (b) => new Map(b.nodes.map((n) => [n.name, n])),
        // a mark the snapshot must then hold: called before the state is serialised
        snapshotTaken: () => {
          calls++;
          data.agentControls.set(`seen-${calls}`, { control: 'paused', at: calls, reason: null });
        },
      };
      data = (await backend.open(ctx, true)).data;
      expect(calls).toBe(1);
      await backend.commit();
      await backend.drain(); // folds the journal into a final snapshot
      expect(calls).toBeGreaterThanOrEqual(2);
      const file = await readFile(join(dir, 'state.json'), 'utf8');
      expect(file).toContain(`seen-${calls}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
