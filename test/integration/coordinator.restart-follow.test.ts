/**
 * A coordinator killed with SIGKILL in the middle of a build and restarted on the same
 * data dir: the agent reconnects and carries on (the attempt is adopted, not re-run),
 * a `kiln logs -f` follower started before the crash resumes and prints every line
 * exactly once, in order, and the result survives further restarts.
 */
import { describe, expect, it } from 'vitest';
import { inline, nodeLog, spawnKiln, startCoordinator, submitSpec, useCluster, waitFor, waitForBuild } from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

describe('coordinator restart', () => {
  const c = useCluster('restart', { agents: [{ name: 'steady' }] });

  it('keeps builds and logs, adopts the running attempt, and the follower resumes without gaps or duplicates', async () => {
    const marker = `m${Date.now()}`;
    const lines = 40;
    const first = await submitSpec(c.coord, { nodes: { quick: inline('FROM kiln/busybox:1\nRUN echo quick', { no_cache: true }) } });
    expect((await waitForBuild(c.coord, first)).state).toBe('success');
    const id = await submitSpec(c.coord, {
      nodes: { talk: inline(`FROM kiln/busybox:1\nRUN for i in $(seq 1 ${lines}); do echo "line-$i-${marker}"; sleep 0.15; done`, { no_cache: true }) },
    });
    const follower = spawnKiln(['logs', '-f', id], c.coord.cliEnv);
    c.track(follower);
    await waitFor('the follower to print some lines', () => follower.stdout.includes(`line-5-${marker}`));

    await c.coord.proc.kill9();
    await new Promise((r) => setTimeout(r, 500));
    const restarted = await startCoordinator({ dataDir: c.coord.dataDir, port: c.coord.port });
    c.track(restarted.proc);
    c.coord = restarted;

    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes[0]!.attempts).toHaveLength(1); // adopted, not re-run
    expect(await follower.exited).toBe(0);

    const printed = follower.stdout
      .split('\n')
      .filter((l) => l.startsWith('talk | '))
      .map((l) => l.slice('talk | '.length))
      .filter((l) => l !== '=> success');
    const stored = (await nodeLog(c.coord, id, 'talk')).split('\n');
    if (stored[stored.length - 1] === '') stored.pop();
    expect(printed).toEqual(stored);
    const seen = printed.map((l) => /line-(\d+)-/.exec(l)?.[1]).filter((x): x is string => x !== undefined).map(Number);
    expect(seen).toEqual(Array.from({ length: lines }, (_, i) => i + 1));

    // a second restart (clean this time) keeps both builds and their logs
    await c.coord.proc.stop();
    const again = await startCoordinator({ dataDir: c.coord.dataDir, port: c.coord.port });
    c.track(again.proc);
    expect((await again.api<{ state: string }>(apiPath.build(first))).body.state).toBe('success');
    expect((await again.api<{ state: string }>(apiPath.build(id))).body.state).toBe('success');
    expect(await nodeLog(again, id, 'talk')).toBe(stored.join('\n') + '\n');
  });
});
