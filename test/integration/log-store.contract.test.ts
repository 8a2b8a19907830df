/**
 * The log store contract (issue 14): the same suite on the file store (files in a temporary
 * data dir) and on the PostgreSQL store (a real PostgreSQL, a fresh database for this file,
 * this process holding the lease), so a log behaviour cannot differ by store without a failing
 * test. Appends addressed by the agent's offset (in order, a resend written once, a gap refused),
 * headers and node offsets across attempts, notes, `append` events after the bytes are
 * readable, a second store on the same place (a restart, or a standby taking over) resuming
 * where the acks stopped, UTF-8 boundaries, tails and the error report's last lines, and the
 * follower reading a whole build through the store.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TypedEmitter } from '../../shared/index.js';
import { tailLines } from '../../coordinator/builds/error-report.js';
import { createLogStore } from '../../coordinator/logs/create-log-store.js';
import { followLogs, type BuildChangeEvents, type FollowerEvent } from '../../coordinator/logs/log-follow.js';
import type { AttemptLogRef, LogStorage } from '../../coordinator/logs/log-storage.js';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { assignedAttempt, type BuildRecord } from '../../coordinator/state/records.js';
import { buildRecord } from '../helpers/build-record.js';
import { freshDatabase, type TestDatabase } from '../helpers/postgres.js';

const TOKEN = { epoch: 1, holder: 'contract-test' };

interface Subject {
  name: string;
  setup(): Promise<void>;
  /** A new store on the same place (a restart, or another coordinator). */
  open(): LogStorage;
  teardown(): Promise<void>;
}

function fileSubject(): Subject {
  let dir = '';
  return {
    name: 'file',
    setup: async () => {
      dir = await mkdtemp(join(tmpdir(), 'kiln-logs-contract-'));
    },
    open: () => createLogStore(dir, null),
    teardown: () => rm(dir, { recursive: true, force: true }),
  };
}

function pgSubject(): Subject {
  let db: TestDatabase | null = null;
  let pg: PgClient | null = null;
  return {
    name: 'postgres',
    setup: async () => {
      db = await freshDatabase();
      pg = await openPg(db.url, { applicationName: 'kiln-test-logs', max: 4 });
      await migrate(pg);
      await pg.query(`INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, $1, $2, 'http://127.0.0.1:1', now() + interval '1 day')`, [TOKEN.epoch, TOKEN.holder]);
    },
    open: () => createLogStore('/nonexistent-data-dir', { pg: pg!, fence: () => TOKEN }),
    teardown: async () => {
      await pg?.close();
      await db?.drop();
    },
  };
}

let builds = 0;
/** A ref of a build of its own (tests share the store's place). */
const newBuild = () => `b-contract-${++builds}`;
const ref = (buildId: string, node = 'n0', number = 1, header = ''): AttemptLogRef => ({ buildId, node, number, header });
const b = (text: string) => Buffer.from(text);

async function readAll(logs: LogStorage, buildId: string, node: string, attempts: number): Promise<string> {
  const sizes = await logs.nodeSizes(buildId, node, attempts);
  const total = sizes.reduce((x, y) => x + y, 0);
  return (await logs.read(buildId, node, sizes, 0, total)).toString('utf8');
}

