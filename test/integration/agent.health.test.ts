/**
 * The agent's health against real trouble, with a real `kiln agent` process and the real
 * dockerd:
 *
 * - The Docker Engine dies mid-build (a proxy in front of the real socket cuts every
 *   connection and disappears): the attempt fails as an infrastructure failure with the
 *   engine's error, BuildKit's build stops, the agent stays up, says at once that it is
 *   not accepting (and why), rejects work, and takes work again once the engine answers.
 * - The disk fills (the work dir is a small tmpfs): fetching an input that does not fit
 *   fails the attempt as an infrastructure failure, leaves nothing partial in the CAS
 *   cache, and the agent takes no work until there is room again; then the same node
 *   builds.
 *
 * The coordinator is a protocol double (fake-coordinator.ts) that records every frame.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from '../../shared/index.js';
import { DOCKER_HOST, type Proc, processesWith, spawnKiln, tempDir, waitFor } from '../helpers/cluster.js';
import { DockerProxy } from '../helpers/docker-proxy.js';
import { FakeCoordinator } from '../helpers/fake-coordinator.js';

const run = promisify(execFile);
const MIB = 1024 * 1024;

/** An artifact: a tar holding one file. */
async function tarOf(name: string, data: Buffer): Promise<Buffer> {
  const p = pack();
  p.entry({ name, mode: 0o644, mtime: new Date(0) }, data);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}


