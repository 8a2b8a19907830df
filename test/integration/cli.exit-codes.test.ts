/**
 * Exit codes and messages of the real `kiln` binary where it used to misbehave:
 * `kiln logs -f` against a coordinator that was never reachable exits 2 at once (like
 * every other command) instead of retrying for minutes, while a coordinator that answers
 * keeps its codes (2 not found, 4 token refused); `kiln submit` refuses a "billion laughs"
 * YAML file and a file that is not UTF-8 with exit 2 and one line naming the problem
 * (the byte offset), never a stack trace.
 */
import { createServer } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kiln, useCluster } from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

/** A coordinator URL nothing listens on: a port that was bound, then closed. */
async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return `http://127.0.0.1:${port}`;
}

describe('kiln exit codes', () => {
  const c = useCluster('cli-exit');

  it('kiln logs -f exits 2 when the coordinator cannot be reached at all', async () => {
    const url = await closedPortUrl();
    for (const args of [['logs', 'b-1', '-f'], ['logs', 'b-1', 'node', '-f', '--json']]) {
      const r = await kiln(args, { KILN_COORDINATOR: url, KILN_TOKEN_FILE: c.coord.apiTokenFile });
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(`kiln: cannot reach the coordinator at ${url}: ECONNREFUSED\n`);
      expect(r.stdout).toBe('');
    }
    // the same message every other command gives
    const builds = await kiln(['builds'], { KILN_COORDINATOR: url, KILN_TOKEN_FILE: c.coord.apiTokenFile });
    expect(builds.code).toBe(2);
    expect(builds.stderr).toBe(`kiln: cannot reach the coordinator at ${url}: ECONNREFUSED\n`);
  });

  it('kiln logs -f keeps the codes of a coordinator that answers', async () => {
    const missing = await kiln(['logs', 'b-01kbx2f3q4000-7d2k9x4m', '-f'], c.coord.cliEnv);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('b-01kbx2f3q4000-7d2k9x4m not found');
    const refused = await kiln(['logs', 'b-01kbx2f3q4000-7d2k9x4m', '-f'], { KILN_COORDINATOR: c.coord.url, KILN_TOKEN_FILE: '', KILN_TOKEN: 'wrong-token-wrong-token' });
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/refused/);
  });

  it('kiln submit refuses a billion-laughs YAML file with exit 2 and one line', async () => {
    const spec = join(c.dir, 'laughs.yaml');
    const levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    await writeFile(spec, `${levels.join('\n')}\nnodes: { n: { dockerfile_inline: "FROM kiln/busybox:1", build_args: { X: *i } } }\n`);
    const r = await kiln(['submit', spec], c.coord.cliEnv);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toHaveLength(2); // one line and its newline
    expect(r.stderr).toMatch(/^kiln: invalid spec .*laughs\.yaml: spec expands YAML aliases too often/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('kiln submit refuses a spec that is not UTF-8, naming the byte offset', async () => {
    const spec = join(c.dir, 'latin1.yaml');
    // valid YAML apart from one Latin-1 "ÿ" (0xff is never UTF-8): decoded leniently it would be submitted
    const head = Buffer.from('nodes:\n  n:\n    dockerfile_inline: "FROM kiln/busybox:1\\nRUN echo caf');
    await writeFile(spec, Buffer.concat([head, Buffer.from([0xff]), Buffer.from('"\n')]));
    const r = await kiln(['submit', spec], c.coord.cliEnv);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`kiln: invalid spec ${spec}: spec is not valid UTF-8 (first bad byte at offset ${head.length})\n`);
    expect((await c.coord.api<{ items: unknown[] }>(apiPath.builds())).body.items).toEqual([]);
  });
});
