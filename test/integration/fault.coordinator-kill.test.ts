/**
 * C1 and the reconnect grace: a coordinator killed with SIGKILL mid-build and restarted on
 * the same data dir and port.
 * - The agent reconnects and reports its running attempt, which is adopted: one attempt,
 *   success, the log intact (every line once, in order); a build submitted and
 *   acknowledged just before the kill is still there and runs.
 * - An agent that does not come back within reconnect_grace (killed too) loses its
 *   attempt, which is re-queued on an agent that did reconnect.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  DOCKER_HOST_SECOND,
  agentInfo,
  buildProcesses,
  inline,
  nodeLog,
  nodeOf,
  numberedLines,
  restartCoordinator,
  sleepNeedle,
  startAgent,
  startCoordinator,
  submitSpec,
  tempDir,
  waitFor,
  waitForAgent,
  waitForBuild,
  type CoordinatorHandle,
  type Proc,
} from '../helpers/cluster.js';

const FAST = ['--heartbeat-interval', '300ms', '--lost-after', '2s'];

describe('coordinator killed mid-build (C1)', () => {
  const procs: Proc[] = [];
  const dirs: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const p of procs.splice(0).reverse()) await p.stop();
  });
  afterAll(async () => {
    for (const d of dirs) await d();
  });
  const coordinator = async (prefix: string, config?: Record<string, unknown>): Promise<CoordinatorHandle> => {
    const d = await tempDir(prefix);
    dirs.push(d.cleanup);
    const c = await startCoordinator({ dataDir: `${d.path}/data`, args: FAST, ...(config ? { config } : {}) });
    procs.push(c.proc);
    return c;
  };

  it('adopts the running attempt after a restart, keeps its log whole, and loses no acknowledged build', async () => {
    let c = await coordinator('f-ckill');
    procs.push(await startAgent({ coordinator: c, name: 'steady', workDir: `${c.dataDir}/../steady`, maxJobs: 1 }));
    const marker = `c${Date.now()}`;
    const lines = 30;
    const id = await submitSpec(c, {
      nodes: { talk: inline(`FROM kiln/busybox:1\nRUN for i in $(seq 1 ${lines}); do echo "line $i ${marker}"; sleep 0.2; done`, { no_cache: true }) },
    });
    await waitFor('some lines to reach the coordinator', async () => numberedLines(await nodeLog(c, id, 'talk'), 'line ', ` ${marker}`).includes(5));
    // Acknowledged (201) right before the crash; it waits for steady's only slot.
    const queued = await submitSpec(c, { nodes: { later: inline(`FROM kiln/busybox:1\nRUN echo "later $((40+2)) ${marker}"`, { no_cache: true }) } });

    c = await restartCoordinator(c, { kill9: true });
    procs.push(c.proc);

    const b = await waitForBuild(c, id);
    expect(b.state).toBe('success');
    expect(nodeOf(b, 'talk').attempts.map((a) => [a.number, a.agent, a.state])).toEqual([[1, 'steady', 'success']]);
    const log = await nodeLog(c, id, 'talk');
    expect(numberedLines(log, 'line ', ` ${marker}`)).toEqual(Array.from({ length: lines }, (_, i) => i + 1));

    const q = await waitForBuild(c, queued);
    expect(q.state).toBe('success');
    expect(nodeOf(q, 'later').attempts.map((a) => [a.agent, a.state])).toEqual([['steady', 'success']]);
    expect(await nodeLog(c, queued, 'later')).toContain(`later 42 ${marker}`);
  });

  it('re-queues the attempt of an agent that stays away past reconnect_grace on one that came back', async () => {
    let c = await coordinator('f-cgrace', { reconnect_grace: '3s' });
    const gone = await startAgent({ coordinator: c, name: 'gone', workDir: `${c.dataDir}/../gone`, dockerHost: DOCKER_HOST, maxJobs: 1 });
    procs.push(gone);
    const marker = `g${Date.now()}`;
    const needle = sleepNeedle(3);
    const id = await submitSpec(c, {
      nodes: { work: inline(`FROM kiln/busybox:1\nRUN ${needle} && echo "done $((40+2)) ${marker}"`, { no_cache: true }) },
    });
    await waitFor('the RUN step to run for gone', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);
    const back = await startAgent({ coordinator: c, name: 'back', workDir: `${c.dataDir}/../back`, dockerHost: DOCKER_HOST_SECOND ?? DOCKER_HOST, maxJobs: 1 });
    procs.push(back);

    await c.proc.kill9();
    await gone.kill9(); // gone for good: it never reclaims its attempt
    c = await restartCoordinator(c, { kill9: true });
    procs.push(c.proc);
    await waitForAgent(c, 'back', 'connected', back);
    const b = await waitForBuild(c, id);
    expect(b.state).toBe('success');
    const work = nodeOf(b, 'work');
    expect(work.attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'gone', 'lost'],
      [2, 'back', 'success'],
    ]);
    expect(work.attempts[0]!.reason).toMatch(/gone/);
    expect((await agentInfo(c, 'gone'))?.state).toBe('lost');
    const log = await nodeLog(c, id, 'work');
    expect(log).toContain('[kiln] attempt 2 on agent back (attempt 1 on gone: lost');
    expect(log.split(`done 42 ${marker}`).length - 1).toBe(1);
  });
});
