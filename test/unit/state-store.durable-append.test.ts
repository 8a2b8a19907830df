/**
 * The journal's durability without a separate fdatasync: its file descriptor is opened
 * with O_DSYNC (read back from /proc/self/fdinfo on Linux), both for a new state (--init)
 * and for one reopened after replay; commits that arrive while a write is in flight share
 * the next write, and every commit resolves. The journal is preallocated (zeros past its
 * text): replay stops at the text's end, drops a torn write and refuses data further on.
 */
import { constants } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildRecord } from '../helpers/build-record.js';
import { StateStore } from '../../coordinator/state/state-store.js';
import { JOURNAL_WRITE_PIECE } from '../../coordinator/state/journal-writer.js';
import { journalText } from '../helpers/journal-text.js';

/** The open flags of this process's descriptors on `path` (Linux only; null elsewhere). */
async function openFlags(path: string): Promise<number[] | null> {
  if (process.platform !== 'linux') return null;
  const flags: number[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target !== path) continue;
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
    const m = /^flags:\s+([0-7]+)/m.exec(info);
    if (m) flags.push(parseInt(m[1]!, 8));
  }
  return flags;
}

describe('state store: durable appends', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-store-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the journal through an O_DSYNC descriptor, new and reopened', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', buildRecord('b-1', 2));
    s.markNew('b-1');
    await s.commit();
    const fresh = await openFlags(s.journalPath);
    if (fresh) {
      // One journal descriptor, O_DSYNC, writing at positions (the file has zeros past its text);
      // a descriptor writing those zeros (no O_DSYNC, one sync at its end) may be open beside it.
      const journal = fresh.filter((f) => (f & constants.O_DSYNC) === constants.O_DSYNC);
      expect(journal.length).toBe(1);
      expect(journal[0]! & constants.O_APPEND).toBe(0);
    }
    await s.drain();
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    again.data.builds.get('b-1')!.nodes[0]!.state = 'ready';
    again.markNode('b-1', 'n0');
    await again.commit();
    const reopened = await openFlags(again.journalPath);
    if (reopened) expect(reopened.filter((f) => (f & constants.O_DSYNC) === constants.O_DSYNC).length).toBe(1);
    await again.drain();
  });

  it('groups commits made while a write is in flight into the next write, and resolves them all', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', buildRecord('b-1', 40));
    s.markNew('b-1');
    await s.commit();
    const before = s.writes;
    const commits: Array<Promise<void>> = [];
    for (let i = 0; i < 40; i++) {
      s.data.builds.get('b-1')!.nodes[i]!.state = 'ready';
      s.markNode('b-1', `n${i}`);
      commits.push(s.commit());
      // every other change in a later turn: some arrive while a write is in flight
      if (i % 2 === 1) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(commits);
    expect(s.writes - before).toBeGreaterThan(0);
    expect(s.writes - before).toBeLessThanOrEqual(20);
    await s.drain();
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-1')!.nodes.every((n) => n.state === 'ready')).toBe(true);
    await again.drain();
  });
});

describe('state store: compaction does not stop commits', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-store-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('acknowledges commits while a snapshot is being written, and every acknowledged change survives a crash before or after the journal swap', async () => {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true, minCompactBytes: 1 });
    // hold the snapshot (serialized at once, written only when released)
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const db = (s as unknown as { backend: { db: { write: () => Promise<void> } } }).backend.db;
    const write = db.write.bind(db);
    db.write = () => {
      const p = write();
      return gate.then(() => p);
    };
    s.data.builds.set('b-0', buildRecord('b-0', 2));
    s.markNew('b-0');
    await s.commit(); // journal past 1 byte: a compaction starts
    for (let i = 1; i < 4; i++) {
      s.data.builds.set(`b-${i}`, buildRecord(`b-${i}`, 2));
      s.markNew(`b-${i}`);
      await s.commit(); // resolves although the snapshot is held
    }
    expect(s.snapshots).toBe(0);
    // a crash now: the old snapshot and the whole journal
    const before = join(dir, 'crash-before');
    await mkdir(before);
    await copyFile(join(dir, 'state.json'), join(before, 'state.json'));
    await copyFile(join(dir, 'journal.jsonl'), join(before, 'journal.jsonl'));
    const crashed = await StateStore.open({ dataDir: before, persist: true, init: false });
    expect([...crashed.data.builds.keys()].sort()).toEqual(['b-0', 'b-1', 'b-2', 'b-3']);
    await crashed.drain();
    release();
    s.data.builds.get('b-3')!.nodes[1]!.state = 'ready';
    s.markNode('b-3', 'n1');
    await s.commit(); // the swap happens before or after this batch
    while (s.snapshots === 0) await new Promise((r) => setImmediate(r));
    // a crash now: the new snapshot and the journal of the lines written since it
    const after = join(dir, 'crash-after');
    await mkdir(after);
    await copyFile(join(dir, 'state.json'), join(after, 'state.json'));
    await copyFile(join(dir, 'journal.jsonl'), join(after, 'journal.jsonl'));
    const swapped = await StateStore.open({ dataDir: after, persist: true, init: false });
    expect([...swapped.data.builds.keys()].sort()).toEqual(['b-0', 'b-1', 'b-2', 'b-3']);
    expect(swapped.data.builds.get('b-3')!.nodes[1]!.state).toBe('ready');
    await swapped.drain();
    await s.drain();
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-3')!.nodes[1]!.state).toBe('ready');
    await again.drain();
  });
});

