/**
 * Builds an agent stops on its own, with a real `kiln agent` process building on the real
 * dockerd (a BuildKit RUN step is a host process, so the test can see it stop):
 *
 * - Cut off: a coordinator that welcomes with `cutoff_cancel_ms` 1500 and then goes
 *   silent; after S the agent cancels the running build and forgets it, so when the link
 *   comes back its hello no longer lists the attempt and no `finished` is ever sent.
 * - The signal ladder: the first SIGTERM drains (heartbeats go on and say the agent is
 *   not accepting; new assignments are rejected; a running build finishes and is
 *   reported, then the agent exits 0), the second cancels the running build and reports
 *   it `cancelled` before exiting.
 *
 * The coordinator is a protocol double (fake-coordinator.ts).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCKER_HOST, type Proc, processesWith, spawnKiln, tempDir, waitFor } from '../helpers/cluster.js';
import { FakeCoordinator, type FakeCoordinatorOptions } from '../helpers/fake-coordinator.js';


describe('agent self-fencing and shutdown', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  const procs: Proc[] = [];
  const fakes: FakeCoordinator[] = [];
  const uniq = `${process.pid}-${Date.now().toString(36)}`;
  let markers = 0;
  /** A sleep duration no other process on the host uses, to find the build step in /proc. */
  const marker = () => `${51_000_000 + (process.pid % 100_000) * 10 + markers++}`;

  beforeAll(async () => {
    dir = await tempDir('self-fence');
    await writeFile(join(dir.path, 'token'), 'fake-token\n');
  });
  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    for (const f of fakes) await f.stop();
    for (const f of fakes) expect(f.errors).toEqual([]);
    await dir.cleanup();
  });

  async function agentAgainst(name: string, o: FakeCoordinatorOptions): Promise<{ fake: FakeCoordinator; proc: Proc }> {
    const fake = await new FakeCoordinator(o).start();
    fakes.push(fake);
    const proc = spawnKiln(['agent', '--coordinator', fake.url, '--token-file', join(dir.path, 'token'), '--name', name, '--work-dir', join(dir.path, name), '--docker-host', DOCKER_HOST], {
      KILN_AGENT_MIN_FREE_DISK: '1MiB',
    });
    procs.push(proc);
    await waitFor(`agent ${name} to say hello`, () => {
      if (!proc.running) throw new Error(`agent exited ${proc.exitCode}: ${proc.stderr}`);
      return fake.hellos.length > 0;
    });
    return { fake, proc };
  }

  async function startSleeper(fake: FakeCoordinator, id: string, seconds: string): Promise<void> {
    fake.assign({ attempt_id: id, dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${id} && sleep ${seconds}\n` });
    await fake.waitFrame('started', id);
    await waitFor(`the build step of ${id} to run`, async () => (await processesWith(seconds)) > 0);
  }

  it('cut off longer than S: cancels the running build on its own and never reports it', async () => {
    const { fake, proc } = await agentAgainst('fenced', { heartbeatIntervalMs: 200, lostAfterMs: 60_000, cutoffCancelMs: 1500 });
    const id = `a-cut-${uniq}`;
    const m = marker();
    await startSleeper(fake, id, m);

    fake.blackhole = true; // the link stays open, but nothing gets through either way
    await waitFor('the agent to cancel the build', async () => (await processesWith(m)) === 0);
    expect(proc.stderr).toContain('cut off from the coordinator for 1.5s: cancelling running builds');
    expect(proc.running).toBe(true);

    fake.blackhole = false;
    fake.dropConnection();
    await waitFor('the agent to reconnect', () => fake.hellos.length === 2);
    expect(fake.hellos[1]!.running).toEqual([]);
    const heartbeat = await waitFor('a heartbeat on the new connection', () => fake.frames.find((f) => f.conn > 0 && f.type === 'heartbeat'));
    expect((heartbeat.payload as { running: string[] }).running).toEqual([]);
    expect(fake.of('finished', id)).toEqual([]);
  });

  it('first SIGTERM drains: heartbeats go on, new work is rejected, the running build finishes and is reported, then exit 0', async () => {
    const { fake, proc } = await agentAgainst('drainer', { heartbeatIntervalMs: 200 });
    const id = `a-drain-${uniq}`;
    fake.assign({ attempt_id: id, dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${id} && sleep 2\n` });
    await fake.waitFrame('started', id);
    const at = fake.frames.length;
    proc.child.kill('SIGTERM');
    const hb = await fake.waitFrame('heartbeat', undefined, (h) => h.health?.accepting === false);
    expect(hb).toMatchObject({ running: [id], health: { accepting: false, problem: 'the agent is draining (shutting down)' } });
    const id2 = `a-drain-rejected-${uniq}`;
    fake.assign({ attempt_id: id2 });
    expect((await fake.waitFrame('reject', id2)).reason).toBe('the agent is draining');
    const fin = await fake.waitFrame('finished', id);
    expect(fin.status, fake.logOf(id)).toBe('success');
    expect(await proc.exited).toBe(0);
    // it kept heartbeating while the build ran
    expect(fake.frames.slice(at).filter((f) => f.type === 'heartbeat').length).toBeGreaterThanOrEqual(2);
  });

  it('second SIGTERM cancels the running build and reports it cancelled', async () => {
    const { fake, proc } = await agentAgainst('canceller', { heartbeatIntervalMs: 200 });
    const id = `a-cancel-${uniq}`;
    const m = marker();
    await startSleeper(fake, id, m);
    proc.child.kill('SIGTERM');
    await fake.waitFrame('heartbeat', undefined, (h) => h.health?.accepting === false && h.running.includes(id));
    const hbs = () => fake.of('heartbeat').filter((h) => h.health?.accepting === false).length;
    const before = hbs();
    await waitFor('heartbeats to go on while draining', () => hbs() >= before + 2);
    expect(await processesWith(m)).toBeGreaterThan(0); // draining does not stop it
    proc.child.kill('SIGTERM');
    const fin = await fake.waitFrame('finished', id);
    expect(fin).toMatchObject({ status: 'cancelled', infra: false, error: 'the agent is shutting down' });
    expect(await proc.exited).toBe(0);
    await waitFor('the build step to stop', async () => (await processesWith(m)) === 0);
  });
});
