/**
 * A multi-platform image, for real: one node with `platforms: [linux/amd64, linux/arm64,
 * linux/s390x]` (amd64 native, arm64 and s390x under qemu on the same agent) and `image:`
 * fans out into three platform nodes, each pushing its image under a per-platform tag,
 * and an index node named like the node that puts one Docker manifest list at the ref.
 *
 * Checked: the list in the registry names exactly three platforms whose digests are the
 * platform nodes' results; the second dockerd (which never built any of it) pulls each
 * platform from the one ref and `uname -m` in it says x86_64 / aarch64 / s390x; a node
 * fanned over the same platforms takes the same platform's output (`from: app.out`); a
 * node with `needs: [app]` starts only after the index was pushed.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { apiPath, type ImageViewT, type NodeViewT } from '../../shared/index.js';
import { DOCKER_HOST_SECOND, submitSpec, useCluster, waitForBuild } from '../helpers/cluster.js';

const run = promisify(execFile);
const REGISTRY = process.env.KILN_REGISTRY;
const LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const DOCKER = '/usr/bin/docker';


describe.skipIf(!REGISTRY || !DOCKER_HOST_SECOND)('a multi-platform image index from per-platform nodes (needs KILN_REGISTRY and KILN_DOCKER_HOST_SECOND)', () => {
  const c = useCluster('images-multi', { agents: [{ name: 'multi', platforms: ['linux/arm64', 'linux/s390x'], maxJobs: 3 }] });
  const uniq = `${process.pid}-${Date.now().toString(36)}`;
  const repo = `kiln-test/multi-${uniq}`;
  const ref = `${REGISTRY}/${repo}:1`;
  const platforms = ['linux/amd64', 'linux/arm64', 'linux/s390x'];

  it('pushes one index of three platforms that another engine pulls per platform', async () => {
    const id = await submitSpec(c.coord, {
      name: 'multi',
      nodes: {
        app: {
          platforms,
          allow_emulation: true,
          image: ref,
          outputs: { out: '/out' },
          dockerfile_inline: `ARG TARGETARCH\nFROM kiln/busybox:1-\${TARGETARCH}\nRUN mkdir /out && uname -m > /out/arch && echo ${uniq} > /stamp\n`,
        },
        check: {
          platforms: ['linux/arm64', 'linux/s390x'],
          allow_emulation: true,
          inputs: { app: { from: 'app.out', mount: '/opt/app' } },
          dockerfile_inline: 'ARG TARGETARCH\nFROM kiln/busybox:1-${TARGETARCH}\nRUN test "$(cat /opt/app/arch)" = "$(uname -m)" && echo "same platform: $(uname -m)"\n',
        },
        after: { needs: ['app'], dockerfile_inline: `FROM kiln/busybox:1\nRUN echo after-${uniq}\n` },
      },
    });
    const b = await waitForBuild(c.coord, id, undefined, 600_000);
    const view = (await c.coord.api<{ nodes: NodeViewT[] }>(apiPath.build(id))).body;
    const byName = new Map(view.nodes.map((n) => [n.name, n]));
    expect(b.state, JSON.stringify(view.nodes.map((n) => [n.name, n.state, n.error]))).toBe('success');
    expect([...byName.keys()].sort()).toEqual(['after', 'app', 'app.linux-amd64', 'app.linux-arm64', 'app.linux-s390x', 'check.linux-arm64', 'check.linux-s390x']);

    const index = byName.get('app')!;
    expect(index.index_of).toEqual(['app.linux-amd64', 'app.linux-arm64', 'app.linux-s390x']);
    expect(index.images).toEqual([expect.objectContaining({ ref, media_type: LIST, platform: platforms.join(',') })]);
    expect(byName.get('after')!.needs).toEqual(['app']);
    expect(Date.parse(byName.get('after')!.started_at!)).toBeGreaterThanOrEqual(Date.parse(index.finished_at!));

    // The list in the registry: exactly the three platform nodes' digests.
    const res = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/1`, { headers: { accept: LIST } });
    expect(res.headers.get('docker-content-digest')).toBe(index.images[0]!.digest);
    const list = (await res.json()) as { mediaType: string; manifests: Array<{ digest: string; platform: { architecture: string; os: string; variant?: string } }> };
    expect(list.mediaType).toBe(LIST);
    expect(list.manifests).toHaveLength(3);
    for (const p of platforms) {
      const node = byName.get(`app.${p.replace('/', '-')}`)!;
      expect(node.origin).toBe('app');
      const own = node.images[0]!;
      expect(own.ref).toBe(`${REGISTRY}/${repo}:1-${p.replace('/', '-')}`);
      const entry = list.manifests.find((m) => `${m.platform.os}/${m.platform.architecture}` === p);
      expect(entry?.digest, p).toBe(own.digest);
    }
    expect(list.manifests.find((m) => m.platform.architecture === 'arm64')!.platform.variant).toBe('v8');

    const listed = (await c.coord.api<{ items: ImageViewT[] }>(apiPath.buildImages(id))).body.items;
    expect(listed.filter((i) => i.index)).toEqual([{ ...index.images[0]!, node: 'app', index: true }]);
    expect(listed.filter((i) => !i.index)).toHaveLength(3);

    // The second engine pulls each platform from the one ref and runs it.
    const want = new Map([
      ['linux/amd64', 'x86_64'],
      ['linux/arm64', 'aarch64'],
      ['linux/s390x', 's390x'],
    ]);
    try {
      for (const [p, arch] of want) {
        await run(DOCKER, ['-H', DOCKER_HOST_SECOND!, 'pull', '-q', '--platform', p, ref]);
        const { stdout } = await run(DOCKER, ['-H', DOCKER_HOST_SECOND!, 'run', '--rm', '--network', 'none', '--platform', p, ref, 'uname', '-m']);
        expect(stdout.trim(), p).toBe(arch);
        const stamp = await run(DOCKER, ['-H', DOCKER_HOST_SECOND!, 'run', '--rm', '--network', 'none', '--platform', p, ref, 'cat', '/stamp']);
        expect(stamp.stdout.trim()).toBe(uniq);
        await run(DOCKER, ['-H', DOCKER_HOST_SECOND!, 'rmi', '-f', ref]).catch(() => undefined);
      }
    } finally {
      await run(DOCKER, ['-H', DOCKER_HOST_SECOND!, 'rmi', '-f', ref]).catch(() => undefined);
    }
  });
});
