/**
 * Build secrets, for real (issue 12): a `kiln coordinator` and a `kiln agent` process on
 * the real dockerd; the secret is set with `kiln secrets set` from stdin.
 *
 * - A node with `secrets: [tok]` reads it with `RUN --mount=type=secret,id=tok` (its
 *   Dockerfile compares the sha256 of the mounted file, so the value is in no spec) and
 *   prints it: the build succeeds and its log shows `[secret:tok]`, never the value, also
 *   when the step prints it one character at a time (many log chunks), also while another
 *   stage prints at the same time, or in the middle of a lot of output; and for a failing
 *   step, in the error report.
 * - The value is nowhere: in no file under the coordinator's data dir or the agent's work
 *   dir (binary-safe, also base64 and hex), not in the processes' output, not in the
 *   image history (`docker history --no-trunc`) or any layer (`docker save`), not in the
 *   logs the API serves (`kiln logs`), the provenance record or the error report.
 * - A secret the coordinator does not hold is refused at submit (400 naming node and secret).
 * - Reuse: the same node again reuses the result; after the secret is set again (a new
 *   version) it builds again. A secret removed after the submit fails the node naming it.
 * - At rest: a start with another key file is refused, naming both files; with the right
 *   key the coordinator starts and the secret is there.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import {
  DOCKER_HOST, KILN_BIN, kiln, nodeLog, nodeOf, spawnKiln, startAgent, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild,
  type CoordinatorHandle, type Proc,
} from '../helpers/cluster.js';

const run = promisify(execFile);

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** `kiln secrets set NAME` with `value` on its stdin. */
function setSecret(c: CoordinatorHandle, name: string, value: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [KILN_BIN, 'secrets', 'set', name], { env: { ...process.env, ...c.cliEnv, NO_COLOR: '1' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(value);
  });
}

