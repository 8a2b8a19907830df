/**
 * Attempt patches through the embedded state's real files (issue 10, found by review): a
 * build revived from the archive cache (the same attempt objects) journals its attempts
 * whole again, so a field that went back to an older value is not left out of the journal;
 * and a compaction that runs while commits go on, with patches in the old journal, in the
 * tail and a change made between the snapshot's serialisation and its swap, replays equal
 * to memory whether the coordinator dies before the journal swap or after it.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assignedAttempt, stateToFile } from '../../coordinator/state/records.js';
import { StateStore } from '../../coordinator/state/state-store.js';
import { buildRecord } from '../helpers/build-record.js';

const att = (id: string, number: number) => assignedAttempt({ id, number, agent: 'x', session: 's', assigned_at: 1, log_header: '', inputs: {}, spec_digest: null });
const snap = (s: StateStore) => JSON.stringify(stateToFile(s.data));

/** A new store in `dir` with build b-1 and one attempt on its node n0, both journaled. */
async function storeWithAttempt(dir: string) {
  const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
  const b = buildRecord('b-1', 1);
  s.data.builds.set('b-1', b);
  s.markNew('b-1');
  await s.commit();
  const a = att('a-1', 1);
  b.nodes[0]!.attempts.push(a);
  s.markAttempt('b-1', 'n0', 0);
  await s.commit();
  return { s, b, a };
}

describe('attempt patches on the embedded state', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rv-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a build revived from the archive cache journals its attempts whole again: a field set in the revive line, then back, replays as it is in memory', async () => {
    const { s, b, a } = await storeWithAttempt(dir); // the attempt whole, reason null
    b.state = 'failed';
    s.markBuild('b-1');
    await s.commit();
    await s.archive(b);
    await s.commit();
    expect(await s.revive('b-1')).toBe(b); // same objects (archive cache)
    a.reason = 'B';
    s.markAttempt('b-1', 'n0', 0);
    await s.commit(); // the revive line carries reason B; the delta is dropped
    a.reason = null;
    s.markAttempt('b-1', 'n0', 0);
    await s.commit(); // compared with the stale tuple (reason null): nothing written
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(snap(again)).toBe(snap(s));
  });

  it('a change whose mark the archive took over, then a revive from the cache and the field back: replays as it is in memory', async () => {
    const { s, b, a } = await storeWithAttempt(dir); // the attempt whole: state assigned
    a.state = 'success';
    s.markAttempt('b-1', 'n0', 0);
    b.state = 'success';
    s.markBuild('b-1');
    await s.archive(b); // before the commit took the marks: they are dropped (the file has them)
    await s.commit();
    expect(await s.revive('b-1')).toBe(b);
    await s.commit(); // revive line: state success
    a.state = 'assigned';
    s.markAttempt('b-1', 'n0', 0);
    await s.commit();
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(snap(again)).toBe(snap(s));
  });

  it('with patches, a crash between the new snapshot and the journal swap (the whole old journal replays over it) and one after the swap lose nothing, A-B-A around and inside the tail included', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true, minCompactBytes: 1 });
    const backend = (s as unknown as { backend: { snapshotBytes: number; db: { write: () => Promise<void> } } }).backend;
    backend.snapshotBytes = 1e12; // no compaction until the test says
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const before = join(dir, 'crash-before');
    let expected = '';
    const db = backend.db;
    const write = db.write.bind(db);
    db.write = () => {
      const p = write();
      return gate.then(async () => {
        await p;
        // the new snapshot is durable; the journal still holds the old lines and the tail
        mkdirSync(before);
        copyFileSync(join(dir, 'state.json'), join(before, 'state.json'));
        copyFileSync(join(dir, 'journal.jsonl'), join(before, 'journal.jsonl'));
        expected = snap(s);
      });
    };
    const b = buildRecord('b-1', 3);
    s.data.builds.set('b-1', b);
    s.markNew('b-1');
    await s.commit();
    const [x, y, z] = [att('x', 1), att('y', 1), att('z', 1)];
    b.nodes[0]!.attempts.push(x);
    b.nodes[1]!.attempts.push(y);
    b.nodes[2]!.attempts.push(z);
    for (const n of ['n0', 'n1', 'n2']) s.markAttempt('b-1', n, 0);
    await s.commit(); // whole
    x.state = 'running';
    x.started_at = 5;
    y.state = 'running';
    z.error = 'A';
    for (const n of ['n0', 'n1', 'n2']) s.markAttempt('b-1', n, 0);
    await s.commit(); // patches
    // compaction starts after the next batch; unjournaled changes at serialization
    backend.snapshotBytes = 0;
    x.log_bytes = 3;
    s.markAttempt('b-1', 'n0', 0);
    await s.commit(); // this batch, then startCompaction (serialized now)
    z.error = 'B'; // in memory after the serialization; journaled in the tail
    s.markAttempt('b-1', 'n2', 0);
    await s.commit();
    z.error = 'A';
    x.state = 'success';
    s.markAttempt('b-1', 'n2', 0);
    s.markAttempt('b-1', 'n0', 0);
    await s.commit();
    y.state = 'failed';
    s.markAttempt('b-1', 'n1', 0);
    await s.commit();
    y.state = 'running'; // A-B-A inside the tail
    s.markAttempt('b-1', 'n1', 0);
    await s.commit();
    release();
    while (s.snapshots === 0) await new Promise((r) => setImmediate(r));
    const crashed = await StateStore.open({ dataDir: before, persist: true, init: false });
    expect(snap(crashed)).toBe(expected);
    await crashed.drain();
    // after the swap
    x.state = 'lost';
    s.markAttempt('b-1', 'n0', 0);
    await s.commit();
    const after = join(dir, 'crash-after');
    mkdirSync(after);
    copyFileSync(join(dir, 'state.json'), join(after, 'state.json'));
    copyFileSync(join(dir, 'journal.jsonl'), join(after, 'journal.jsonl'));
    const swapped = await StateStore.open({ dataDir: after, persist: true, init: false });
    expect(snap(swapped)).toBe(snap(s));
    await swapped.drain();
  });

});
