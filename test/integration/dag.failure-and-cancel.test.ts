/**
 * Failure and cancellation on real builds: a failing RUN fails its node with the step and
 * exit code, skips everything downstream (and only that), and makes the build `partial`
 * when another leaf succeeded; cancelling a running build aborts the BuildKit build in the
 * engine (the RUN process disappears) and the agent confirms.
 */
import { readdir, readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { inline, nodeLog, submitSpec, useCluster, waitFor, waitForBuild } from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

/** Pids whose command line contains `needle` (the RUN processes BuildKit starts). */
async function processesWith(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.replace(/\0/g, ' ').includes(needle)) out.push(Number(name));
  }
  return out;
}

describe('failing and cancelled builds', () => {
  const c = useCluster('fail', { agents: [{ name: 'worker', maxJobs: 2 }] });

  it('fails the node with its step and exit code, skips its dependents only, and ends partial', async () => {
    const id = await submitSpec(c.coord, {
      nodes: {
        broken: inline('FROM kiln/busybox:1\nRUN echo "about to fail"; exit 3', { no_cache: true }),
        after: inline('FROM kiln/busybox:1\nRUN echo never', { needs: ['broken'] }),
        'after-after': inline('FROM kiln/busybox:1\nRUN echo never', { needs: ['after'] }),
        independent: inline('FROM kiln/busybox:1\nRUN echo fine', { no_cache: true }),
      },
    });
    const b = await waitForBuild(c.coord, id);
    const n = Object.fromEntries(b.nodes.map((x) => [x.name, x]));
    expect(n.broken!.state).toBe('failed');
    expect(n.broken!.exit_code).toBe(3);
    expect(n.broken!.failed_step).toContain('exit 3');
    expect(n.after!.state).toBe('skipped');
    expect(n['after-after']!.state).toBe('skipped');
    expect(n.after!.attempts).toHaveLength(0);
    expect(n.independent!.state).toBe('success');
    expect(b.state).toBe('partial');
    expect(await nodeLog(c.coord, id, 'broken')).toContain('about to fail');
  });

  it('a build whose only leaf fails is failed, not partial', async () => {
    const id = await submitSpec(c.coord, { nodes: { only: inline('FROM kiln/busybox:1\nRUN exit 1', { no_cache: true }) } });
    expect((await waitForBuild(c.coord, id)).state).toBe('failed');
  });

  it('cancel aborts the running BuildKit build and the agent confirms', async () => {
    const needle = `sleep 97.${Date.now() % 1000}`;
    const id = await submitSpec(c.coord, {
      nodes: {
        slow: inline(`FROM kiln/busybox:1\nRUN echo started && ${needle}`, { no_cache: true }),
        later: inline('FROM kiln/busybox:1\nRUN echo never', { needs: ['slow'] }),
      },
    });
    await waitFor('the RUN process to start', async () => (await processesWith(needle)).length > 0, 60_000);
    const res = await c.coord.api<{ state: string; cancel_requested: boolean }>(apiPath.buildCancel(id), { method: 'POST' });
    expect(res.status).toBe(202);
    expect(res.body.cancel_requested).toBe(true);
    const b = await waitForBuild(c.coord, id, (x) => x.state === 'cancelled' && x.nodes[0]!.attempts[0]!.state === 'cancelled');
    expect(b.nodes.map((x) => x.state)).toEqual(['cancelled', 'cancelled']);
    await waitFor('the RUN process to be gone', async () => (await processesWith(needle)).length === 0, 30_000);
    // cancelling again is a conflict
    const again = await c.coord.api<{ code: string }>(apiPath.buildCancel(id), { method: 'POST' });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('E_CONFLICT');
  });
});
