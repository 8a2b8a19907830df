/**
 * The log follower on a real LogStore (files in a temporary directory) and a build source
 * that is only an event emitter: what several agents' frames wrote between two passes comes
 * out as one batch (the SSE route writes a batch at once), a pass reads only the nodes that
 * changed, a backlog larger than a batch comes in batches of bounded size with every byte
 * once and in order, and the stream ends with each node's `complete` and the build's `end`.
 * The store's in-memory tail gives the same bytes as the file, across the tail's edge too.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TypedEmitter } from '../../shared/index.js';
import { followLogs, type BuildChangeEvents, type FollowerEvent } from '../../coordinator/logs/log-follow.js';
import { LogStore, type AttemptLogRef } from '../../coordinator/logs/log-store.js';
import { assignedAttempt, type BuildRecord } from '../../coordinator/state/records.js';
import { buildRecord } from '../helpers/build-record.js';

class Builds extends TypedEmitter<BuildChangeEvents> {
  constructor(readonly build: BuildRecord) {
    super();
  }
  getBuild(id: string): Promise<BuildRecord | null> {
    return Promise.resolve(id === this.build.id ? this.build : null);
  }
}

function running(nodes: number): BuildRecord {
  const build = buildRecord('b1', nodes);
  build.state = 'running';
  for (const node of build.nodes) {
    node.state = 'running';
    const a = assignedAttempt({ id: `${node.name}-a1`, number: 1, agent: 'x', session: 's', assigned_at: 1, log_header: '', inputs: {}, spec_digest: 'd' });
    a.state = 'running';
    node.attempts.push(a);
  }
  return build;
}

const ref = (node: string): AttemptLogRef => ({ buildId: 'b1', node, number: 1, header: '' });
const logText = (batch: FollowerEvent[], node: string) => batch.map((e) => (e.type === 'log' && e.node === node ? e.text : '')).join('');

describe('log follower', () => {
  let dir: string;
  let logs: LogStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-follow-'));
    logs = new LogStore(dir);
  });
  afterEach(async () => {
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('gives what several nodes wrote between two passes as one batch, reading only those nodes, and ends with complete and end', async () => {
    const build = running(4);
    const engine = new Builds(build);
    const ac = new AbortController();
    const it = followLogs({ engine, logs }, { buildId: 'b1', node: null, offsets: new Map(), follow: true, signal: ac.signal });
    const first = (await it.next()).value as FollowerEvent[];
    expect(first.map((e) => e.type)).toEqual(['status', 'status', 'status', 'status']);

    const sizes: string[] = [];
    const nodeSizes = logs.nodeSizes.bind(logs);
    logs.nodeSizes = (b, node, n) => (sizes.push(node), nodeSizes(b, node, n));
    // The follower waits at its yield while two agents' frames are written.
    await Promise.all([logs.append(ref('n0'), 0, Buffer.from('zero\n')), logs.append(ref('n2'), 0, Buffer.from('two\n'))]);
    const batch = (await it.next()).value as FollowerEvent[];
    expect(batch.map((e) => [e.type, 'node' in e ? e.node : null])).toEqual([['log', 'n0'], ['log', 'n2']]);
    expect(logText(batch, 'n0')).toBe('zero\n');
    expect(logText(batch, 'n2')).toBe('two\n');
    expect(sizes).not.toContain('n1');
    expect(sizes).not.toContain('n3');

    for (const node of build.nodes) {
      node.state = 'success';
      node.attempts[0]!.state = 'success';
    }
    build.state = 'success';
    const rest: FollowerEvent[] = [];
    const done = (async () => {
      for (let r = await it.next(); !r.done; r = await it.next()) rest.push(...(r.value ?? []));
    })();
    engine.emit('build', 'b1');
    await done;
    expect(rest.filter((e) => e.type === 'complete').map((e) => e.node)).toEqual(['n0', 'n1', 'n2', 'n3']);
    expect(rest.at(-1)).toEqual({ type: 'end', state: 'success' });
  });

  it('gives a backlog larger than a batch in bounded batches, every byte once and in order', async () => {
    const build = running(3);
    const written = new Map<string, string>();
    for (const node of build.nodes) {
      let text = '';
      let offset = 0;
      for (let i = 0; i < 4000; i++) {
        const line = `${node.name} line ${i} ${'y'.repeat(i % 150)}\n`;
        await logs.append(ref(node.name), offset, Buffer.from(line));
        offset += Buffer.byteLength(line);
        text += line;
      }
      written.set(node.name, text);
    }
    const total = [...written.values()].reduce((n, t) => n + t.length, 0);
    expect(total).toBeGreaterThan(3 * 256 * 1024);
    const ac = new AbortController();
    const got = new Map<string, string>();
    let batches = 0;
    for await (const batch of followLogs({ engine: new Builds(build), logs }, { buildId: 'b1', node: null, offsets: new Map(), follow: false, signal: ac.signal })) {
      batches++;
      let bytes = 0;
      for (const e of batch ?? []) {
        if (e.type !== 'log') continue;
        bytes += e.text.length;
        got.set(e.node, (got.get(e.node) ?? '') + e.text);
      }
      expect(bytes).toBeLessThanOrEqual(256 * 1024 + 64 * 1024);
    }
    expect(batches).toBeGreaterThanOrEqual(Math.ceil(total / (320 * 1024)));
    for (const [node, text] of written) expect(got.get(node)).toBe(text);
  });

  it('reads the last bytes of an open attempt from memory as the file has them, and older ones from the file', async () => {
    let offset = 0;
    const chunks: Buffer[] = [];
    for (let i = 0; i < 300; i++) {
      const chunk = Buffer.from(`${i} ${'z'.repeat((i * 37) % 900)}\n`);
      await logs.append(ref('n0'), offset, chunk);
      offset += chunk.length;
      chunks.push(chunk);
    }
    const all = Buffer.concat(chunks);
    const sizes = await logs.nodeSizes('b1', 'n0', 1);
    expect(sizes).toEqual([all.length]);
    // the last 100 bytes, the last 20 KiB (in the tail), 60 KiB back (across its edge), all
    for (const from of [all.length - 100, all.length - 20 * 1024, all.length - 60 * 1024, 0]) {
      expect((await logs.read('b1', 'n0', sizes, from, all.length)).equals(all.subarray(from))).toBe(true);
      expect((await logs.read('b1', 'n0', sizes, from, from + 50)).equals(all.subarray(from, from + 50))).toBe(true);
    }
    await logs.close(ref('n0'));
    expect((await readFile(logs.attemptPath('b1', 'n0', 1))).equals(all)).toBe(true);
    expect((await logs.read('b1', 'n0', sizes, all.length - 100, all.length)).equals(all.subarray(-100))).toBe(true);
  });
});
