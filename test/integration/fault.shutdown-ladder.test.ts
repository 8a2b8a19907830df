/**
 * F3, the agent's signal ladder, and cancelling from the CLI, on real builds:
 * - first SIGTERM mid-build: the agent takes no new work, finishes the running build
 *   (success), keeps heartbeating (never `lost` meanwhile, though lost_after is much
 *   shorter than the build) and exits 0; the coordinator logs that it left (shut down),
 *   not that it disconnected and did not come back;
 * - second SIGTERM: the running build is aborted in the engine and reported by the agent
 *   (not `lost`) as cancelled because the agent is shutting down, the agent exits 0, and
 *   the node is re-queued (an agent going away is no fault of the node's);
 * - `kiln cancel BUILD`: the running attempt ends `cancelled` and its RUN step is gone
 *   from the engine.
 */
import { describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  agentInfo,
  buildProcesses,
  getBuild,
  inline,
  jsonLogLines,
  kiln,
  nodeOf,
  sleepNeedle,
  submitSpec,
  useCluster,
  waitFor,
  waitForBuild,
  type Proc,
} from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

describe('agent shutdown ladder and cancel (F3)', () => {
  const c = useCluster('f-ladder', { coordinatorArgs: ['--heartbeat-interval', '300ms', '--lost-after', '1500ms'] });

  const logged = (p: Proc, re: RegExp) => jsonLogLines(p.stderr).some((l) => re.test(l.msg ?? ''));

  it('first SIGTERM drains: no new work, the running build succeeds, heartbeats go on, exit 0', async () => {
    const drainer = await c.agent({ name: 'drainer', dockerHost: DOCKER_HOST, maxJobs: 2 });
    const needle = sleepNeedle(4);
    const id = await submitSpec(c.coord, { nodes: { work: inline(`FROM kiln/busybox:1\nRUN echo start && ${needle} && echo finish`, { no_cache: true }) } });
    await waitFor('the RUN step to run', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);

    drainer.kill('SIGTERM');
    await waitFor('the agent to start draining', () => logged(drainer, /^draining/));
    const later = await submitSpec(c.coord, { nodes: { next: inline('FROM kiln/busybox:1\nRUN echo next', { no_cache: true }) } });

    // Sample the coordinator's view of the agent for as long as the build runs.
    const states: string[] = [];
    let done = false;
    const sampler = (async () => {
      while (!done) {
        states.push((await agentInfo(c.coord, 'drainer'))?.state ?? 'unknown');
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const b = await waitForBuild(c.coord, id).finally(() => (done = true));
    await sampler;
    expect(b.state).toBe('success');
    expect(nodeOf(b, 'work').attempts.map((a) => [a.agent, a.state])).toEqual([['drainer', 'success']]);
    expect(states).not.toContain('lost');
    expect(states.length).toBeGreaterThan(0);
    expect(await drainer.exited).toBe(0);
    // The coordinator logs a clean departure, not a drop (and, lost_after later, a loss).
    await waitFor('the coordinator to log the departure', () => logged(c.coord.proc, /^agent drainer left \(shut down\)$/));

    // The build submitted during the drain never ran there; a fresh agent runs it.
    expect(nodeOf(await getBuild(c.coord, later), 'next').attempts.filter((a) => a.state !== 'rejected')).toEqual([]);
    const fresh = await c.agent({ name: 'fresh', maxJobs: 1 });
    const l = await waitForBuild(c.coord, later);
    expect(l.state).toBe('success');
    expect(nodeOf(l, 'next').attempts.filter((a) => a.state !== 'rejected').map((a) => [a.agent, a.state])).toEqual([['fresh', 'success']]);
    await fresh.stop();
    const drainerLines = jsonLogLines(c.coord.proc.stderr).filter((l) => l.agent === 'drainer');
    expect(drainerLines.filter((l) => /disconnected|did not come back/.test(l.msg ?? ''))).toEqual([]);
  });

  it('second SIGTERM cancels the running build in the engine, reports it, exits, and the node is re-queued', async () => {
    const quitter = await c.agent({ name: 'quitter', dockerHost: DOCKER_HOST, maxJobs: 1 });
    const needle = sleepNeedle(60);
    const id = await submitSpec(c.coord, { nodes: { long: inline(`FROM kiln/busybox:1\nRUN echo start && ${needle}`, { no_cache: true }) } });
    await waitFor('the RUN step to run', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);

    quitter.kill('SIGTERM');
    await waitFor('the agent to start draining', () => logged(quitter, /^draining/));
    quitter.kill('SIGTERM');
    expect(await quitter.exited).toBe(0);
    await waitFor('the RUN step to be gone from the engine', async () => (await buildProcesses(needle, DOCKER_HOST)).length === 0, 30_000);

    // The agent's own report ended the attempt (not a loss the coordinator detected later):
    // cancelled because the agent shut down, which is no fault of the node's.
    const ended = await waitForBuild(c.coord, id, (x) => {
      const a = nodeOf(x, 'long').attempts[0];
      return a !== undefined && !['assigned', 'running', 'cancelling'].includes(a.state);
    });
    const [attempt] = nodeOf(ended, 'long').attempts;
    expect(attempt!.state).toBe('cancelled');
    expect(attempt!.error).toContain('the agent is shutting down');
    expect(attempt!.reason).toContain('quitter');
    // Re-queued for another agent (none is connected now); cancel it so it holds nothing.
    expect(nodeOf(ended, 'long').state).toBe('ready');
    expect((await c.coord.api(apiPath.buildCancel(id), { method: 'POST' })).status).toBe(202);
  });

  it('kiln cancel reaches the running build: the attempt ends cancelled and the RUN step is gone', async () => {
    const worker = await c.agent({ name: 'worker', dockerHost: DOCKER_HOST, maxJobs: 1 });
    const needle = sleepNeedle(60);
    const id = await submitSpec(c.coord, { nodes: { long: inline(`FROM kiln/busybox:1\nRUN echo start && ${needle}`, { no_cache: true }) } });
    await waitFor('the RUN step to run', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);

    const r = await kiln(['cancel', id], c.coord.cliEnv);
    expect(r.code, r.stderr).toBe(0);
    const b = await waitForBuild(c.coord, id, (x) => x.state === 'cancelled' && nodeOf(x, 'long').attempts[0]?.state === 'cancelled');
    expect(nodeOf(b, 'long').state).toBe('cancelled');
    await waitFor('the RUN step to be gone from the engine', async () => (await buildProcesses(needle, DOCKER_HOST)).length === 0, 30_000);
    expect(worker.running).toBe(true);
    expect((await agentInfo(c.coord, 'worker'))?.running).toEqual([]);
    await worker.stop();
  });
});
