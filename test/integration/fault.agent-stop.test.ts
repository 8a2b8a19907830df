/**
 * An agent frozen with SIGSTOP mid-build for longer than lost_after: the coordinator marks
 * its attempt `lost` and re-queues the node on another agent. After SIGCONT the stale
 * agent's build (which dockerd kept running) reports into a fenced attempt: the coordinator
 * tells the agent to cancel it (on its reconnect), nothing it reports changes the node, attempt 1 stays `lost`,
 * and the node's result is attempt 2's, the only `success`.
 */
import { describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  DOCKER_HOST_SECOND,
  agentInfo,
  buildProcesses,
  getBuild,
  inline,
  jsonLogLines,
  nodeLog,
  nodeOf,
  sleepNeedle,
  submitSpec,
  useCluster,
  waitFor,
  waitForAgent,
  waitForBuild,
  useImageCleanup,
} from '../helpers/cluster.js';

describe('agent frozen past lost_after (SIGSTOP / SIGCONT)', () => {
  const c = useCluster('f-stop', { coordinatorArgs: ['--heartbeat-interval', '300ms', '--lost-after', '2s'] });
  const images = useImageCleanup();

  it('re-queues elsewhere, then fences the stale agent: told to cancel, its frames change nothing', async () => {
    const stale = await c.agent({ name: 'stale', dockerHost: DOCKER_HOST, maxJobs: 1 });
    const marker = `s${Date.now()}`;
    const needle = sleepNeedle(5);
    const id = await submitSpec(c.coord, {
      nodes: { work: inline(`FROM kiln/busybox:1\nRUN echo "begin-$((40+2))-${marker}" && ${needle} && echo "end-$((40+2))-${marker}"`, { no_cache: true }) },
    });
    images.push([DOCKER_HOST, `kiln-build/${id}:work`], [DOCKER_HOST_SECOND ?? DOCKER_HOST, `kiln-build/${id}:work`]);
    await waitFor('the RUN step to run in stale\'s engine', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);
    const spare = await c.agent({ name: 'spare', dockerHost: DOCKER_HOST_SECOND ?? DOCKER_HOST, maxJobs: 1 });
    expect(spare.running).toBe(true);

    stale.pause();
    const requeued = await waitForBuild(c.coord, id, (b) => {
      const a = nodeOf(b, 'work').attempts;
      return a.length === 2 && a[1]!.agent === 'spare' && a[1]!.state === 'running';
    });
    const [first] = nodeOf(requeued, 'work').attempts;
    expect([first!.agent, first!.state]).toEqual(['stale', 'lost']);
    expect(first!.reason).toMatch(/stale/);
    expect((await agentInfo(c.coord, 'stale'))?.state).toBe('lost');

    const twoEngines = DOCKER_HOST_SECOND !== undefined && DOCKER_HOST_SECOND !== DOCKER_HOST;
    if (twoEngines) {
      // dockerd keeps building for the frozen agent: let that build end, so the stale agent
      // wakes up holding a finished result (and its last log lines) for attempt 1.
      await waitFor('the stale build\'s RUN step to end', async () => (await buildProcesses(needle, DOCKER_HOST)).length === 0, 30_000);
    }
    stale.resume();
    // The stale agent comes back; the coordinator tells it its attempt is no longer wanted.
    await waitFor('the stale agent to be told to cancel attempt 1', () =>
      jsonLogLines(stale.stderr).some((l) => l.attempt === first!.id && /no longer wants this attempt|does not take the result of this finished attempt|cancelling build/.test(l.msg ?? '')),
    );
    await waitForAgent(c.coord, 'stale', 'connected', stale);

    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    const work = nodeOf(b, 'work');
    expect(work.attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'stale', 'lost'],
      [2, 'spare', 'success'],
    ]);
    expect(work.attempts.filter((a) => a.state === 'success')).toHaveLength(1);
    expect(work.agent).toBe('spare');
    expect(work.image_id).toBe(work.attempts[1]!.image_id);

    // Whatever the stale build printed after the loss was refused: the end line appears
    // once, in attempt 2's part of the log.
    const log = await nodeLog(c.coord, id, 'work');
    const header = log.indexOf('[kiln] attempt 2 on agent spare (attempt 1 on stale: lost');
    expect(header).toBeGreaterThan(0);
    expect(log.split(`end-42-${marker}`).length - 1).toBe(1);
    expect(log.indexOf(`end-42-${marker}`)).toBeGreaterThan(header);

    // The stale agent holds nothing and the fenced attempt stays lost.
    await waitFor('the stale agent to run nothing', async () => (await agentInfo(c.coord, 'stale'))?.running.length === 0);
    expect(nodeOf(await getBuild(c.coord, id), 'work').attempts[0]!.state).toBe('lost');
  });
});