describe('agent health', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  const procs: Proc[] = [];
  const fakes: FakeCoordinator[] = [];
  const uniq = `${process.pid}-${Date.now().toString(36)}`;

  beforeAll(async () => {
    dir = await tempDir('health');
    await writeFile(join(dir.path, 'token'), 'fake-token\n');
  });
  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    for (const f of fakes) await f.stop();
    for (const f of fakes) expect(f.errors).toEqual([]);
    await dir.cleanup();
  });

  async function agentAgainst(name: string, dockerHost: string, workDir: string, env: Record<string, string> = {}): Promise<{ fake: FakeCoordinator; proc: Proc }> {
    const fake = await new FakeCoordinator({ heartbeatIntervalMs: 300 }).start();
    fakes.push(fake);
    const proc = spawnKiln(['agent', '--coordinator', fake.url, '--token-file', join(dir.path, 'token'), '--name', name, '--work-dir', workDir, '--docker-host', dockerHost], env);
    procs.push(proc);
    await waitFor(`agent ${name} to say hello`, () => {
      if (!proc.running) throw new Error(`agent exited ${proc.exitCode}: ${proc.stderr}`);
      return fake.hellos.length > 0;
    });
    return { fake, proc };
  }

  it('the engine dying mid-build: infra failure with the engine error, not accepting, back once the engine answers', async () => {
    const proxy = new DockerProxy(join(dir.path, 'docker.sock'), DOCKER_HOST.replace('unix://', ''));
    await proxy.start();
    try {
      const { fake, proc } = await agentAgainst('engine-box', proxy.dockerHost, join(dir.path, 'engine-work'), { KILN_AGENT_MIN_FREE_DISK: '1MiB' });
      const marker = `${41_000_000 + (process.pid % 1_000_000)}`;
      const id = `a-engine-${uniq}`;
      fake.assign({ attempt_id: id, dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${uniq} && sleep ${marker}\n` });
      await fake.waitFrame('started', id);
      await waitFor('the build step to run', async () => (await processesWith(marker)) > 0);

      await proxy.stop(); // dockerd "dies": every connection cut, the socket gone
      const fin = await fake.waitFrame('finished', id);
      expect(fin).toMatchObject({ status: 'failed', infra: true, exit_code: null });
      expect(fin.error).toMatch(/^the build stream from the Docker Engine broke: /);
      const down = await fake.waitFrame('heartbeat', undefined, (h) => h.health?.accepting === false);
      expect(down.health!.problem).toMatch(/^Docker Engine unreachable: .*ENOENT/);
      // dockerd saw its client go and stopped the build
      await waitFor('BuildKit to stop the build step', async () => (await processesWith(marker)) === 0);

      const id2 = `a-engine-rejected-${uniq}`;
      fake.assign({ attempt_id: id2 });
      const r = await fake.waitFrame('reject', id2);
      expect(r.reason).toMatch(/^the agent is not taking work: Docker Engine unreachable: /);
      expect(proc.running).toBe(true);

      const downAt = fake.frames.length;
      await proxy.start();
      await waitFor('a heartbeat saying the agent accepts work again', () => fake.frames.slice(downAt).some((f) => f.type === 'heartbeat' && (f.payload as { health?: { accepting: boolean } }).health?.accepting === true));
      const id3 = `a-engine-back-${uniq}`;
      fake.assign({ attempt_id: id3, dockerfile_inline: `FROM kiln/busybox:1\nRUN echo back-${uniq}\n` });
      const fin3 = await fake.waitFrame('finished', id3);
      expect(fin3.status, fake.logOf(id3)).toBe('success');
      expect(proc.stderr).toContain('Docker Engine reachable again');
    } finally {
      await proxy.stop();
    }
  });

  it('a full disk: infra failure, nothing partial in the cache, no work until there is room, then the node builds', async () => {
    const work = join(dir.path, 'tmpfs-work');
    await mkdir(work);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', work]);
    try {
      // 5 MiB of the 8 taken: a 4 MiB input cannot fit, 1 MiB (min_free_disk) is still free.
      const filler = join(work, 'filler');
      await writeFile(filler, Buffer.alloc(5 * MIB, 1));
      const { fake } = await agentAgainst('disk-box', DOCKER_HOST, work, { KILN_AGENT_MIN_FREE_DISK: '1MiB' });
      expect(fake.hellos[0]!.health).toEqual({ accepting: true, problem: null });
      const big = await tarOf('big.bin', randomBytes(4 * MIB));
      const digest = sha256(big);
      fake.blobs.set(digest, big);
      const assign = {
        dockerfile_inline: 'FROM kiln/busybox:1\nRUN --mount=type=bind,from=big,target=/big ls -l /big\n',
        inputs: [{ name: 'big', digest, mount: null, env: {} }],
      };
      const id = `a-disk-${uniq}`;
      fake.assign({ attempt_id: id, ...assign });
      const fin = await fake.waitFrame('finished', id);
      expect(fin).toMatchObject({ status: 'failed', infra: true });
      expect(fin.error).toMatch(/no space left on device/);
      expect(await readdir(join(work, 'cas', 'sha256'))).toEqual([]);

      const full = await fake.waitFrame('heartbeat', undefined, (h) => h.health?.accepting === false && /waiting for/.test(h.health.problem ?? ''));
      expect(full.health!.problem).toMatch(/^disk full: fetching sha256:[0-9a-f]{64} \(\d+ bytes\) into \/.* failed: no space left on device; nothing was kept \(waiting for 5 MiB free in /);
      expect(fake.hellos).toHaveLength(1); // the agent stayed up and connected
      const id2 = `a-disk-rejected-${uniq}`;
      fake.assign({ attempt_id: id2, ...assign });
      expect((await fake.waitFrame('reject', id2)).reason).toMatch(/^the agent is not taking work: disk full: /);

      const fullAt = fake.frames.length;
      await rm(filler);
      await waitFor('a heartbeat saying the agent accepts work again', () => fake.frames.slice(fullAt).some((f) => f.type === 'heartbeat' && (f.payload as { health?: { accepting: boolean } }).health?.accepting === true));
      const id3 = `a-disk-again-${uniq}`;
      fake.assign({ attempt_id: id3, ...assign });
      const fin3 = await fake.waitFrame('finished', id3);
      expect(fin3.status, fake.logOf(id3)).toBe('success');
      expect(await readdir(join(work, 'cas', 'sha256'))).toEqual([digest.slice(7)]);
    } finally {
      for (const p of procs.splice(0)) await p.stop();
      await run('umount', [work]);
    }
  });
});
