/**
 * The CLI's output reaches a slow reader whole: `kiln logs BUILD | less` (or a test that
 * reads the pipe late) gets every line. A write to a pipe is asynchronous in Node, and the
 * CLI used to call process.exit() once its command returned, which dropped whatever the OS
 * had not taken yet (everything past the 64 KiB pipe buffer when the reader was slow):
 * `secrets.build.test.ts` saw the last `[secret:tok]` of a build's log go missing under load.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KILN_BIN, startAgent, startCoordinator, submitSpec, tempDir, waitForAgent, waitForBuild, type Proc } from '../helpers/cluster.js';

describe('CLI output through a pipe', () => {
  const procs: Proc[] = [];
  const dirs: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    for (const d of dirs) await d();
  });

  it('kiln logs gives a reader that starts late every line of a log far larger than the pipe buffer', async () => {
    const d = await tempDir('cli-pipe');
    dirs.push(d.cleanup);
    const c = await startCoordinator({ dataDir: join(d.path, 'data') });
    procs.push(c.proc);
    const lines = 20_000; // about 1.4 MB of log
    const agent = await startAgent({ coordinator: c, name: 'noop', workDir: join(d.path, 'agent'), executor: 'noop', env: { KILN_NOOP_LOG: String(lines) } });
    procs.push(agent);
    await waitForAgent(c, 'noop', 'connected', agent);
    const id = await submitSpec(c, { nodes: { talk: { dockerfile_inline: 'FROM scratch' } } });
    expect((await waitForBuild(c, id)).state).toBe('success');

    // The reader does not read for a second (the CLI has long finished writing by then).
    const child = spawn(process.execPath, [KILN_BIN, 'logs', id, 'talk'], { env: { ...process.env, ...c.cliEnv, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'inherit'] });
    child.stdout.pause();
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const closed = new Promise((r) => child.stdout.once('close', r));
    await new Promise((r) => setTimeout(r, 1_000));
    const chunks: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => chunks.push(b));
    child.stdout.resume();
    const code = await exited;
    await closed;
    expect(code).toBe(0);
    const out = Buffer.concat(chunks).toString('utf8');
    const numbers = [...out.matchAll(/ line (\d+)\/20000 /g)].map((m) => Number(m[1]));
    expect(numbers.length).toBe(lines);
    expect(numbers.at(-1)).toBe(lines);
  });
});
