/**
 * F11: a node whose agent keeps dying while it runs it (killed with SIGKILL and restarted
 * under the same name, three times). After the attempt budget of 3 lost attempts the node
 * is `failed` with a reason starting `attempts exhausted`, its dependent is `skipped`, and
 * it is listed by GET /api/v1/dead-letter. POST /api/v1/builds/{id}/nodes/{node}/retry
 * runs it again, to success on a healthy agent, and its dependent after it.
 */
import { describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  DOCKER_HOST_SECOND,
  StopWaiting,
  buildProcesses,
  getBuild,
  inline,
  nodeOf,
  sleepNeedle,
  submitSpec,
  useCluster,
  waitFor,
  waitForBuild,
  type Proc,
  useImageCleanup,
} from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

interface DeadLetterItem {
  build_id: string;
  node: string;
  reason: string;
  attempts: Array<{ number: number; agent: string; state: string }>;
  retry_url: string;
}

describe('dead letter after the attempt budget (F11)', () => {
  const c = useCluster('f-dlq', { coordinatorArgs: ['--heartbeat-interval', '300ms', '--lost-after', '2s'] });
  const images = useImageCleanup();

  it('fails the node after 3 lost attempts, lists it, and a retry runs it to success', async () => {
    const needle = sleepNeedle(3);
    let crashy: Proc = await c.agent({ name: 'crashy', dockerHost: DOCKER_HOST, maxJobs: 1 });
    const id = await submitSpec(c.coord, {
      name: 'dlq',
      nodes: {
        flaky: inline(`FROM kiln/busybox:1\nRUN echo start && ${needle} && echo finish`, { no_cache: true }),
        after: inline('FROM kiln/busybox:1\nRUN echo after', { needs: ['flaky'], no_cache: true }),
      },
    });
    const healthyHost = DOCKER_HOST_SECOND ?? DOCKER_HOST;
    images.push([DOCKER_HOST, `kiln-build/${id}:flaky`], [healthyHost, `kiln-build/${id}:flaky`], [healthyHost, `kiln-build/${id}:after`]);

    for (let n = 1; n <= 3; n++) {
      await waitFor(`attempt ${n} to run on crashy`, async () => {
        const node = nodeOf(await getBuild(c.coord, id), 'flaky');
        if (node.state === 'failed') throw new StopWaiting(`node failed after ${node.attempts.length} attempts: ${node.error}`);
        const a = node.attempts[n - 1];
        return a?.agent === 'crashy' && a.state === 'running';
      });
      await waitFor('its RUN step to run', async () => (await buildProcesses(needle, DOCKER_HOST)).length > 0);
      await crashy.kill9();
      crashy = await c.agent({ name: 'crashy', dockerHost: DOCKER_HOST, maxJobs: 1, workDir: `${c.dir}/agent-crashy` });
    }

    const failed = await waitForBuild(c.coord, id);
    expect(failed.state).toBe('failed');
    const flaky = nodeOf(failed, 'flaky');
    expect(flaky.state).toBe('failed');
    expect(flaky.attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'crashy', 'lost'],
      [2, 'crashy', 'lost'],
      [3, 'crashy', 'lost'],
    ]);
    expect(flaky.error).toMatch(/^attempts exhausted/);
    expect(nodeOf(failed, 'after').state).toBe('skipped');

    const dlq = await c.coord.api<{ items: DeadLetterItem[] }>(apiPath.deadLetter());
    expect(dlq.status).toBe(200);
    const entry = dlq.body.items.find((d) => d.build_id === id && d.node === 'flaky');
    expect(entry, JSON.stringify(dlq.body)).toBeDefined();
    expect(entry!.reason).toMatch(/^attempts exhausted/);
    expect(entry!.attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'crashy', 'lost'],
      [2, 'crashy', 'lost'],
      [3, 'crashy', 'lost'],
    ]);
    expect(entry!.retry_url).toContain(apiPath.nodeRetry(id, 'flaky'));

    // The crashing agent goes away; a healthy one takes the retry.
    await crashy.stop();
    await c.agent({ name: 'healthy', dockerHost: healthyHost, maxJobs: 1 });
    const retry = await c.coord.api(apiPath.nodeRetry(id, 'flaky'), { method: 'POST' });
    expect(retry.status, JSON.stringify(retry.body)).toBe(202);

    const b = await waitForBuild(c.coord, id, (x) => ['success', 'failed', 'partial', 'cancelled'].includes(x.state) && nodeOf(x, 'flaky').attempts.length > 3);
    expect(b.state).toBe('success');
    expect(nodeOf(b, 'flaky').attempts.map((a) => [a.number, a.agent, a.state])).toEqual([
      [1, 'crashy', 'lost'],
      [2, 'crashy', 'lost'],
      [3, 'crashy', 'lost'],
      [4, 'healthy', 'success'],
    ]);
    expect(nodeOf(b, 'after').attempts.map((a) => [a.agent, a.state])).toEqual([['healthy', 'success']]);
  });
});
