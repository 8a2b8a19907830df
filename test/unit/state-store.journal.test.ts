/**
 * The coordinator's durable state on real files: a commit is on disk when it resolves
 * (journal line, fdatasync), commits in one turn share one write, a reopened store sees
 * every committed change, snapshots replace the journal without losing anything, a
 * commit's cost follows the change and not the size of the state, and bad files are
 * refused with the file named and left untouched.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BuildRecord } from '../../coordinator/state/records.js';
import { buildRecord } from '../helpers/build-record.js';
import { journalText } from '../helpers/journal-text.js';
import { StateStore } from '../../coordinator/state/state-store.js';

function build(id: string, nodes: number): BuildRecord {
  return buildRecord(id, nodes, { fill: 200 });
}

describe('state store', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-store-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses to open a data dir without state.json unless init, and init creates both files', async () => {
    await expect(StateStore.open({ dataDir: dir, persist: true, init: false })).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringContaining(join(dir, 'state.json')) });
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    expect(JSON.parse(await readFile(s.path, 'utf8'))).toMatchObject({ format: 'kiln-coordinator-state', version: 1 });
    expect((await stat(s.journalPath)).isFile()).toBe(true);
    await s.drain();
  });

  it('has a committed change in the journal on disk when commit() resolves, and a reopened store sees it', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', build('b-1', 3));
    s.markNew('b-1');
    await s.commit();
    const journal = await journalText(s.journalPath);
    expect(journal).toContain('"t":"new"');
    expect(journal).toContain('"id":"b-1"');
    s.data.builds.get('b-1')!.nodes[1]!.state = 'ready';
    s.markNode('b-1', 'n1');
    s.data.builds.get('b-1')!.state = 'running';
    s.markBuild('b-1');
    await s.commit();
    // no drain: as after kill -9, the snapshot does not have these changes, the journal does
    expect(JSON.parse(await readFile(s.path, 'utf8')).builds).toEqual({});
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-1')!.state).toBe('running');
    expect(again.data.builds.get('b-1')!.nodes.map((n) => n.state)).toEqual(['pending', 'ready', 'pending']);
    // opening compacted: the snapshot now holds everything and the journal is empty
    expect(JSON.parse(await readFile(again.path, 'utf8')).builds['b-1'].state).toBe('running');
    expect((await stat(again.journalPath)).size).toBe(0);
    await again.drain();
  });

  it('shares one write among commits made in the same turn', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', build('b-1', 100));
    s.markNew('b-1');
    await s.commit();
    const before = s.writes;
    const commits: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) {
      s.data.builds.get('b-1')!.nodes[i]!.state = 'ready';
      s.markNode('b-1', `n${i}`);
      commits.push(s.commit());
    }
    await Promise.all(commits);
    expect(s.writes - before).toBe(1);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-1')!.nodes.every((n) => n.state === 'ready')).toBe(true);
  });

  it('writes per commit what changed, not the whole state', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('big', build('big', 5000));
    s.markNew('big');
    await s.commit();
    const afterNew = Buffer.byteLength(await journalText(s.journalPath));
    expect(afterNew).toBeGreaterThan(5000 * 200);
    s.data.builds.get('big')!.nodes[42]!.state = 'ready';
    s.markNode('big', 'n42');
    await s.commit();
    const grew = Buffer.byteLength(await journalText(s.journalPath)) - afterNew;
    expect(grew).toBeGreaterThan(0);
    expect(grew).toBeLessThan(1000);
  });

  it('snapshots when the journal outgrows its threshold, losing nothing', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true, minCompactBytes: 1 });
    for (let i = 0; i < 5; i++) {
      s.data.builds.set(`b-${i}`, build(`b-${i}`, 2));
      s.markNew(`b-${i}`);
      await s.commit();
    }
    // one snapshot written while the commits went on, and the final one of drain()
    await s.drain();
    expect(s.snapshots).toBeGreaterThan(1);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect([...again.data.builds.keys()].sort()).toEqual(['b-0', 'b-1', 'b-2', 'b-3', 'b-4']);
  });

  it('archives a finished build to its own file and still finds it after reopening', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    const b = build('b-9', 2);
    b.state = 'success';
    s.data.builds.set('b-9', b);
    s.markNew('b-9');
    await s.commit();
    await s.archive(b);
    await s.commit();
    expect(s.data.builds.get('b-9')).toBeUndefined();
    expect(s.data.archived.get('b-9')).toMatchObject({ id: 'b-9', state: 'success', node_counts: { pending: 2 } });
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-9')).toBeUndefined();
    expect((await again.getBuild('b-9'))!.nodes).toHaveLength(2);
  });

  it('refuses a corrupt snapshot or a corrupt journal line, naming the file, and leaves them as they were', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    await s.drain();
    const snapshot = await readFile(s.path);
    await writeFile(s.path, snapshot.subarray(0, 10));
    await expect(StateStore.open({ dataDir: dir, persist: true, init: false })).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(/state\.json is corrupt/) });
    expect(await readFile(s.path)).toEqual(snapshot.subarray(0, 10));
    await writeFile(s.path, snapshot);
    await writeFile(s.journalPath, '{"t":"new","b":{"id":"x","nodes":[]}}\nnot json\n');
    await expect(StateStore.open({ dataDir: dir, persist: true, init: false })).rejects.toMatchObject({ message: expect.stringMatching(/journal\.jsonl is corrupt at line 2/) });
    expect(await readFile(s.journalPath, 'utf8')).toBe('{"t":"new","b":{"id":"x","nodes":[]}}\nnot json\n');
  });

  it('drops a torn final journal line and keeps the complete ones', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', build('b-1', 1));
    s.markNew('b-1');
    await s.commit();
    await writeFile(s.journalPath, `${await journalText(s.journalPath)}{"t":"build","b":{"id":"b-1","state":"fai`);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-1')!.state).toBe('pending');
  });

  it('without persistence, commits resolve at once and nothing is written', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: false, init: false });
    s.data.builds.set('b', build('b', 1));
    s.markNew('b');
    await s.commit();
    expect(s.writes).toBe(0);
    await expect(stat(join(dir, 'state.json'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

/** The open flags (octal, from /proc/self/fdinfo) of this process's descriptors on `path`. */
async function openFlags(path: string): Promise<number[]> {
  const { readdir, readlink } = await import('node:fs/promises');
  const flags: number[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target !== path) continue;
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
    const m = /^flags:\s+([0-7]+)$/m.exec(info);
    if (m) flags.push(parseInt(m[1]!, 8));
  }
  return flags;
}

