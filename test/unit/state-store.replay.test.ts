/**
 * The journal replays: every entry kind the store writes (new, build, delta with a node's
 * own fields and/or its changed attempts, archive, revive, dlq set/clear, control
 * set/clear) gives back, after a reopen without a clean shutdown, exactly the state that
 * was committed; a journal written before `delta` existed (whole-node `node` entries)
 * still replays; updates of builds or nodes the state
 * does not hold (what a request for `__proto__` used to produce) are refused before
 * anything is written; a journal line that cannot be applied is refused on open with its
 * line named; and a pin that lands while a finished build's file is being written is in
 * that file (no acknowledged pin lost to the archive).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assignedAttempt, stateToFile, type AttemptRecord, type BuildRecord } from '../../coordinator/state/records.js';
import { nodeMutable } from '../../coordinator/state/journal-entries.js';
import { buildRecord } from '../helpers/build-record.js';
import { journalText } from '../helpers/journal-text.js';
import { StateStore } from '../../coordinator/state/state-store.js';

function build(id: string, nodes: number): BuildRecord {
  return buildRecord(id, nodes, { buildArgs: { constructor: 'c', toString: 't' }, labels: { constructor: 'x' } });
}

function attempt(id: string, number: number, extra: Partial<AttemptRecord> = {}): AttemptRecord {
  return Object.assign(assignedAttempt({ id, number, agent: 'agent-1', session: 's-1', assigned_at: 10 + number, log_header: number > 1 ? 'again\n"quoted"\u2028' : '', inputs: { constructor: 'sha256:1' }, spec_digest: null }), extra);
}

/** The state as JSON text, for comparing two stores. */
const snapshot = (s: StateStore) => JSON.stringify(stateToFile(s.data));

