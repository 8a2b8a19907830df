/**
 * The coordinator refuses to start on a state file it cannot trust: missing (in an
 * existing data dir), corrupt, or of another format. It exits 78 with a message naming
 * the file, and leaves the file exactly as it was. `--init` creates a new state only
 * where none exists. A second coordinator on the same data dir is refused.
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, startCoordinator, tempDir } from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

describe('coordinator state file', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let dataDir: string;
  let statePath: string;
  let journalPath: string;

  beforeAll(async () => {
    dir = await tempDir('state');
    dataDir = join(dir.path, 'data');
    statePath = join(dataDir, 'state.json');
    journalPath = join(dataDir, 'journal.jsonl');
    const c = await startCoordinator({ dataDir });
    const r = await c.api<{ id: string }>(apiPath.builds(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nodes: { n: { dockerfile_inline: 'FROM kiln/busybox:1' } } }),
    });
    expect(r.status).toBe(201);
    await c.proc.stop();
  });

  afterAll(async () => {
    await dir.cleanup();
  });

  const start = (...args: string[]) => kiln(['coordinator', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...args]);

  it('refuses a corrupt state file, names it, and leaves it untouched', async () => {
    const good = await readFile(statePath);
    const corrupt = good.subarray(0, Math.floor(good.length / 2));
    await writeFile(statePath, corrupt);
    const r = await start();
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(statePath);
    expect(r.stderr).toMatch(/corrupt/);
    expect(await readFile(statePath)).toEqual(corrupt);
    // --init never overwrites an existing (even broken) state file
    const init = await start('--init');
    expect(init.code).toBe(78);
    expect(await readFile(statePath)).toEqual(corrupt);
    await writeFile(statePath, good);
  });

  it('refuses a JSON file that is not a kiln state file', async () => {
    const good = await readFile(statePath);
    await writeFile(statePath, JSON.stringify({ hello: 'world' }));
    const r = await start();
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(statePath);
    expect(r.stderr).toMatch(/not a valid kiln state file/);
    await writeFile(statePath, good);
  });

  it('refuses a missing state file in an existing data dir unless --init is given', async () => {
    const good = await readFile(statePath);
    const journal = await readFile(journalPath);
    await rm(statePath);
    const r = await start();
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(`state file ${statePath} is missing`);
    expect(r.stderr).toMatch(/--init/);

    // --init will not start over while the journal of the old state is still there
    const refused = await start('--init');
    expect(refused.code).toBe(78);
    expect(refused.stderr).toContain(journalPath);
    expect(await readFile(journalPath)).toEqual(journal);

    await rm(journalPath);
    const c = await startCoordinator({ dataDir, args: ['--init'] });
    const list = await c.api<{ items: unknown[] }>(apiPath.builds());
    expect(list.body.items).toEqual([]);
    await c.proc.stop();
    await writeFile(statePath, good);
    await writeFile(journalPath, journal);
  });

  it('refuses a corrupt line in the state journal, naming file and line', async () => {
    const journal = await readFile(journalPath);
    await writeFile(journalPath, Buffer.concat([journal, Buffer.from('{"t":"node", oops}\n{"t":"build"}\n')]));
    const r = await start();
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(new RegExp(`state journal ${journalPath} is corrupt at line \\d+`));
    await writeFile(journalPath, journal);
  });

  it('drops a torn last journal line (a write that was never acknowledged)', async () => {
    const journal = await readFile(journalPath);
    await writeFile(journalPath, Buffer.concat([journal, Buffer.from('{"t":"build","b":{"id":"b-x","sta')]));
    const c = await startCoordinator({ dataDir });
    expect((await c.api<{ items: unknown[] }>(apiPath.builds())).body.items).toHaveLength(1);
    await c.proc.stop();
  });

  it('creates a data dir that does not exist yet, with tokens', async () => {
    const fresh = join(dir.path, 'fresh', 'nested');
    const c = await startCoordinator({ dataDir: fresh });
    expect(c.proc.stderr).toMatch(/tokens\/agent \(created\)/);
    expect(c.proc.stderr).toMatch(/tokens\/api \(created\)/);
    for (const kind of ['agent', 'api']) {
      const st = await stat(join(fresh, 'tokens', kind));
      expect(st.mode & 0o777).toBe(0o600);
      expect((await readFile(join(fresh, 'tokens', kind), 'utf8')).trim().length).toBeGreaterThanOrEqual(32);
    }
    await c.proc.stop();
  });

  it('refuses a second coordinator on the same data dir', async () => {
    const c = await startCoordinator({ dataDir });
    const second = await start();
    expect(second.code).toBe(78);
    expect(second.stderr).toMatch(new RegExp(`locked by pid ${c.proc.child.pid}`));
    const builds = await c.api<{ items: unknown[] }>(apiPath.builds());
    expect(builds.body.items).toHaveLength(1);
    await c.proc.stop();
  });

  it('refuses an existing empty data dir without --init', async () => {
    const empty = join(dir.path, 'empty');
    await mkdir(empty);
    const r = await kiln(['coordinator', '--data-dir', empty, '--listen', '127.0.0.1:0']);
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(/is missing/);
  });
});
