/**
 * The `kiln` CLI as a user runs it: submit a spec with a context directory (packed and
 * uploaded by digest) and follow it; exit codes mirror the build; spec errors name the
 * node and field; the other commands show what the coordinator knows.
 */
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO, kiln, useCluster } from '../helpers/cluster.js';

describe('kiln CLI', () => {
  const c = useCluster('cli', { agents: [{ name: 'cli-agent', platforms: ['linux/s390x'] }] });

  it('submits the example with --follow, prints every node prefixed, exits 0', async () => {
    // A copy of the example with a unique greeting, so BuildKit's cache cannot hide the RUN output.
    const example = join(c.dir, 'hello');
    await cp(join(REPO, 'examples/hello'), example, { recursive: true });
    const marker = `hi-${Date.now()}`;
    const spec = join(example, 'kiln.yaml');
    await writeFile(spec, (await readFile(spec, 'utf8')).replaceAll('hello from kiln', marker));
    const r = await kiln(['submit', spec, '--follow'], c.coord.cliEnv);
    expect(r.code, r.stderr).toBe(0);
    for (const node of ['compile-amd64', 'compile-s390x', 'test', 'package']) expect(r.stdout).toMatch(new RegExp(`^${node} +\\| `, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^compile-s390x +\\| .*${marker} \\(s390x\\)$`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^compile-amd64 +\\| .*${marker} \\(x86_64\\)$`, 'm'));
    expect(r.stdout).toMatch(/build b-\S+ \(hello\): success/);
    expect(r.stdout).not.toContain('\x1b['); // not a TTY: no colour
    expect(r.stderr).toMatch(/submitted \(4 nodes\)/);
  });

  it('prints just the build id without --follow, and status/logs/builds find it', async () => {
    const spec = join(c.dir, 'one.yaml');
    await writeFile(spec, 'nodes:\n  one:\n    dockerfile_inline: |\n      FROM kiln/busybox:1\n      RUN echo one-$RANDOM\n');
    const r = await kiln(['submit', spec], c.coord.cliEnv);
    expect(r.code).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(/^b-[0-9a-z-]+$/);
    const logs = await kiln(['logs', id, '-f'], c.coord.cliEnv);
    expect(logs.code).toBe(0);
    const status = await kiln(['status', id, '--json'], c.coord.cliEnv);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ id, state: 'success' });
    const builds = await kiln(['builds'], c.coord.cliEnv);
    expect(builds.stdout).toContain(id);
    const nodeLog = await kiln(['logs', id, 'one'], c.coord.cliEnv);
    expect(nodeLog.stdout).toMatch(/RUN echo one-/);
    const agents = await kiln(['agents'], c.coord.cliEnv);
    expect(agents.stdout).toMatch(/cli-agent +connected .*linux\/s390x\(emulated\)/);
    const cancel = await kiln(['cancel', id], c.coord.cliEnv);
    expect(cancel.code).toBe(1);
    expect(cancel.stderr).toMatch(/already finished/);
  });

  it('exits 1 and replays the failing step when the build fails', async () => {
    const spec = join(c.dir, 'fail.yaml');
    await writeFile(spec, 'nodes:\n  bad:\n    no_cache: true\n    dockerfile_inline: |\n      FROM kiln/busybox:1\n      RUN echo going-down; exit 4\n');
    const r = await kiln(['submit', spec, '-f'], c.coord.cliEnv);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/------ bad: \[2\/2\] RUN echo going-down; exit 4 ------/);
    expect(r.stdout).toMatch(/exit code: 4/);
  });

  it('exits 2 with the node and field named for an invalid spec, before uploading anything', async () => {
    const spec = join(c.dir, 'bad.yaml');
    await writeFile(spec, 'nodes:\n  lib:\n    context: ./missing-dir\n  app:\n    needs: [lib, nope]\n    dockerfile_inline: FROM kiln/busybox:1\n');
    const r = await kiln(['submit', spec], c.coord.cliEnv);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/node 'app': field 'needs': unknown node 'nope'/);
    const ctx = join(c.dir, 'ctx');
    await mkdir(ctx, { recursive: true });
    const spec2 = join(c.dir, 'bad2.yaml');
    await writeFile(spec2, 'nodes:\n  lib:\n    context: ./ctx\n');
    const r2 = await kiln(['submit', spec2], c.coord.cliEnv);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/node 'lib': field 'dockerfile': Dockerfile not found in context \.\/ctx/);
  });

  it('exits 2 when the coordinator cannot be reached and 4 when the token is refused', async () => {
    const unreachable = await kiln(['builds'], { KILN_COORDINATOR: 'http://127.0.0.1:9', KILN_TOKEN_FILE: c.coord.apiTokenFile });
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr).toMatch(/cannot reach the coordinator at http:\/\/127\.0\.0\.1:9/);
    const badToken = await kiln(['builds'], { KILN_COORDINATOR: c.coord.url, KILN_TOKEN_FILE: '', KILN_TOKEN: 'wrong-token-wrong-token' });
    expect(badToken.code).toBe(4);
    expect(badToken.stderr).toMatch(/refused/);
  });
});
