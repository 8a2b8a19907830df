/**
 * Artifacts end to end on real parts: the compiled coordinator and an agent process on a
 * real dockerd (offering linux/s390x under qemu), the `kiln` CLI, real files.
 *
 * A node exports a directory and a file from its image; the CLI downloads and verifies
 * them byte-exact; downstream nodes get the directory bind-mounted (native and s390x),
 * with env; provenance names every digest; an unchanged resubmission is reused, a changed
 * context rebuilds exactly what depends on it, `--no-reuse` rebuilds; two identical
 * builds at once share one execution; a corrupt or truncated blob on the coordinator is
 * detected by the agent and never used.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ArtifactViewT as Artifact, BuildViewT as Build, NodeViewT as NodeBody } from '../../shared/index.js';
import { apiPath, sha256 as sha } from '../../shared/index.js';
import { kiln, submitSpec, useCluster, waitForBuild, type CoordinatorHandle } from '../helpers/cluster.js';



async function build(c: CoordinatorHandle, id: string): Promise<Build & { byName: Record<string, NodeBody> }> {
  const b = (await waitForBuild(c, id)) as unknown as Build;
  const full = (await c.api<Build>(apiPath.build(id))).body;
  return { ...full, state: b.state, byName: Object.fromEntries(full.nodes.map((n) => [n.name, n])) };
}

async function submitFile(c: CoordinatorHandle, spec: string, extra: string[] = []): Promise<string> {
  const r = await kiln(['submit', spec, '--json', ...extra], c.cliEnv);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { id: string }).id;
}

describe('artifacts: outputs, inputs, provenance, reuse', () => {
  const c = useCluster('artifacts', { agents: [{ name: 'art-agent', platforms: ['linux/s390x'], maxJobs: 3 }] });
  const blob = randomBytes(300_000);
  let first: Build & { byName: Record<string, NodeBody> };
  let specPath = '';

  const spec = (marker: string) => `
name: artifacts
nodes:
  produce:
    context: ./ctx
    dockerfile_inline: |
      FROM kiln/busybox:1
      COPY data /out/data
      COPY bin /out/bin
    outputs:
      tree: /out
      note: /out/data/sub/note.txt
  consume:
    inputs:
      tree:
        from: produce.tree
        mount: /opt/tree
        env: { TOOL_HOME: /opt/tree, PATH: "/opt/tree/bin:$PATH" }
    dockerfile_inline: |
      FROM kiln/busybox:1
      RUN mkdir /res && tool > /res/out.txt && echo "home=$TOOL_HOME ${marker}" >> /res/out.txt && sha256sum /opt/tree/data/blob.bin | cut -d' ' -f1 >> /res/out.txt
      RUN test -e /opt/tree/bin/tool && echo "mounted in every RUN"
    outputs:
      result: /res
  mainframe:
    platform: linux/s390x
    allow_emulation: true
    inputs:
      tree: { from: produce.tree }
    dockerfile_inline: |
      FROM kiln/busybox:1-s390x
      RUN --mount=type=bind,from=tree,target=/opt/tree mkdir /res && uname -m > /res/arch && /opt/tree/bin/tool >> /res/arch
    outputs:
      result: /res
`;

  it('exports outputs, mounts them downstream (native and s390x), and downloads them verified', async () => {
    const ctx = join(c.dir, 'proj', 'ctx');
    await mkdir(join(ctx, 'data', 'sub'), { recursive: true });
    await mkdir(join(ctx, 'bin'), { recursive: true });
    await writeFile(join(ctx, 'data', 'blob.bin'), blob);
    await writeFile(join(ctx, 'data', 'sub', 'note.txt'), 'note v1\n');
    await writeFile(join(ctx, 'bin', 'tool'), '#!/bin/sh\necho "tool ran on $(uname -m)"\n', { mode: 0o755 });
    specPath = join(c.dir, 'proj', 'kiln.yaml');
    await writeFile(specPath, spec(`m${Date.now()}`));

    const id = await submitFile(c.coord, specPath);
    first = await build(c.coord, id);
    expect(first.state, JSON.stringify(first.nodes.map((n) => [n.name, n.state, n.error]))).toBe('success');

    // the directory output, byte-exact, modes kept
    const dl = join(c.dir, 'dl');
    const got = await kiln(['artifacts', 'get', id, 'produce', 'tree', '-o', join(dl, 'tree')], c.coord.cliEnv);
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout).toMatch(/produce\.tree sha256:[0-9a-f]{64}: 3 files/);
    expect((await readFile(join(dl, 'tree', 'data', 'blob.bin'))).equals(blob)).toBe(true);
    expect(await readFile(join(dl, 'tree', 'data', 'sub', 'note.txt'), 'utf8')).toBe('note v1\n');
    expect((await stat(join(dl, 'tree', 'bin', 'tool'))).mode & 0o777).toBe(0o755);
    // the file output holds that one file
    expect((await kiln(['artifacts', 'get', id, 'produce', 'note', '-o', join(dl, 'note')], c.coord.cliEnv)).code).toBe(0);
    expect(await readdir(join(dl, 'note'))).toEqual(['note.txt']);

    // downstream: mounted with env (native), mounted explicitly under emulation (s390x)
    await kiln(['artifacts', 'get', id, 'consume', 'result', '-o', join(dl, 'consume')], c.coord.cliEnv);
    const out = (await readFile(join(dl, 'consume', 'out.txt'), 'utf8')).split('\n');
    expect(out[0]).toBe('tool ran on x86_64');
    expect(out[1]).toMatch(/^home=\/opt\/tree m\d+$/);
    expect(`sha256:${out[2]}`).toBe(sha(blob));
    await kiln(['artifacts', 'get', id, 'mainframe', 'result', '-o', join(dl, 'mainframe')], c.coord.cliEnv);
    expect(await readFile(join(dl, 'mainframe', 'arch'), 'utf8')).toBe('s390x\ntool ran on s390x\n');
    const consumeLog = (await c.coord.api<string>(apiPath.nodeLogs(id, 'consume'))).body;
    expect(consumeLog).toContain('mounted in every RUN');
    expect(consumeLog).toMatch(/\[kiln\] input tree: sha256:[0-9a-f]{64} mounted at \/opt\/tree/);

    // the artifact list and the provenance tie it together
    const tree = first.byName.produce!.outputs.find((o) => o.name === 'tree')!;
    expect(first.byName.consume!.inputs).toEqual([{ name: 'tree', from: 'produce.tree', digest: tree.digest, mount: '/opt/tree' }]);
    const arts = (await c.coord.api<{ items: Artifact[] }>(apiPath.buildArtifacts(id))).body.items;
    expect(arts.map((a) => `${a.node}.${a.name}`).sort()).toEqual(['consume.result', 'mainframe.result', 'produce.note', 'produce.tree']);
    for (const a of arts) {
      expect(a.url).toBe(`${c.coord.url}${apiPath.casBlob(a.digest)}`);
      expect(Date.parse(a.expires_at!)).toBeGreaterThan(Date.now() + 29 * 86_400_000);
      expect(a.reused).toBe(false);
    }
    const prov = await kiln(['provenance', id, 'consume'], c.coord.cliEnv);
    expect(prov.code, prov.stderr).toBe(0);
    const p = JSON.parse(prov.stdout) as Record<string, unknown> & { base_images: Array<{ ref: string; digest: string }> };
    expect(p).toMatchObject({
      node: 'consume',
      platform: 'linux/amd64',
      emulated: false,
      inputs: [{ name: 'tree', digest: tree.digest, from: 'produce.tree' }],
      outputs: [{ name: 'result', digest: first.byName.consume!.outputs[0]!.digest }],
      agent: { name: 'art-agent' },
      attempt: { status: 'success' },
    });
    expect(p.base_images).toEqual([{ ref: 'kiln/busybox:1', digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) }]);
    expect((JSON.parse((await kiln(['provenance', id, 'mainframe'], c.coord.cliEnv)).stdout) as { emulated: boolean }).emulated).toBe(true);
  });

  it('reuses an unchanged resubmission, rebuilds what a changed context reaches, and rebuilds all with --no-reuse', async () => {
    const again = await build(c.coord, await submitFile(c.coord, specPath));
    expect(again.state).toBe('success');
    for (const n of ['produce', 'consume', 'mainframe']) {
      expect(again.byName[n]!.reused_from, n).toMatchObject({ build_id: first.id, node: n });
      expect(again.byName[n]!.attempts.at(-1)!.state).toBe('reused');
      expect(again.byName[n]!.outputs).toEqual(first.byName[n]!.outputs);
    }
    const log = (await c.coord.api<string>(apiPath.nodeLogs(again.id, 'consume'))).body;
    expect(log).toContain(`[kiln] reused: node 'consume' of build ${first.id}`);
    const arts = (await c.coord.api<{ items: Artifact[] }>(apiPath.buildArtifacts(again.id))).body.items;
    expect(arts.every((a) => a.reused)).toBe(true);

    // A changed file in produce's context: produce gets a new output, so both consumers rebuild.
    await writeFile(join(c.dir, 'proj', 'ctx', 'data', 'sub', 'note.txt'), 'note v2\n');
    const changed = await build(c.coord, await submitFile(c.coord, specPath));
    expect(changed.state).toBe('success');
    for (const n of ['produce', 'consume', 'mainframe']) {
      expect(changed.byName[n]!.reused_from, n).toBeNull();
      expect(changed.byName[n]!.attempts.at(-1)!.state).toBe('success');
    }
    expect(changed.byName.produce!.outputs[0]!.digest).not.toBe(first.byName.produce!.outputs[0]!.digest);
    expect(changed.byName.consume!.inputs[0]!.digest).toBe(changed.byName.produce!.outputs.find((o) => o.name === 'tree')!.digest);

    const forced = await build(c.coord, await submitFile(c.coord, specPath, ['--no-reuse']));
    expect(forced.state).toBe('success');
    for (const n of ['produce', 'consume', 'mainframe']) expect(forced.byName[n]!.reused_from, n).toBeNull();
    // Rebuilt from BuildKit's cache, the outputs are the same bytes: exports are deterministic.
    for (const n of ['produce', 'consume', 'mainframe']) expect(forced.byName[n]!.outputs).toEqual(changed.byName[n]!.outputs);
  });

  it('runs two identical nodes submitted at once only once', async () => {
    const marker = `share-${Date.now()}`;
    const slow = { nodes: { slow: { dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${marker} && sleep 2 && mkdir /o && echo ${marker} > /o/m`, outputs: { m: '/o' } } } };
    const [a, b] = await Promise.all([submitSpec(c.coord, slow), submitSpec(c.coord, slow)]);
    const [ba, bb] = [await build(c.coord, a), await build(c.coord, b)];
    expect([ba.state, bb.state]).toEqual(['success', 'success']);
    const nodes = [ba.byName.slow!, bb.byName.slow!];
    const built = nodes.filter((n) => n.reused_from === null);
    const follower = nodes.find((n) => n.reused_from !== null)!;
    expect(built).toHaveLength(1);
    expect(follower.attempts.at(-1)!.state).toBe('reused');
    expect(follower.attempts.at(-1)!.reason).toMatch(/shares the execution of|reused the result of/);
    expect(follower.reused_from!.attempt_id).toBe(built[0]!.attempts.at(-1)!.id);
    expect(follower.outputs).toEqual(built[0]!.outputs);
  });

  it('detects a corrupt or truncated blob on the coordinator and never uses it', async () => {
    for (const damage of ['corrupt', 'truncate'] as const) {
      const data = randomBytes(200_000);
      // an input artifact: a tar with one file, uploaded by digest
      const tarDir = join(c.dir, `input-${damage}`);
      await mkdir(tarDir, { recursive: true });
      await writeFile(join(tarDir, 'payload.bin'), data);
      const { packDir } = await import('../../shared/index.js');
      const packed = await packDir(tarDir);
      const bytes = await readFile(packed.path);
      await packed.cleanup();
      const put = await c.coord.api(apiPath.casBlob(packed.digest), { method: 'PUT', body: bytes });
      expect(put.status).toBe(201);
      const onDisk = join(c.coord.dataDir, 'cas', 'sha256', packed.digest.slice(7, 9), packed.digest.slice(7));
      if (damage === 'corrupt') {
        const bad = Buffer.from(bytes);
        bad[1000] = bad[1000]! ^ 0xff;
        await writeFile(onDisk, bad);
      } else {
        await truncate(onDisk, bytes.length - 10_000);
      }
      const id = await submitSpec(c.coord, {
        nodes: { use: { inputs: { payload: { digest: packed.digest, mount: '/p' } }, dockerfile_inline: 'FROM kiln/busybox:1\nRUN cat /p/payload.bin > /dev/null && echo used-it' } },
      });
      const b = await build(c.coord, id);
      expect(b.state).toBe('failed');
      const use = b.byName.use!;
      // The coordinator sends what its store holds; the agent's digest check refuses it.
      expect(use.attempts.at(-1)!.error, damage).toMatch(new RegExp(`hash to sha256:[0-9a-f]{64}, not ${packed.digest}`));
      const log = (await c.coord.api<string>(apiPath.nodeLogs(id, 'use'))).body;
      expect(log).not.toContain('used-it');
      const cached = await readdir(join(c.dir, 'agent-art-agent', 'cas', 'sha256'));
      expect(cached).not.toContain(packed.digest.slice(7));
      expect(cached.filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    }
  });
});