describe.each([fileSubject(), pgSubject()])('log store contract: $name', (subject) => {
  let logs: LogStorage;
  beforeAll(async () => {
    await subject.setup();
    logs = subject.open();
  });
  afterAll(async () => {
    await logs?.closeAll();
    await subject.teardown();
  });

  it('appends by agent offset: in order, a resent chunk written once, a gap refused with the offset to resend from', async () => {
    const id = newBuild();
    expect(await logs.append(ref(id), 0, b('one\n'))).toBe(4);
    expect(await logs.append(ref(id), 4, b('two\n'))).toBe(8);
    expect(await logs.append(ref(id), 0, b('one\n'))).toBe(8); // resent whole
    expect(await logs.append(ref(id), 6, b('o\nthree\n'))).toBe(14); // overlaps: the new part only
    expect(await logs.append(ref(id), 20, b('gap\n'))).toBe(14); // a gap: refused
    expect(await logs.agentBytes(ref(id))).toBe(14);
    expect(await readAll(logs, id, 'n0', 1)).toBe('one\ntwo\nthree\n');
    expect(logs.healthy).toBe(true);
  });

  it('keeps headers before the agent bytes, and node offsets across attempts', async () => {
    const id = newBuild();
    await logs.append(ref(id, 'n0', 1), 0, b('first try\n'));
    await logs.close(ref(id, 'n0', 1));
    const header = '[kiln] attempt 2: the agent was lost\n';
    await logs.ensure(ref(id, 'n0', 2, header));
    expect(await logs.nodeSizes(id, 'n0', 3)).toEqual([10, header.length, 0]);
    expect(await logs.agentBytes(ref(id, 'n0', 2, header))).toBe(0);
    expect(await logs.append(ref(id, 'n0', 2, header), 0, b('second\n'))).toBe(7);
    const sizes = await logs.nodeSizes(id, 'n0', 2);
    expect(sizes).toEqual([10, header.length + 7]);
    expect(await readAll(logs, id, 'n0', 2)).toBe(`first try\n${header}second\n`);
    // a window across the attempts' edge
    expect((await logs.read(id, 'n0', sizes, 6, 16)).toString()).toBe(`try\n${header.slice(0, 6)}`);
    // an attempt nobody wrote has size 0 and reads as nothing
    expect(await logs.nodeSizes(newBuild(), 'n0', 2)).toEqual([0, 0]);
  });

  it('counts a coordinator note as agent bytes, after what the agent sent', async () => {
    const id = newBuild();
    await logs.append(ref(id), 0, b('built\n'));
    await logs.appendNote(ref(id), '[kiln] reused from b-1\n');
    expect(await logs.agentBytes(ref(id))).toBe(6 + 23);
    expect(await logs.append(ref(id), 0, b('built\n'))).toBe(29); // a late resend changes nothing
    expect(await readAll(logs, id, 'n0', 1)).toBe('built\n[kiln] reused from b-1\n');
  });

  it('emits append once the bytes are readable', async () => {
    const id = newBuild();
    const seen: string[] = [];
    const reads: Array<Promise<string>> = [];
    const onAppend = (buildId: string, node: string) => {
      if (buildId !== id) return;
      seen.push(node);
      reads.push(readAll(logs, id, node, 1));
    };
    logs.on('append', onAppend);
    try {
      await logs.append(ref(id, 'n3'), 0, b('hello\n'));
    } finally {
      logs.off('append', onAppend);
    }
    expect(seen).toEqual(['n3']);
    expect(await Promise.all(reads)).toEqual(['hello\n']);
  });

  it('a second store on the same place (a restart, a standby taking over) has every acked byte and resumes from it', async () => {
    const id = newBuild();
    const header = '[kiln] requeued\n';
    let acked = 0;
    for (let i = 0; i < 50; i++) acked = await logs.append(ref(id, 'n0', 1, header), acked, b(`line ${i}\n`));
    await logs.close(ref(id, 'n0', 1)); // the file store's bytes reach the disk at close (the PostgreSQL store's at each ack)
    const other = subject.open();
    try {
      expect(await other.agentBytes(ref(id, 'n0', 1, header))).toBe(acked);
      // the agent resends from the acked offset, including bytes the new store already has
      expect(await other.append(ref(id, 'n0', 1, header), acked - 8, b('line 49\nline 50\n'))).toBe(acked + 8);
      const expected = header + Array.from({ length: 51 }, (_, i) => `line ${i}\n`).join('');
      expect(await readAll(other, id, 'n0', 1)).toBe(expected);
      await other.close(ref(id, 'n0', 1));
      const third = subject.open();
      try {
        expect(await readAll(third, id, 'n0', 1)).toBe(expected);
      } finally {
        await third.closeAll();
      }
    } finally {
      await other.closeAll();
    }
  });

  it('tells UTF-8 character boundaries at node offsets', async () => {
    const id = newBuild();
    await logs.append(ref(id), 0, b('aé€😀\n')); // 1 + 2 + 3 + 4 bytes
    const sizes = await logs.nodeSizes(id, 'n0', 1);
    const boundaries = [];
    for (let off = 0; off <= 11; off++) if (await logs.isCharBoundary(id, 'n0', sizes, off)) boundaries.push(off);
    expect(boundaries).toEqual([0, 1, 3, 6, 10, 11]);
  });

  it('gives an attempt tail, and the error report its last lines, from the store', async () => {
    const id = newBuild();
    const lines = Array.from({ length: 300 }, (_, i) => `step ${i}`);
    let off = 0;
    for (let i = 0; i < lines.length; i += 30) off = await logs.append(ref(id), off, b(`${lines.slice(i, i + 30).join('\n')}\n`));
    const tail = await logs.tail(ref(id), 20);
    expect(tail.start).toBe(off - 20);
    expect(tail.bytes.toString()).toBe(`${lines.join('\n')}\n`.slice(-20));
    expect(await tailLines(logs, ref(id))).toEqual(lines.slice(-200));
    expect(await tailLines(logs, ref(id, 'missing'))).toEqual([]);
  });

  it('feeds the follower a whole build, every byte once and in order', async () => {
    const build: BuildRecord = buildRecord(newBuild(), 3);
    build.state = 'success';
    const expected = new Map<string, string>();
    for (const node of build.nodes) {
      const a = assignedAttempt({ id: `${node.name}-a1`, number: 1, agent: 'x', session: 's', assigned_at: 1, log_header: '', inputs: {}, spec_digest: 'd' });
      a.state = 'success';
      node.attempts.push(a);
      node.state = 'success';
      let text = '';
      let off = 0;
      for (let i = 0; i < 40; i++) {
        const line = `${node.name} ${'x'.repeat(i * 37)}\n`;
        off = await logs.append(ref(build.id, node.name), off, b(line));
        text += line;
      }
      await logs.close(ref(build.id, node.name));
      expected.set(node.name, text);
    }
    class Builds extends TypedEmitter<BuildChangeEvents> {
      getBuild(id: string): Promise<BuildRecord | null> {
        return Promise.resolve(id === build.id ? build : null);
      }
    }
    const got = new Map<string, string>();
    const ac = new AbortController();
    for await (const batch of followLogs({ engine: new Builds(), logs }, { buildId: build.id, node: null, offsets: new Map(), follow: false, signal: ac.signal })) {
      for (const e of (batch ?? []) as FollowerEvent[]) if (e.type === 'log') got.set(e.node, (got.get(e.node) ?? '') + e.text);
    }
    expect(got).toEqual(expected);
  });
});
