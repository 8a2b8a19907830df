/**
 * The file log store when the disk takes only part of a chunk (a real short write: the
 * compiled LogStore runs in a child process under `ulimit -f`, so write(2) writes up to the
 * limit and the next one fails with EFBIG). The failed append is refused, the file keeps
 * exactly the bytes acknowledged before it, and a later append at the acknowledged offset
 * lands right after them: nothing is in the file twice and node offsets stay true.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { REPO, requireBuilt, tempDir } from '../helpers/cluster.js';

const LOG_STORE_JS = pathToFileURL(join(REPO, 'dist', 'coordinator', 'logs', 'log-store.js')).href;

/** 1,500 bytes acknowledged, then a 1,000-byte chunk past the 2 KiB limit, then 100 bytes at the acknowledged offset. */
const SCRIPT = `
const [url, dir] = process.argv.slice(1);
const { LogStore } = await import(url);
const store = new LogStore(dir);
const ref = { buildId: 'b-1', node: 'n', number: 1, header: '' };
const out = {};
out.first = await store.append(ref, 0, Buffer.alloc(1500, 'a'));
try {
  out.second = await store.append(ref, 1500, Buffer.alloc(1000, 'b'));
} catch (err) {
  out.secondError = err.code ?? err.message;
}
out.third = await store.append(ref, out.second ?? out.first, Buffer.alloc(100, 'c'));
out.agentBytes = await store.agentBytes(ref);
await store.closeAll();
console.log(JSON.stringify(out));
`;

let dir: { path: string; cleanup: () => Promise<void> };

beforeEach(async () => {
  requireBuilt();
  dir = await tempDir('log-short-write');
});

afterEach(async () => {
  await dir.cleanup();
});

it('a chunk the disk takes only part of is refused and cut off again; the next append lands right after the acknowledged bytes', async () => {
  // ulimit -f counts 1,024-byte blocks: the file may grow to 2,048 bytes.
  const child = spawn('bash', ['-c', 'ulimit -f 2 && exec node --input-type=module -e "$0" "$1" "$2"', SCRIPT, LOG_STORE_JS, dir.path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  expect(code, stderr).toBe(0);
  const out = JSON.parse(stdout.trim()) as Record<string, unknown>;
  expect(out).toEqual({ first: 1500, secondError: 'EFBIG', third: 1600, agentBytes: 1600 });
  const file = await readFile(join(dir.path, 'logs', 'b-1', 'n', 'attempt-1.log'));
  expect(file.length).toBe(1600);
  expect(file.subarray(0, 1500).every((b) => b === 0x61)).toBe(true);
  expect(file.subarray(1500).toString()).toBe('c'.repeat(100));
});