describe('state store: the preallocated journal', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-store-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A store with one build of `n` nodes and `changes` committed node changes, left as after kill -9 (no drain). */
  async function crashedStore(n: number, changes: number): Promise<StateStore> {
    const s = await StateStore.open({ dataDir: dir, persist: true, init: true });
    s.data.builds.set('b-1', buildRecord('b-1', n));
    s.markNew('b-1');
    await s.commit();
    for (let i = 0; i < changes; i++) {
      s.data.builds.get('b-1')!.nodes[i]!.state = 'ready';
      s.markNode('b-1', `n${i}`);
      await s.commit();
    }
    while (s.preallocations === 0) await new Promise((r) => setTimeout(r, 5));
    return s;
  }

  it('writes zeros ahead of the text, and a restart replays the text and cuts the zeros off', async () => {
    const s = await crashedStore(20, 10);
    const text = await journalText(s.journalPath);
    const size = (await stat(s.journalPath)).size;
    expect(size).toBeGreaterThan(Buffer.byteLength(text) + 1024 * 1024);
    const raw = await readFile(s.journalPath);
    expect(raw.indexOf(0)).toBe(Buffer.byteLength(text));
    expect(raw.subarray(Buffer.byteLength(text)).equals(Buffer.alloc(raw.length - Buffer.byteLength(text)))).toBe(true);
    // commits after the zeros were written overwrite them (the file does not grow)
    s.data.builds.get('b-1')!.nodes[15]!.state = 'ready';
    s.markNode('b-1', 'n15');
    await s.commit();
    expect((await stat(s.journalPath)).size).toBe(size);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-1')!.nodes.filter((x) => x.state === 'ready').map((x) => x.name)).toEqual([...Array.from({ length: 10 }, (_, i) => `n${i}`), 'n15']);
    expect((await stat(again.journalPath)).size).toBe(0); // folded into the snapshot at open
    await again.drain();
  });

  it('drops what a torn write left after the text (within one write piece), and refuses data further on', async () => {
    const s = await crashedStore(20, 5);
    const end = Buffer.byteLength(await journalText(s.journalPath));
    const raw = await readFile(s.journalPath);
    // a torn write: the start of a line, a sector that never landed, then a later sector that did
    raw.write('{"t":"build","b":{"id":"b-1","sta', end);
    raw.write('te":"failed"}}\n', end + 8192);
    const state = await readFile(s.path);
    await writeFile(s.journalPath, raw);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-1')!.state).toBe('pending');
    expect(again.data.builds.get('b-1')!.nodes.filter((x) => x.state === 'ready')).toHaveLength(5);
    await again.drain();
    // what was cut off is kept beside the journal, up to its last non-zero byte
    const kept = (await readdir(dir)).filter((f) => f.startsWith('journal.jsonl.torn-'));
    expect(kept).toHaveLength(1);
    const keptBytes = await readFile(join(dir, kept[0]!));
    expect(keptBytes.subarray(0, 33).toString()).toBe('{"t":"build","b":{"id":"b-1","sta');
    expect(keptBytes.length).toBe(8192 + Buffer.byteLength('te":"failed"}}\n'));
    // non-zero bytes further than one write piece past the end: corruption, named, file left alone
    await writeFile(s.path, state);
    const far = Buffer.from(raw);
    far.fill(0, end);
    far.write('{"t":"build"}\n', end + JOURNAL_WRITE_PIECE + 10);
    await writeFile(s.journalPath, far);
    await expect(StateStore.open({ dataDir: dir, persist: true, init: false })).rejects.toThrow(new RegExp(`state journal ${s.journalPath} is corrupt: data at byte ${end + JOURNAL_WRITE_PIECE + 10}, after its end at byte ${end}`));
    expect((await readFile(s.journalPath)).equals(far)).toBe(true);
  });

  it('replays a journal written before preallocation (appended text, no zeros)', async () => {
    const s = await crashedStore(4, 2);
    const text = await journalText(s.journalPath);
    await writeFile(s.journalPath, text);
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    expect(again.data.builds.get('b-1')!.nodes.map((x) => x.state)).toEqual(['ready', 'ready', 'pending', 'pending']);
    await again.drain();
  });
});
