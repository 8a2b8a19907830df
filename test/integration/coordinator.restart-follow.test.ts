/**
 * A coordinator killed with SIGKILL in the middle of a build and restarted on the same
 * data dir: the agent reconnects and carries on (the attempt is adopted, not re-run),
 * a `kiln logs -f` follower started before the crash resumes and prints every line
 * exactly once, in order, and the result survives further restarts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inline, nodeLog, spawnKiln, startAgent, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';

describe('coordinator restart', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  const procs: Proc[] = [];

  beforeAll(async () => {
    dir = await tempDir('restart');
    coord = await startCoordinator({ dataDir: `${dir.path}/data` });
    procs.push(coord.proc, await startAgent({ coordinator: coord, name: 'steady', workDir: `${dir.path}/w` }));
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await dir.cleanup();
  });

  it('keeps builds and logs, adopts the running attempt, and the follower resumes without gaps or duplicates', async () => {
    const marker = `m${Date.now()}`;
    const lines = 40;
    const first = await submitSpec(coord, { nodes: { quick: inline('FROM kiln/busybox:1\nRUN echo quick', { no_cache: true }) } });
    expect((await waitForBuild(coord, first)).state).toBe('success');
    const id = await submitSpec(coord, {
      nodes: { talk: inline(`FROM kiln/busybox:1\nRUN for i in $(seq 1 ${lines}); do echo "line-$i-${marker}"; sleep 0.15; done`, { no_cache: true }) },
    });
    const follower = spawnKiln(['logs', '-f', id], coord.cliEnv);
    procs.push(follower);
    await waitFor('the follower to print some lines', () => follower.stdout.includes(`line-5-${marker}`));

    await coord.proc.kill9();
    await new Promise((r) => setTimeout(r, 500));
    const restarted = await startCoordinator({ dataDir: coord.dataDir, port: coord.port });
    procs.push(restarted.proc);
    coord = restarted;

    const b = await waitForBuild(coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes[0]!.attempts).toHaveLength(1); // adopted, not re-run
    expect(await follower.exited).toBe(0);

    const printed = follower.stdout
      .split('\n')
      .filter((l) => l.startsWith('talk | '))
      .map((l) => l.slice('talk | '.length))
      .filter((l) => l !== '=> success');
    const stored = (await nodeLog(coord, id, 'talk')).split('\n');
    if (stored[stored.length - 1] === '') stored.pop();
    expect(printed).toEqual(stored);
    const seen = printed.map((l) => /line-(\d+)-/.exec(l)?.[1]).filter((x): x is string => x !== undefined).map(Number);
    expect(seen).toEqual(Array.from({ length: lines }, (_, i) => i + 1));

    // a second restart (clean this time) keeps both builds and their logs
    await coord.proc.stop();
    const again = await startCoordinator({ dataDir: coord.dataDir, port: coord.port });
    procs.push(again.proc);
    expect((await again.api<{ state: string }>(`/api/v1/builds/${first}`)).body.state).toBe('success');
    expect((await again.api<{ state: string }>(`/api/v1/builds/${id}`)).body.state).toBe('success');
    expect(await nodeLog(again, id, 'talk')).toBe(stored.join('\n') + '\n');
  });
});
