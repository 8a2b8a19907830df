/**
 * The fleet commands of the real `kiln` binary against a real coordinator, a noop agent
 * and a docker agent: `kiln agents` (and pause/drain/resume), `kiln pools`, `kiln dlq`,
 * `kiln error BUILD` on a build whose RUN exits 3 (and exit 1 on a build with no failed
 * node), and `kiln retry BUILD NODE --follow`, which prints only the new attempt's output
 * and exits with the build's result. `--json` is JSON Lines: one line per list item.
 */
import { describe, expect, it } from 'vitest';
import type { AgentViewT, ErrorReportT, PoolViewT } from '../../shared/index.js';
import { inline, kiln, submitSpec, useCluster, waitForBuild } from '../helpers/cluster.js';

/** stdout of a `--json` command: one JSON object per line. */
function jsonLines(stdout: string): unknown[] {
  expect(stdout.endsWith('\n')).toBe(true);
  return stdout
    .slice(0, -1)
    .split('\n')
    .map((l) => JSON.parse(l) as unknown);
}

const NATIVE = `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`;

describe('kiln fleet commands', () => {
  const c = useCluster('cli-fleet', {
    coordinatorArgs: ['--heartbeat-interval', '1s', '--lost-after', '20s'],
    agents: [
      { name: 'noop-c', executor: 'noop', labels: 'kind=noop' },
      { name: 'docker-c', labels: 'kind=docker', maxJobs: 2 },
    ],
  });
  const run = (...args: string[]) => kiln(args, c.coord.cliEnv);

  it('kiln agents lists control, health, breaker and jobs; pause, drain and resume change them', async () => {
    const list = await run('agents');
    expect(list.code, list.stderr).toBe(0);
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATE\s+CONTROL\s+HEALTH\s+BREAKER\s+JOBS\s+LOAD/);
    const noop = lines.find((l) => l.startsWith('noop-c '))!.split(/\s{2,}/);
    expect(noop.slice(0, 6)).toEqual(['noop-c', 'connected', 'active', 'ok', 'closed', '0/2']);
    expect(lines.some((l) => l.startsWith('docker-c '))).toBe(true);

    const paused = await run('agents', 'pause', 'noop-c', '--reason', 'disk swap');
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stdout).toBe('agent noop-c: paused (no new work; running attempts go on) — disk swap\n');
    const after = await run('agents');
    expect(after.stdout.split('\n').find((l) => l.startsWith('noop-c '))!.split(/\s{2,}/)[2]).toBe('paused');
    expect(after.stdout).toMatch(/^noop-c: paused since \S+: disk swap$/m);

    const drained = await run('agents', 'drain', 'noop-c', '--json');
    expect(drained.code, drained.stderr).toBe(0);
    expect((JSON.parse(drained.stdout) as AgentViewT).control).toBe('draining');
    const resumed = await run('agents', 'resume', 'noop-c');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toBe('agent noop-c: active (takes work again)\n');

    const json = jsonLines((await run('agents', '--json')).stdout) as AgentViewT[];
    expect(json.map((a) => [a.name, a.control])).toEqual([
      ['docker-c', 'active'],
      ['noop-c', 'active'],
    ]);
  });

  it('kiln agents pause names an unknown agent and refuses bad usage', async () => {
    const ghost = await run('agents', 'pause', 'ghost');
    expect(ghost.code).toBe(2);
    expect(ghost.stderr).toContain("'ghost'");
    const noName = await run('agents', 'pause');
    expect(noName.code).toBe(2);
    expect(noName.stderr).toMatch(/missing required argument 'name'/);
    const resumeReason = await run('agents', 'resume', 'noop-c', '--reason', 'x');
    expect(resumeReason.code).toBe(2);
    expect(resumeReason.stderr).toMatch(/unknown option '--reason'/);
    const empty = await run('agents', 'drain', 'noop-c', '--reason', ' ');
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('--reason');
  });

  it('kiln pools and kiln dlq print tables (and JSON)', async () => {
    const pools = await run('pools');
    expect(pools.code, pools.stderr).toBe(0);
    const lines = pools.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^POOL\s+AGENTS\s+UNAVAILABLE\s+SLOTS/);
    const row = lines.find((l) => l.startsWith(`${NATIVE} `))!.split(/\s{2,}/);
    expect(row.slice(0, 4)).toEqual([NATIVE, '2 (2 native, 0 emulated)', '-', '0/4']);
    const json = jsonLines((await run('pools', '--json')).stdout) as PoolViewT[];
    expect(json.find((p) => p.name === NATIVE)?.slots.total).toBe(4);

    const dlq = await run('dlq');
    expect(dlq.code, dlq.stderr).toBe(0);
    expect(dlq.stdout).toBe('the dead-letter list is empty\n');
    // JSON Lines of an empty list: no line at all
    const dlqJson = await run('dlq', '--json');
    expect(dlqJson.code).toBe(0);
    expect(dlqJson.stdout).toBe('');
  });

  it('kiln error explains a failed build; kiln retry --follow shows only the new attempt and ends with the result', async () => {
    const mark = `kiln-cli-retry-${process.pid}-${Date.now()}`;
    const id = await submitSpec(c.coord, {
      name: 'cli-flaky',
      nodes: {
        broken: inline(
          `FROM kiln/busybox:1\nRUN --mount=type=cache,target=/c,id=${mark} if [ -f /c/fixed ]; then echo "second-$((40+2))"; else echo "first-$((40+2))"; exit 3; fi`,
          { labels: { kind: 'docker' } },
        ),
        after: inline('FROM kiln/busybox:1\nRUN echo "after-$((1+1))"', { needs: ['broken'], no_cache: true, labels: { kind: 'docker' } }),
      },
    });
    expect((await waitForBuild(c.coord, id)).state).toBe('failed');

    const err = await run('error', id);
    expect(err.code, err.stderr).toBe(0);
    expect(err.stdout).toContain(`build ${id} (cli-flaky): failed`);
    expect(err.stdout).toMatch(/^node 'broken' \(linux\/\w+\) failed on attempt 1 \(\S+\) on agent docker-c$/m);
    expect(err.stdout).toContain('  exit code 3\n');
    expect(err.stdout).toMatch(/^ {2}step: {2}.*exit 3/m);
    expect(err.stdout).toMatch(/^ {4}\| .*first-42/m);
    expect(err.stdout).toMatch(/^ {2}provenance: sha256:[0-9a-f]{64} \(kiln provenance /m);
    expect(err.stdout).toContain('skipped because of it: after');
    expect(err.stdout).toContain(`kiln retry ${id} broken`);
    const [errJson, ...moreErr] = jsonLines((await run('error', id, '--json')).stdout) as ErrorReportT[];
    expect(moreErr).toEqual([]);
    expect(errJson).toMatchObject({ build_id: id, node: 'broken', exit_code: 3, agent: 'docker-c' });
    const fewer = await run('error', id, '--lines', '1');
    expect(fewer.stdout).toMatch(/last 1 log line \(\d+ more in the report/);
    expect((await run('error', id, '--lines', 'many')).code).toBe(2);

    // the fix lands: another build puts /c/fixed into the cache mount
    const fix = await submitSpec(c.coord, { name: 'fix', nodes: { fix: inline(`FROM kiln/busybox:1\nRUN --mount=type=cache,target=/c,id=${mark} touch /c/fixed`, { labels: { kind: 'docker' } }) } });
    expect((await waitForBuild(c.coord, fix)).state).toBe('success');
    const retry = await run('retry', id, 'broken', '--follow');
    expect(retry.code, retry.stderr).toBe(0);
    expect(retry.stderr).toContain(`node 'broken' of build ${id} queued again`);
    expect(retry.stdout).toMatch(/^broken +\| .*second-42/m);
    expect(retry.stdout).toMatch(/^after +\| .*after-2/m);
    // what the failed attempt printed was not replayed
    expect(retry.stdout).not.toContain('first-42');
    expect(retry.stdout).toContain(`build ${id} (cli-flaky): success`);

    const again = await run('retry', id, 'broken');
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('only a failed node can be retried');
    for (const args of [['error', id], ['error', id, '--json']]) {
      const noReport = await run(...args);
      expect(noReport.code).toBe(1);
      expect(noReport.stdout).toBe('');
      expect(noReport.stderr).toBe(`build ${id} has no error report: no node failed (state: success)\n`);
    }
    const noBuild = await run('retry', 'b-01kbx2f3q4000-7d2k9x4m', 'broken');
    expect(noBuild.code).toBe(2);
    expect(noBuild.stderr).toContain('b-01kbx2f3q4000-7d2k9x4m not found');
    const unknown = await run('error', 'b-01kbx2f3q4000-7d2k9x4m');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('b-01kbx2f3q4000-7d2k9x4m not found');
  });
});
