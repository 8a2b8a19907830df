/**
 * An agent killed with SIGKILL in the middle of a build: after the lost timeout (3
 * heartbeat intervals, shortened here) the coordinator re-queues the node once, as a new
 * attempt, on another agent, and the node's log says so. No node stays `running`.
 */
import { describe, expect, it } from 'vitest';
import { inline, nodeLog, startAgent, submitSpec, useCluster, waitForBuild } from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

describe('lost agent', () => {
  const c = useCluster('lost', { coordinatorArgs: ['--heartbeat-interval', '300ms'] });

  it('re-queues the running node on another agent once the first is lost', async () => {
    const doomed = await startAgent({ coordinator: c.coord, name: 'doomed', workDir: `${c.dir}/d` });
    c.track(doomed);
    const marker = `survivor-${Date.now()}`;
    const id = await submitSpec(c.coord, { nodes: { work: inline(`FROM kiln/busybox:1\nRUN sleep 2 && echo ${marker}`, { no_cache: true }) } });
    await waitForBuild(c.coord, id, (b) => b.nodes[0]!.state === 'running' && b.nodes[0]!.agent === 'doomed');
    const rescuer = await startAgent({ coordinator: c.coord, name: 'rescuer', workDir: `${c.dir}/r` });
    c.track(rescuer);
    await doomed.kill9();

    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    const attempts = b.nodes[0]!.attempts;
    expect(attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'doomed', 'lost'],
      [2, 'rescuer', 'success'],
    ]);
    expect(attempts[0]!.reason).toMatch(/doomed/);
    const log = await nodeLog(c.coord, id, 'work');
    expect(log).toContain('[kiln] attempt 2 on agent rescuer (attempt 1 on doomed: lost');
    expect(log).toContain(marker);
    const agents = await c.coord.api<{ items: Array<{ name: string; state: string }> }>(apiPath.agents());
    expect(agents.body.items.find((a) => a.name === 'doomed')?.state).toBe('lost');
  });
});
