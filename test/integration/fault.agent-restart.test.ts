/**
 * F2: an agent killed with SIGKILL mid-build and started again under the same name (what
 * systemd's Restart= does). The new process is a new session and reports no running
 * attempts, so the coordinator releases the old attempt at once: `lost` because the agent
 * restarted, not because lost_after passed (set to a minute here, far beyond this test),
 * and the node runs again as attempt 2, here on the restarted agent.
 */
import { describe, expect, it } from 'vitest';
import { DOCKER_HOST, buildProcesses, inline, nodeLog, nodeOf, sleepNeedle, submitSpec, useCluster, waitFor, waitForBuild } from '../helpers/cluster.js';

describe('agent restarted under the same name (F2)', () => {
  const c = useCluster('f-restart', { coordinatorArgs: ['--heartbeat-interval', '500ms', '--lost-after', '60s'] });

  it('releases the attempt on the new hello and runs the node again', async () => {
    const first = await c.agent({ name: 'phoenix', dockerHost: DOCKER_HOST, maxJobs: 1 });
    const marker = `r${Date.now()}`;
    const needle = sleepNeedle(2);
    const id = await submitSpec(c.coord, {
      nodes: { work: inline(`FROM kiln/busybox:1\nRUN ${needle} && echo "done $((40+2)) ${marker}"`, { no_cache: true }) },
    });
    await waitFor('the RUN step to run', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);
    await first.kill9();

    // Same name, same work dir, new process.
    await c.agent({ name: 'phoenix', dockerHost: DOCKER_HOST, maxJobs: 1, workDir: `${c.dir}/agent-phoenix` });
    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    const work = nodeOf(b, 'work');
    expect(work.attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'phoenix', 'lost'],
      [2, 'phoenix', 'success'],
    ]);
    expect(work.attempts[0]!.reason).toContain('the agent restarted');
    const log = await nodeLog(c.coord, id, 'work');
    expect(log).toContain('[kiln] attempt 2 on agent phoenix (attempt 1 on phoenix: lost, the agent restarted');
    expect(log.split(`done 42 ${marker}`).length - 1).toBe(1);
  });
});