describe('state journal replay', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-replay-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('replays every entry kind to the committed state', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    // new + node + build
    for (const id of ['b-a', 'b-b', 'constructor', '__proto__']) {
      s.data.builds.set(id, build(id, 2));
      s.markNew(id);
    }
    await s.commit();
    const a = s.data.builds.get('b-a')!;
    a.nodes[0]!.state = 'ready';
    s.markNodeFields('b-a', 'n0');
    // delta: an attempt added with the node's fields, then changed alone, then a second attempt (the first changed in the same batch)
    const n1 = a.nodes[1]!;
    n1.attempts.push(attempt('a-1', 1, { gpus: [0, 1], emulated: true }));
    n1.state = 'assigned';
    s.markAttempt('b-a', 'n1', 0);
    s.markNodeFields('b-a', 'n1');
    await s.commit();
    Object.assign(n1.attempts[0]!, { state: 'running', started_at: 20, log_bytes: 7 });
    s.markAttempt('b-a', 'n1', 0);
    await s.commit();
    Object.assign(n1.attempts[0]!, { state: 'lost', finished_at: 30, reason: 'agent lost', test_exit_code: null, base_images: [{ ref: 'x', digest: 'sha256:2' }], reused_from: { build_id: 'b-z', node: 'n', attempt_id: 'a-z', attempt_number: 1 } });
    n1.attempts.push(attempt('a-2', 2, { error: 'e\n"x"', exit_code: 3, outputs: [{ name: 'o', digest: 'sha256:3', size: 1 }] as AttemptRecord['outputs'] }));
    Object.assign(n1, { state: 'assigned', waiting_on: 'a-9', retries: 1, budget_from: 1, reason: 'why' });
    s.markAttempt('b-a', 'n1', 1);
    s.markAttempt('b-a', 'n1', 0);
    s.markNodeFields('b-a', 'n1');
    a.state = 'running';
    a.pinned = true;
    s.markBuild('b-a');
    // dlq set and clear, control set and clear (keys that are Object.prototype members)
    s.data.deadLetter.set('b-a/n0', { build_id: 'b-a', build_name: 'b', node: 'n0', platform: 'linux/amd64', at: 5, reason: 'r', attempts: [] });
    s.markDeadLetter('b-a/n0');
    s.data.deadLetter.set('__proto__', { build_id: 'x', build_name: 'b', node: 'n0', platform: 'linux/amd64', at: 6, reason: 'r', attempts: [] });
    s.markDeadLetter('__proto__');
    s.data.agentControls.set('constructor', { control: 'paused', at: 7, reason: 'maintenance' });
    s.markControl('constructor');
    s.data.agentControls.set('gone', { control: 'draining', at: 8, reason: null });
    s.markControl('gone');
    await s.commit();
    s.data.agentControls.delete('gone');
    s.markControl('gone');
    s.data.deadLetter.delete('b-a/n0');
    s.markDeadLetter('b-a/n0');
    // archive, then revive (a retry), then archive another
    const b = s.data.builds.get('b-b')!;
    b.state = 'failed';
    s.markBuild('b-b');
    await s.commit();
    await s.archive(b);
    await s.commit();
    expect(await s.revive('b-b')).toBe(b);
    b.state = 'running';
    s.markBuild('b-b');
    await s.commit();
    const c = s.data.builds.get('constructor')!;
    c.state = 'success';
    s.markBuild('constructor');
    await s.commit();
    await s.archive(c);
    await s.commit();
    const journal = await journalText(s.journalPath);
    for (const t of ['new', 'delta', 'patch', 'build', 'dlq', 'control', 'archive', 'revive']) expect(journal).toContain(`"t":"${t}"`);
    const deltas = journal.split('\n').filter((l) => /"t":"(delta|patch)"/.test(l)).map((l) => JSON.parse(l) as { t: string; name: string; i: number; a: unknown[]; p?: unknown[][]; n?: unknown[] });
    // what changed, not the node: fields only; a new attempt (whole) and fields; the attempt alone, as a
    // patch of what changed; a patch of the first attempt, the second whole, and fields
    expect(deltas.map((d) => [d.t, d.name, d.i, d.a.length, d.p?.length ?? 0, d.n !== undefined])).toEqual([
      ['delta', 'n0', 0, 0, 0, true],
      ['delta', 'n1', 0, 1, 0, true],
      ['patch', 'n1', 1, 0, 1, false],
      ['patch', 'n1', 1, 1, 1, true],
    ]);
    // a patch carries the positions that changed: state, started_at, log_bytes (and the objects, compared by their JSON: none changed)
    expect(deltas[2]!.p).toEqual([[0, 5, 'running', 8, 20, 15, 7]]);
    const before = snapshot(s);
    expect(before).toContain('"test_exit_code":null');
    // no drain: as after kill -9
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(snapshot(again)).toBe(before);
    expect(again.data.builds.get('__proto__')!.id).toBe('__proto__');
    expect(again.data.deadLetter.get('__proto__')!.build_id).toBe('x');
    expect(again.data.agentControls.get('constructor')!.reason).toBe('maintenance');
    expect(again.data.agentControls.has('gone')).toBe(false);
    expect(again.data.builds.get('b-b')!.state).toBe('running');
    expect((await again.getBuild('constructor'))!.state).toBe('success');
    expect(Object.getPrototypeOf({})).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).pinned).toBeUndefined();
    // and once more after the snapshot the open wrote
    await again.drain();
    const third = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(snapshot(third)).toBe(before);
    await third.drain();
  });

  it('replays a journal written before delta entries (whole-node entries with their attempts)', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', build('b-1', 2));
    s.markNew('b-1');
    await s.commit();
    const n = s.data.builds.get('b-1')!.nodes[0]!;
    const lines: string[] = [];
    // The lines the store wrote for a node before issue 10: the whole node, attempts as objects.
    n.attempts.push(attempt('a-1', 1, { gpus: [] }));
    n.state = 'assigned';
    lines.push(JSON.stringify({ t: 'node', id: 'b-1', name: 'n0', n: nodeMutable(n) }));
    Object.assign(n.attempts[0]!, { state: 'success', finished_at: 40, test_exit_code: 0 });
    Object.assign(n, { state: 'success', finished_at: 40 });
    lines.push(JSON.stringify({ t: 'node', id: 'b-1', name: 'n0', n: nodeMutable(n) }));
    await writeFile(s.journalPath, `${await journalText(s.journalPath)}${lines.join('\n')}\n`);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(snapshot(again)).toBe(snapshot(s));
    expect(again.data.builds.get('b-1')!.nodes[0]!.attempts[0]!.test_exit_code).toBe(0);
    // and a delta written after them applies on top
    const m = again.data.builds.get('b-1')!.nodes[0]!;
    m.attempts.push(attempt('a-2', 2));
    again.markAttempt('b-1', 'n0', 1);
    await again.commit();
    const third = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(snapshot(third)).toBe(snapshot(again));
    expect(third.data.builds.get('b-1')!.nodes[0]!.attempts.map((x) => x.id)).toEqual(['a-1', 'a-2']);
    await third.drain();
  });

  it('refuses to mark a build or node it does not hold, and writes nothing for it', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', build('b-1', 1));
    s.markNew('b-1');
    await s.commit();
    const journal = await journalText(s.journalPath);
    for (const id of ['__proto__', 'constructor', 'toString', 'b-2']) {
      expect(() => s.markBuild(id)).toThrow(/not active/);
      expect(() => s.markNode(id, 'n0')).toThrow(/not active/);
    }
    expect(() => s.markNode('b-1', '__proto__')).toThrow(/unknown node/);
    expect(() => s.markNode('b-1', 'constructor')).toThrow(/unknown node/);
    expect(() => s.markNodeFields('b-1', '__proto__')).toThrow(/unknown node/);
    expect(() => s.markAttempt('b-1', 'n0', 0)).toThrow(/has 0 attempts/);
    expect(() => s.markAttempt('toString', 'n0', 0)).toThrow(/not active/);
    await s.commit();
    expect(await journalText(s.journalPath)).toBe(journal);
    expect(await s.getBuild('__proto__')).toBeNull();
    expect(await s.getBuild('constructor')).toBeNull();
    expect(await s.setPinned('__proto__', true)).toBeNull();
    expect(await s.setPinned('hasOwnProperty', true)).toBeNull();
    expect(({} as Record<string, unknown>).pinned).toBeUndefined();
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect([...again.data.builds.keys()]).toEqual(['b-1']);
    await again.drain();
  });

  it('refuses on open a journal line that cannot be applied, naming the line, and leaves the file as it was', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    await s.drain();
    const bad = [
      ['{"t":"build","b":{"state":"failed"}}', /line 1: build entry without a build id/],
      ['{"t":"build","b":{"id":"b-9","state":"failed"}}', /line 1: update of unknown build b-9/],
      ['{"t":"new","b":{"id":"b-1","nodes":[]}}\n{"t":"node","id":"b-1","name":"x","n":{}}', /line 2: update of unknown node b-1\/x/],
      ['{"t":"nope"}', /line 1: unknown entry type "nope"/],
      ['{"t":"new","b":{"id":"b-1","nodes":[{"name":"x","attempts":[]}]}}\n{"t":"delta","id":"b-1","name":"x","i":1,"a":[]}', /line 2: delta entry of b-1\/x that changes nothing/],
      ['{"t":"new","b":{"id":"b-1","nodes":[{"name":"x","attempts":[]}]}}\n{"t":"delta","id":"b-1","name":"x","i":0,"a":[[{},"a-1",1]]}', /line 2: delta entry of b-1\/x: an attempt is not an array of 28 values/],
      ['{"t":"new","b":{"id":"b-1","nodes":[{"name":"x","attempts":[]}]}}\n{"t":"delta","id":"b-1","name":"x","i":0,"a":[],"n":{"state":"ready"}}', /line 2: delta entry of b-1\/x: node fields are not an array/],
      ['{"t":"new","b":{"id":"b-1","nodes":[{"name":"x","attempts":[]}]}}\n{"t":"delta","id":"b-1","name":"x","i":-1,"a":[]}', /line 2: delta entry of b-1\/x without a valid attempt index/],
      ['{"t":"new","b":{"id":"b-1","nodes":[{"name":"x","attempts":[]}]}}\n{"t":"delta","id":"b-1","name":"y","i":0,"a":[],"n":["ready",1,null,null,null,null,null,0,0]}', /line 2: update of unknown node b-1\/y/],
      ['[1,2]', /line 1: not a JSON object/],
    ] as const;
    for (const [text, message] of bad) {
      await writeFile(s.journalPath, `${text}\n`);
      await expect(StateStore.open({ dataDir: dir, persist: true, init: false })).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(message) });
      expect(await readFile(s.journalPath, 'utf8')).toBe(`${text}\n`);
    }
  });

  it('refuses a snapshot whose build index does not match its records', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    await s.drain();
    await writeFile(s.path, JSON.stringify({ format: 'kiln-coordinator-state', version: 1, builds: { 'b-1': { id: 'b-2', nodes: [] } }, archived: {} }));
    await expect(StateStore.open({ dataDir: dir, persist: true, init: false })).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(/builds\.b-1 is not a build record with id "b-1"/) });
  });

  it('keeps a pin that lands while the finished build is being archived', async () => {
    for (let round = 0; round < 20; round++) {
      const s = await StateStore.open({ dataDir: join(dir), persist: true, init: round === 0 });
      const id = `b-r${round}`;
      const b = build(id, 50);
      b.state = 'success';
      s.data.builds.set(id, b);
      s.markNew(id);
      await s.commit();
      const archiving = s.archive(b);
      // let the archive serialise the build and start writing its file, then pin
      for (let i = 0; i < round % 4; i++) await new Promise((r) => setImmediate(r));
      const pinned = await s.setPinned(id, true);
      expect(pinned?.pinned).toBe(true);
      await archiving;
      await s.commit();
      expect(JSON.parse(await readFile(s.archivePath(id), 'utf8')).pinned).toBe(true);
      expect(s.data.archived.get(id)?.pinned).toBe(true);
      const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
      expect((await again.getBuild(id))?.pinned).toBe(true);
      expect(again.data.archived.get(id)?.pinned).toBe(true);
      await again.drain();
    }
  });

  it('applies concurrent pins and unpins of an archived build in the order they were acknowledged', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    const b = build('b-1', 50);
    b.state = 'success';
    s.data.builds.set('b-1', b);
    s.markNew('b-1');
    await s.commit();
    await s.archive(b);
    await s.commit();
    const order: boolean[] = [];
    const ops = [true, false, true, true, false].map((v) => s.setPinned('b-1', v).then(() => order.push(v)));
    await Promise.all(ops);
    const last = order[order.length - 1];
    expect(JSON.parse(await readFile(s.archivePath('b-1'), 'utf8')).pinned).toBe(last);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect((await again.getBuild('b-1'))?.pinned).toBe(last);
    expect(again.data.archived.get('b-1')?.pinned ?? false).toBe(last);
  });
});
