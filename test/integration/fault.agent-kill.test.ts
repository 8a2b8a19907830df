/**
 * F1: an agent process killed with SIGKILL in the middle of a real build. Its Docker Engine
 * cancels the orphaned BuildKit build (the RUN step disappears and the image is never
 * tagged there); after lost_after the coordinator marks attempt 1 `lost` and re-queues the
 * node as attempt 2 on another agent (on the second dockerd when there is one), which
 * finishes it and the node after it. The node's log keeps what attempt 1 wrote, then says
 * why attempt 2 exists, and the build's last line appears once.
 */
import { describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  DOCKER_HOST_SECOND,
  agentInfo,
  buildProcesses,
  engineHasImage,
  inline,
  nodeLog,
  nodeOf,
  sleepNeedle,
  submitSpec,
  useCluster,
  waitFor,
  waitForBuild,
  useImageCleanup,
} from '../helpers/cluster.js';

describe('agent killed mid-build (F1)', () => {
  const c = useCluster('f-kill', { coordinatorArgs: ['--heartbeat-interval', '300ms', '--lost-after', '2s'] });
  const images = useImageCleanup();

  it('marks attempt 1 lost, the engine drops the orphaned build, and attempt 2 finishes on the other agent', async () => {
    const doomed = await c.agent({ name: 'doomed', dockerHost: DOCKER_HOST, maxJobs: 1 });
    const marker = `k${Date.now()}`;
    // $((40+2)): the step header echoes the command; only the output has `-42-`.
    const needle = sleepNeedle(3);
    const id = await submitSpec(c.coord, {
      name: 'f1',
      nodes: {
        work: inline(`FROM kiln/busybox:1\nRUN echo "begin-$((40+2))-${marker}" && ${needle} && echo "end-$((40+2))-${marker}"`, { no_cache: true }),
        after: inline(`FROM kiln/busybox:1\nRUN echo "after-${marker}"`, { needs: ['work'], no_cache: true }),
      },
    });
    const tag = `kiln-build/${id}:work`;
    images.push([DOCKER_HOST, tag], [DOCKER_HOST_SECOND ?? DOCKER_HOST, tag], [DOCKER_HOST_SECOND ?? DOCKER_HOST, `kiln-build/${id}:after`]);
    await waitFor('the RUN step to run in doomed\'s engine', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);
    await waitFor('the begin line to reach the coordinator', async () => (await nodeLog(c.coord, id, 'work')).includes(`begin-42-${marker}`));

    await doomed.kill9();
    // Nothing else runs this step yet: whatever runs it now is the orphan of the dead agent.
    await waitFor('the orphaned RUN step to be gone', async () => (await buildProcesses(needle)).length === 0, 30_000);
    await waitFor('doomed to be lost', async () => (await agentInfo(c.coord, 'doomed'))?.state === 'lost', 30_000);

    const rescuerHost = DOCKER_HOST_SECOND ?? DOCKER_HOST;
    await c.agent({ name: 'rescuer', dockerHost: rescuerHost, maxJobs: 1 });
    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    const work = nodeOf(b, 'work');
    expect(work.attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'doomed', 'lost'],
      [2, 'rescuer', 'success'],
    ]);
    expect(work.attempts[0]!.reason).toMatch(/doomed/);
    expect(work.agent).toBe('rescuer');
    expect(nodeOf(b, 'after').attempts.map((a) => [a.agent, a.state])).toEqual([['rescuer', 'success']]);

    const log = await nodeLog(c.coord, id, 'work');
    const header = log.indexOf('[kiln] attempt 2 on agent rescuer (attempt 1 on doomed: lost');
    expect(header).toBeGreaterThan(log.indexOf(`begin-42-${marker}`));
    expect(log.split(`end-42-${marker}`).length - 1).toBe(1);
    expect(log.indexOf(`end-42-${marker}`)).toBeGreaterThan(header);

    if (DOCKER_HOST_SECOND && DOCKER_HOST_SECOND !== DOCKER_HOST) {
      // The orphaned build never completed in doomed's engine; the rescuer's did in its own.
      expect(await engineHasImage(DOCKER_HOST, tag)).toBe(false);
      expect(await engineHasImage(DOCKER_HOST_SECOND, tag)).toBe(true);
    }
  });
});
