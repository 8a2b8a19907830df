/**
 * Budgets for wide builds (issue 11) with real processes: a coordinator started with
 * `--concurrency-groups gpu-heavy=1` and a noop agent whose nodes run for minutes
 * (KILN_NOOP_DELAY_MS) unless cancelled, recording every run (KILN_NOOP_RECORD). A build
 * with `concurrency: 2` runs two nodes and `kiln status` names the budget for the rest;
 * a group shared by two builds runs one node and the other build's grouped node waits
 * for it (also in `kiln pools`); a build's `deadline` cancels its running node on the
 * agent and its waiting node, and `kiln status` says why (exit 3, cancelled). A bad
 * budget is a 400 naming the field.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import { getBuild, inline, kiln, nodeOf, submitSpec, useCluster, waitFor, waitForBuild } from '../helpers/cluster.js';

const NATIVE = `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`;

describe('budgets: concurrency, concurrency groups and deadlines', () => {
  const c = useCluster('budgets', { coordinatorArgs: ['--concurrency-groups', 'gpu-heavy=1'] });
  const run = (...args: string[]) => kiln(args, c.coord.cliEnv);
  const record = () => join(c.dir, 'noop-runs.jsonl');

  const node = (tag: string, extra: Record<string, unknown> = {}) => inline(`FROM kiln/busybox:1\nRUN echo ${tag}`, { platform: NATIVE, ...extra });

  it('holds nodes to their budgets, says so in kiln status and kiln pools, and cancels at the deadline', async () => {
    await c.agent({ name: 'noop-b', executor: 'noop', maxJobs: 8, env: { KILN_NOOP_DELAY_MS: '600000', KILN_NOOP_RECORD: record() } });

    // Build concurrency: 2 of 5 run, the others wait for the build's budget (the agent has 8 slots).
    const wide = await submitSpec(c.coord, { name: 'wide', concurrency: 2, nodes: Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`w${i}`, node(`w${i}`)])) });
    const w = await waitForBuild(c.coord, wide, (b) => b.nodes.filter((n) => n.state === 'running').length === 2);
    expect(w.nodes.filter((n) => n.state === 'ready')).toHaveLength(3);
    const ws = await run('status', wide);
    expect(ws.code, ws.stderr).toBe(0);
    expect(ws.stdout).toContain('  budget: concurrency 2/2\n');
    expect(ws.stdout.split('\n').filter((l) => l.includes('waiting: build concurrency 2 reached'))).toHaveLength(3);

    // A group shared across builds: limit 1 (coordinator config).
    const first = await submitSpec(c.coord, { name: 'g1', concurrency_group: 'gpu-heavy', nodes: { train: node('g1') } });
    await waitForBuild(c.coord, first, (b) => b.state === 'running' && nodeOf(b, 'train').state === 'running');
    const third = await submitSpec(c.coord, { name: 'g3', nodes: { train: node('g3', { concurrency_group: 'gpu-heavy' }) } });
    await waitForBuild(c.coord, third, (b) => nodeOf(b, 'train').state === 'ready');
    const gs = await run('status', third);
    expect(gs.stdout).toMatch(/^ {2}train\s+ready\s+.*waiting: concurrency group gpu-heavy full \(1\/1\)$/m);
    const late = await submitSpec(c.coord, {
      name: 'g2',
      deadline: '5s',
      nodes: { train: node('g2', { concurrency_group: 'gpu-heavy' }), lint: node('g2-lint') },
    });
    const g2 = await waitForBuild(c.coord, late, (b) => b.state !== 'pending' && nodeOf(b, 'lint').state === 'running');
    // Its other node is not held back by the group (only the grouped one waits).
    expect(['ready', 'cancelled']).toContain(nodeOf(g2, 'train').state);
    const pools = await run('pools');
    expect(pools.code, pools.stderr).toBe(0);
    expect(pools.stdout).toMatch(/^CONCURRENCY-GROUP\s+LIMIT\s+RUNNING\s+WAITING$/m);
    expect(pools.stdout).toMatch(/^gpu-heavy\s+1\s+1\s+/m);
    const view = await c.coord.api<{ items: unknown[]; concurrency_groups: Array<{ name: string; limit: number; running: number }> }>(apiPath.pools());
    expect(view.body.concurrency_groups.find((g) => g.name === 'gpu-heavy')).toMatchObject({ limit: 1, running: 1 });

    // The deadline: the running node is cancelled on the agent, the waiting one at once.
    const done = await waitForBuild(c.coord, late);
    expect(done.state).toBe('cancelled');
    const reason = "the build's deadline passed (5.0s after submit)";
    for (const n of done.nodes) expect(n.state).toBe('cancelled');
    const st = await run('status', late);
    expect(st.code).toBe(3);
    expect(st.stdout).toContain(`(g2): cancelled`);
    expect(st.stdout).toContain(`: ${reason}\n`);
    expect(st.stdout).toMatch(/ {2}budget: deadline \S+ \(passed\)\n/);
    const json = JSON.parse((await run('status', late, '--json')).stdout) as { reason: string; budget: { deadline_exceeded: boolean; deadline_ms: number } };
    expect(json).toMatchObject({ reason, budget: { deadline_exceeded: true, deadline_ms: 5000 } });
    // The agent really stopped the running node (its run ended cancelled, not after 10 minutes).
    const runs = await waitFor('the agent to record the cancelled run', async () => {
      const lines = (await readFile(record(), 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { build_id: string; node: string; status: string });
      const mine = lines.filter((l) => l.build_id === late);
      return mine.length > 0 ? mine : null;
    });
    expect(runs).toEqual([expect.objectContaining({ node: 'lint', status: 'cancelled' })]);
    // The group and the wide build are unaffected by g2's deadline.
    expect(nodeOf(await getBuild(c.coord, first), 'train').state).toBe('running');
    expect((await getBuild(c.coord, wide)).nodes.filter((n) => n.state === 'running')).toHaveLength(2);

    expect(nodeOf(await getBuild(c.coord, third), 'train').state).toBe('ready');
    // Cancelling g1 frees the group's slot: g3's node starts.
    expect((await c.coord.api(apiPath.buildCancel(first), { method: 'POST' })).status).toBe(202);
    await waitForBuild(c.coord, third, (b) => nodeOf(b, 'train').state === 'running');
    for (const id of [third, wide]) expect((await c.coord.api(apiPath.buildCancel(id), { method: 'POST' })).status).toBe(202);
    await waitForBuild(c.coord, wide);
  });

  it('refuses bad budgets with a 400 naming the field', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ concurrency: 0 }, 'concurrency'],
      [{ deadline: '31d' }, 'deadline'],
      [{ concurrency_group: 'nobody-has-this' }, 'concurrency_group'],
    ];
    for (const [extra, path] of cases) {
      const r = await c.coord.api<{ errors: Array<{ path: string; message: string }> }>(apiPath.builds(), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'bad', nodes: { n: node('bad') }, ...extra }),
      });
      expect(r.status).toBe(400);
      expect(r.body.errors.map((e) => e.path)).toContain(path);
    }
  });
});