describe('build secrets', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  let agent: Proc;
  const procs: Proc[] = [];
  const value = `kv-${randomBytes(12).toString('hex')}`;
  const forms = [value, Buffer.from(value).toString('base64'), Buffer.from(value).toString('hex')];
  const hash = createHash('sha256').update(value).digest('hex');
  const check = `test "$(sha256sum /run/secrets/tok | cut -d" " -f1)" = "${hash}"`;
  let dataDir = '';
  let workDir = '';
  let okBuild = '';

  beforeAll(async () => {
    dir = await tempDir('secrets');
    dataDir = join(dir.path, 'data');
    workDir = join(dir.path, 'work');
    coord = await startCoordinator({ dataDir });
    procs.push(coord.proc);
    agent = await startAgent({ coordinator: coord, name: 'sec-agent', workDir, maxJobs: 3 });
    procs.push(agent);
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await dir?.cleanup();
  });

  it('sets a secret from stdin and lists it without its value', async () => {
    const set = await setSecret(coord, 'tok', value);
    expect(set.stderr).toBe('');
    expect(set.code).toBe(0);
    expect(set.stdout).toBe(`secret tok set (${value.length} bytes, version 1)\n`);
    const list = await kiln(['secrets', 'list', '--json'], coord.cliEnv);
    expect(list.code).toBe(0);
    const items = list.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(items).toEqual([{ name: 'tok', size: value.length, version: 1, updated_at: expect.any(String) }]);
    for (const f of forms) expect(list.stdout).not.toContain(f);
    // --from-file, and the table
    const file = join(dir.path, 'second.txt');
    await writeFile(file, 'from-a-file\n');
    const second = await kiln(['secrets', 'set', 'second', '--from-file', file], coord.cliEnv);
    expect(second.stdout).toBe('secret second set (12 bytes, version 2)\n');
    const table = await kiln(['secrets', 'list'], coord.cliEnv);
    expect(table.stdout).toMatch(/^NAME\s+SIZE\s+VERSION\s+UPDATED\nsecond\s+12\s+2\s+\S+\ntok\s+\d+\s+1\s+\S+\n$/);
    expect((await kiln(['secrets', 'rm', 'second'], coord.cliEnv)).code).toBe(0);
    const big = join(dir.path, 'big.txt');
    await writeFile(big, Buffer.alloc(64 * 1024 + 1, 0x61));
    const tooBig = await kiln(['secrets', 'set', 'big', '--from-file', big], coord.cliEnv);
    expect(tooBig.code).toBe(2);
    expect(tooBig.stderr).toContain('a secret holds at most 65536');
  });

  it('refuses a node naming a secret the coordinator does not hold (400, naming node and secret)', async () => {
    const r = await coord.api<{ detail: string; errors: Array<{ path: string; message: string }> }>(apiPath.builds(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nodes: { needy: { dockerfile_inline: 'FROM kiln/busybox:1\n', secrets: ['tok', 'nope'] } } }),
    });
    expect(r.status).toBe(400);
    expect(r.body.errors).toEqual([{ path: 'nodes.needy.secrets', message: expect.stringMatching(/^node 'needy': field 'secrets': secret 'nope' is not held by the coordinator/) }]);
  });

  it('builds with the secret mounted; the log shows [secret:tok], never the value, however it was printed', async () => {
    const slow = `v=$(cat /run/secrets/tok); i=1; while [ $i -le \${#v} ]; do printf %s "$(echo "$v" | cut -c$i)"; sleep 0.04; i=$((i+1)); done; echo " <- slow"`;
    const big = `i=0; while [ $i -lt 2000 ]; do echo "before $i padding padding padding padding"; i=$((i+1)); done; printf "mid %s mid" "$(cat /run/secrets/tok)"; i=0; while [ $i -lt 2000 ]; do echo "after $i padding padding padding padding"; i=$((i+1)); done`;
    const spec = {
      name: 'secrets',
      nodes: {
        use: {
          secrets: ['tok'],
          dockerfile_inline: `FROM kiln/busybox:1\nRUN --mount=type=secret,id=tok sh -c '${check} && echo "value: $(cat /run/secrets/tok)" && mkdir -p /out && echo built > /out/f'\n`,
          outputs: { out: '/out' },
        },
        slow: { secrets: ['tok'], dockerfile_inline: `FROM kiln/busybox:1\nRUN --mount=type=secret,id=tok sh -c '${check} && ${slow}'\n` },
        big: { secrets: ['tok'], dockerfile_inline: `FROM kiln/busybox:1\nRUN --mount=type=secret,id=tok sh -c '${check} && ${big}'\n` },
        // Two stages at once: the value printed slowly while the other stage prints.
        parallel: {
          secrets: ['tok'],
          dockerfile_inline: [
            'FROM kiln/busybox:1 AS a',
            `RUN --mount=type=secret,id=tok sh -c '${check} && ${slow} && touch /done'`,
            'FROM kiln/busybox:1 AS b',
            `RUN sh -c 'echo ${hash.slice(0, 12)}; i=0; while [ $i -lt 60 ]; do echo "noise $i"; sleep 0.02; i=$((i+1)); done; touch /done'`,
            'FROM kiln/busybox:1',
            'COPY --from=a /done /a',
            'COPY --from=b /done /b',
            '',
          ].join('\n'),
        },
      },
    };
    okBuild = await submitSpec(coord, spec);
    const b = await waitForBuild(coord, okBuild);
    expect(b.nodes.map((n) => [n.name, n.state, n.error])).toEqual([
      ['use', 'success', null],
      ['slow', 'success', null],
      ['big', 'success', null],
      ['parallel', 'success', null],
    ]);
    const use = await nodeLog(coord, okBuild, 'use');
    expect(use).toMatch(/value: \[secret:tok\]\n/);
    const slowLog = await nodeLog(coord, okBuild, 'slow');
    expect(slowLog).toContain('[secret:tok] <- slow');
    const bigLog = await nodeLog(coord, okBuild, 'big');
    expect(bigLog).toContain('mid [secret:tok] mid');
    expect(bigLog).toContain('after 1999 padding');
    const parallelLog = await nodeLog(coord, okBuild, 'parallel');
    expect(parallelLog).toContain('[secret:tok] <- slow');
    expect(parallelLog).toContain('noise 59');
    if (process.env.KILN_TEST_SHOW_LOG) console.log(parallelLog);
    const cli = await kiln(['logs', okBuild], coord.cliEnv);
    expect(cli.code).toBe(0);
    expect(cli.stdout.split('[secret:tok]').length - 1).toBeGreaterThanOrEqual(4);
    for (const f of forms) for (const text of [use, slowLog, bigLog, parallelLog, cli.stdout, cli.stderr]) expect(text).not.toContain(f);
  });

  it('keeps the value out of the image history and every layer', async () => {
    const b = await waitForBuild(coord, okBuild);
    for (const node of ['use', 'slow', 'big', 'parallel']) {
      const image = nodeOf(b, node).image_id!;
      expect(image).toMatch(/^sha256:/);
      const env = { ...process.env, DOCKER_HOST };
      const history = await run('docker', ['history', '--no-trunc', image], { env, maxBuffer: 16 * 1024 * 1024 });
      // the RUN step that read it (the parallel node's final stage only copies from it)
      if (node !== 'parallel') expect(history.stdout).toContain('/run/secrets/tok');
      const saved = await run('docker', ['save', image], { env, encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 });
      expect(saved.stdout.length).toBeGreaterThan(100_000);
      for (const f of forms) {
        expect(history.stdout).not.toContain(f);
        expect(saved.stdout.includes(f), `${node}: docker save holds ${f}`).toBe(false);
      }
    }
  });

  it('names the secret (and its version) in the provenance record, not its value', async () => {
    const p = await kiln(['provenance', okBuild, 'use', '--json'], coord.cliEnv);
    expect(p.code).toBe(0);
    const doc = JSON.parse(p.stdout) as { secrets?: unknown };
    expect(doc.secrets).toEqual([{ name: 'tok', version: 1 }]);
    for (const f of forms) expect(p.stdout).not.toContain(f);
  });

  it('a failing step that printed the value: the error report shows [secret:tok], never the value', async () => {
    const id = await submitSpec(coord, {
      nodes: { bad: { secrets: ['tok'], dockerfile_inline: `FROM kiln/busybox:1\nRUN --mount=type=secret,id=tok sh -c 'echo "leak: $(cat /run/secrets/tok)"; exit 3'\n` } },
    });
    const b = await waitForBuild(coord, id);
    expect(b.state).toBe('failed');
    expect(nodeOf(b, 'bad').exit_code).toBe(3);
    const report = await coord.api<unknown>(apiPath.buildError(id));
    expect(report.status).toBe(200);
    const text = JSON.stringify(report.body);
    expect(text).toContain('leak: [secret:tok]');
    const cli = await kiln(['error', id], coord.cliEnv);
    expect(cli.stdout).toContain('leak: [secret:tok]');
    for (const f of forms) {
      expect(text).not.toContain(f);
      expect(cli.stdout + cli.stderr).not.toContain(f);
    }
  });

  it('reuses a node with the same secret version, and builds again once the secret is set again', async () => {
    const spec = { nodes: { again: { secrets: ['tok'], dockerfile_inline: `FROM kiln/busybox:1\nRUN --mount=type=secret,id=tok sh -c 'test -s /run/secrets/tok && echo again'\n` } } };
    const first = await waitForBuild(coord, await submitSpec(coord, spec));
    expect(nodeOf(first, 'again').state).toBe('success');
    const reusedFrom = (b: { nodes: unknown[] }) => (b.nodes[0] as { reused_from: unknown }).reused_from;
    const reused = await waitForBuild(coord, await submitSpec(coord, spec));
    expect(reusedFrom(reused)).not.toBeNull();
    expect((await setSecret(coord, 'tok', value)).stdout).toContain('version 3');
    const third = await waitForBuild(coord, await submitSpec(coord, spec));
    expect(reusedFrom(third)).toBeNull();
    expect(third.nodes[0]!.attempts.length).toBe(1);
  });

  it('a secret removed after the submit fails the node that names it, naming the secret', async () => {
    expect((await setSecret(coord, 'gone', 'short-lived-value')).code).toBe(0);
    const id = await submitSpec(coord, {
      nodes: {
        first: { dockerfile_inline: `FROM kiln/busybox:1\nRUN sh -c 'echo ${hash.slice(0, 8)}; sleep 2'\n` },
        later: { needs: ['first'], secrets: ['gone'], dockerfile_inline: 'FROM kiln/busybox:1\nRUN --mount=type=secret,id=gone true\n' },
      },
    });
    const rm = await kiln(['secrets', 'rm', 'gone'], coord.cliEnv);
    expect(rm.stdout).toBe('secret gone removed\n');
    const b = await waitForBuild(coord, id);
    expect(nodeOf(b, 'first').state).toBe('success');
    expect(nodeOf(b, 'later').state).toBe('failed');
    expect(nodeOf(b, 'later').error).toMatch(/no longer holds the secret 'gone'/);
    expect((await kiln(['secrets', 'rm', 'gone'], coord.cliEnv)).stderr).toContain("no secret 'gone'");
  });

  it('leaves the value in no file the coordinator or the agent wrote, nor in their output', async () => {
    const files = [...(await filesUnder(dataDir)), ...(await filesUnder(workDir))];
    expect(files.length).toBeGreaterThan(20);
    expect(files).toContain(join(dataDir, 'secrets.json'));
    for (const file of files) {
      const bytes = await readFile(file).catch(() => Buffer.alloc(0));
      for (const f of forms) expect(bytes.includes(f), `${file} holds the secret (${f === value ? 'raw' : 'encoded'})`).toBe(false);
    }
    for (const f of forms) {
      expect(coord.proc.stderr + coord.proc.stdout).not.toContain(f);
      expect(agent.stderr + agent.stdout).not.toContain(f);
    }
  });

  it('refuses to start with a key that does not decrypt the store, naming both files; starts with the right one', async () => {
    await coord.proc.stop();
    const other = join(dir.path, 'other.key');
    await writeFile(other, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    const refused = spawnKiln(['coordinator', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--secrets-key-file', other]);
    const code = await refused.exited;
    expect(code).not.toBe(0);
    expect(refused.stderr).toContain(`the key file ${other} does not decrypt the secret store ${join(dataDir, 'secrets.json')}`);
    coord = await startCoordinator({ dataDir, port: coord.port });
    procs.push(coord.proc);
    const list = await waitFor('the secret list', async () => {
      const r = await kiln(['secrets', 'list'], coord.cliEnv);
      return r.code === 0 ? r.stdout : null;
    });
    expect(list).toMatch(/^tok\s+\d+\s+3\s/m);
  });
});