describe('state store: the journal file descriptor', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-store-flags-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  // O_DSYNC is 010000 on Linux (x86-64, arm64, s390x alike).
  const O_DSYNC = 0o10000;

  it('is opened O_DSYNC, and only the benchmarks\' unsynced journal is not (same text, same replay)', async () => {
    const texts: string[] = [];
    for (const unsyncedJournal of [false, true]) {
      const sub = join(dir, String(unsyncedJournal));
      const { mkdir } = await import('node:fs/promises');
      await mkdir(sub);
      const s = await StateStore.open({ dataDir: sub, persist: true, init: true, unsyncedJournal });
      s.data.builds.set('b-1', build('b-1', 3));
      s.markNew('b-1');
      await s.commit();
      // The journal's own descriptor, and perhaps the one writing zeros ahead of it (never O_DSYNC: it syncs once per run).
      const flags = await openFlags(s.journalPath);
      expect(flags.length).toBeGreaterThanOrEqual(1);
      expect(flags.some((f) => (f & O_DSYNC) !== 0)).toBe(!unsyncedJournal);
      texts.push(await journalText(s.journalPath));
      const again = await StateStore.open({ dataDir: sub, persist: true, init: false });
      expect(again.data.builds.get('b-1')!.nodes.length).toBe(3);
      await again.drain();
      await s.drain();
    }
    expect(texts[1]).toBe(texts[0]);
  });
});
