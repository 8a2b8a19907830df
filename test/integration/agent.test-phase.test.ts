/**
 * A node's test phase, for real: a `kiln agent` process builds on the real dockerd, then
 * runs the node's test command in a container of the built image; its output lands in
 * the node's log and its exit code decides the node (exit 3 fails it with failed_step
 * `test`, outputs are exported only after a passing test). GPUs: there are none here, so
 * a fake `nvidia-smi` on PATH reports two, and the agent's engine is a proxy in front of
 * the real one that records each container-create body and strips its DeviceRequests
 * (the engine has no nvidia runtime); the test checks the device request for exactly the
 * GPU indexes the attempt was given. The coordinator is a protocol double
 * (fake-coordinator.ts) so the test decides what the assignments say.
 */
import { execFile } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCKER_HOST, type Proc, processesWith, REPO, spawnKiln, tempDir, waitFor } from '../helpers/cluster.js';
import { DockerProxy } from '../helpers/docker-proxy.js';
import { FakeCoordinator } from '../helpers/fake-coordinator.js';

const run = promisify(execFile);


describe('agent test phase', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let fake: FakeCoordinator;
  let proxy: DockerProxy;
  let agent: Proc;
  const uniq = `${process.pid}-${Date.now().toString(36)}`;

  beforeAll(async () => {
    dir = await tempDir('test-phase');
    fake = await new FakeCoordinator({ heartbeatIntervalMs: 200 }).start();
    proxy = new DockerProxy(join(dir.path, 'docker.sock'), DOCKER_HOST.replace('unix://', ''));
    await proxy.start();
    const bin = join(dir.path, 'bin');
    await mkdir(bin);
    await symlink(join(REPO, 'test', 'fixtures', 'fake-nvidia-smi'), join(bin, 'nvidia-smi'));
    await writeFile(join(dir.path, 'token'), 'fake-token\n');
    agent = spawnKiln(
      ['agent', '--coordinator', fake.url, '--token-file', join(dir.path, 'token'), '--name', 'tester', '--work-dir', join(dir.path, 'w'), '--docker-host', proxy.dockerHost, '--max-jobs', '2'],
      {
        PATH: `${bin}:${process.env.PATH}`,
        FAKE_GPUS: '0,NVIDIA A100-SXM4-40GB,40960,GPU-aaaa,1234,56;1,NVIDIA A100-SXM4-40GB,40960,GPU-bbbb,0,0',
        KILN_AGENT_MIN_FREE_DISK: '1MiB',
      },
    );
    await waitFor('the agent to say hello', () => {
      if (!agent.running) throw new Error(`agent exited ${agent.exitCode}: ${agent.stderr}`);
      return fake.hellos.length > 0;
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await proxy?.stop();
    await fake?.stop();
    expect(fake.errors).toEqual([]);
    await dir?.cleanup();
  });

  const testCreates = (attemptId: string) => proxy.creates.filter((c) => (c.body.Labels as Record<string, string> | undefined)?.['kiln.attempt'] === attemptId);

  it('advertises the fake GPUs and reports their use in heartbeats', async () => {
    expect(fake.hellos[0]!.gpus.map((g) => g.index)).toEqual([0, 1]);
    expect(fake.hellos[0]!.health).toEqual({ accepting: true, problem: null });
    const hb = await fake.waitFrame('heartbeat', undefined, (h) => (h.gpus ?? []).length === 2);
    expect(hb.gpus).toEqual([
      { index: 0, memory_used_mib: 1234, utilization_pct: 56 },
      { index: 1, memory_used_mib: 0, utilization_pct: 0 },
    ]);
    expect(hb.load?.cpus).toBeGreaterThan(0);
    expect(hb.load?.mem_total_mib).toBeGreaterThan(0);
    expect(hb.load?.disk_free_mib).toBeGreaterThan(0);
  });

  it('a passing test: its output is in the log, the node succeeds with test_exit_code 0, outputs are exported', async () => {
    const id = `a-pass-${uniq}`;
    fake.assign({
      attempt_id: id,
      // The ENTRYPOINT must not wrap the test command.
      dockerfile_inline: `FROM kiln/busybox:1\nENTRYPOINT ["/bin/false"]\nRUN echo built-${uniq} > /built\n`,
      outputs: [{ name: 'built', path: '/built' }],
      test: { command: ['/bin/sh', '-c', 'cat /built; echo "GREETING=$GREETING"; echo to-stderr >&2'], timeout_ms: 60_000, env: { GREETING: 'hello there' } },
    });
    const fin = await fake.waitFrame('finished', id);
    const log = fake.logOf(id);
    expect(fin.status, log).toBe('success');
    expect(fin.test_exit_code).toBe(0);
    expect(fin.outputs.map((o) => o.name)).toEqual(['built']);
    expect(fake.uploads).toContain(fin.outputs[0]!.digest);
    expect(log).toContain(`[kiln] test: /bin/sh -c 'cat /built; echo "GREETING=$GREETING"; echo to-stderr >&2'\n`);
    // stdout lines in order; stderr is a separate stream and may land between them
    const out = log.split('\n').filter((l) => l !== 'to-stderr');
    expect(out.join('\n')).toContain(`built-${uniq}\nGREETING=hello there\n`);
    expect(log).toContain('to-stderr\n');
    expect(log).toContain('[kiln] test exited with code 0\n');
    const [create] = testCreates(id);
    expect(create?.body).toMatchObject({ Cmd: ['/bin/sh', '-c', 'cat /built; echo "GREETING=$GREETING"; echo to-stderr >&2'], Env: ['GREETING=hello there'], HostConfig: { NetworkMode: 'none', AutoRemove: false } });
    expect((create!.body.HostConfig as Record<string, unknown>).DeviceRequests).toBeUndefined();
    const left = await run('docker', ['-H', DOCKER_HOST, 'ps', '-aq', '--filter', `label=kiln.attempt=${id}`]);
    expect(left.stdout.trim()).toBe('');
  });

  it('a test that exits 3 fails the node: failed_step test, not infra, its output in the log, no outputs uploaded', async () => {
    const id = `a-fail-${uniq}`;
    const uploadsBefore = fake.uploads.length;
    fake.assign({
      attempt_id: id,
      dockerfile_inline: `FROM kiln/busybox:1\nRUN echo fail-${uniq} > /built\n`,
      outputs: [{ name: 'built', path: '/built' }],
      test: { command: ['/bin/sh', '-c', 'echo "the test says: $(cat /built)"; exit 3'], timeout_ms: 60_000, env: {} },
    });
    const fin = await fake.waitFrame('finished', id);
    const log = fake.logOf(id);
    expect(fin).toMatchObject({ status: 'failed', exit_code: 3, test_exit_code: 3, failed_step: 'test', infra: false, outputs: [] });
    expect(fin.error).toBe('test failed with exit code 3');
    expect(fin.image_id).toMatch(/^sha256:/);
    expect(log).toContain(`the test says: fail-${uniq}\n`);
    expect(log).toContain('[kiln] test exited with code 3\n');
    expect(fake.uploads.length).toBe(uploadsBefore);
  });

  it('attaches exactly the assigned GPUs through a device request', async () => {
    const id = `a-gpu-${uniq}`;
    fake.assign({ attempt_id: id, dockerfile_inline: 'FROM kiln/busybox:1\n', gpus: [1], test: { command: ['echo', 'gpu test ran'], timeout_ms: 60_000, env: {} } });
    const fin = await fake.waitFrame('finished', id);
    expect(fin.status, fake.logOf(id)).toBe('success');
    expect(fake.logOf(id)).toContain("[kiln] test: echo 'gpu test ran' (GPUs 1)\n");
    expect(fake.logOf(id)).toContain('gpu test ran\n');
    const creates = testCreates(id);
    expect(creates).toHaveLength(1);
    expect((creates[0]!.body.HostConfig as Record<string, unknown>).DeviceRequests).toEqual([{ Driver: 'nvidia', DeviceIDs: ['1'], Capabilities: [['gpu']] }]);
  });

  it('an engine that cannot attach the GPUs (a 500 from the daemon) is an infrastructure failure', async () => {
    const id = `a-nodriver-${uniq}`;
    proxy.stripDeviceRequests = false;
    try {
      fake.assign({ attempt_id: id, dockerfile_inline: 'FROM kiln/busybox:1\n', gpus: [0], test: { command: ['true'], timeout_ms: 60_000, env: {} } });
      const fin = await fake.waitFrame('finished', id);
      expect(fin).toMatchObject({ status: 'failed', infra: true, failed_step: 'test' });
      expect(fin.error).toMatch(/^running the test failed: .*could not select device driver "nvidia"/);
    } finally {
      proxy.stripDeviceRequests = true;
    }
    const left = await run('docker', ['-H', DOCKER_HOST, 'ps', '-aq', '--filter', `label=kiln.attempt=${id}`]);
    expect(left.stdout.trim()).toBe('');
  });

  it('rejects an assignment naming a GPU it does not have', async () => {
    const id = `a-nogpu-${uniq}`;
    fake.assign({ attempt_id: id, gpus: [1, 7], test: { command: ['true'], timeout_ms: 60_000, env: {} } });
    const r = await fake.waitFrame('reject', id);
    expect(r.reason).toBe('GPU 7 is not on this agent (it has GPU 0, 1)');
    expect(fake.of('accept', id)).toEqual([]);
  });

  it('rejects a GPU another running attempt holds', async () => {
    const holder = `a-holder-${uniq}`;
    // resolve: true keeps the holder waiting for a proceed that never comes: it runs until cancelled.
    fake.assign({ attempt_id: holder, gpus: [0], resolve: true, test: { command: ['true'], timeout_ms: 60_000, env: {} } });
    await fake.waitFrame('resolved', holder);
    const id = `a-taken-${uniq}`;
    fake.assign({ attempt_id: id, gpus: [1, 0], test: { command: ['true'], timeout_ms: 60_000, env: {} } });
    expect((await fake.waitFrame('reject', id)).reason).toBe(`GPU 0 is in use by attempt ${holder}`);
    fake.send('cancel', { attempt_id: holder, reason: 'test over' });
    expect((await fake.waitFrame('finished', holder)).status).toBe('cancelled');
  });

  it('kills a test that runs past its time limit and fails the node', async () => {
    const id = `a-slow-${uniq}`;
    const marker = `${31_000_000 + (process.pid % 1_000_000)}`;
    fake.assign({ attempt_id: id, dockerfile_inline: 'FROM kiln/busybox:1\n', test: { command: ['sleep', marker], timeout_ms: 1500, env: {} } });
    const fin = await fake.waitFrame('finished', id);
    expect(fin).toMatchObject({ status: 'failed', failed_step: 'test', infra: false, test_exit_code: null, error: 'test timed out after 1.5s' });
    expect(fake.logOf(id)).toContain('[kiln] test timed out after 1.5s; killed\n');
    await waitFor('the test container to be gone', async () => (await processesWith(`sleep\0${marker}`)) === 0);
    const left = await run('docker', ['-H', DOCKER_HOST, 'ps', '-aq', '--filter', `label=kiln.attempt=${id}`]);
    expect(left.stdout.trim()).toBe('');
  });

  it('a test command that cannot start fails the node, not the agent', async () => {
    const id = `a-nocmd-${uniq}`;
    fake.assign({ attempt_id: id, dockerfile_inline: 'FROM kiln/busybox:1\n', test: { command: ['/no/such/test-binary'], timeout_ms: 60_000, env: {} } });
    const fin = await fake.waitFrame('finished', id);
    expect(fin).toMatchObject({ status: 'failed', failed_step: 'test', infra: false, test_exit_code: null });
    expect(fin.error).toMatch(/^the test command could not start: .*no such file or directory/);
  });
});
