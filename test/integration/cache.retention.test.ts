/**
 * Layer-cache retention against the real registry (coordinator/builds/cache-retention.ts):
 * versioned cache tags of one node are pushed through the real Docker Engine (distinct
 * images, one version sharing its manifest with a newer one); a sweep with keep = 2 deletes
 * the older versions' manifests, keeps the moving tag, the newest two versions, a version
 * whose manifest a kept tag also names, and another node's tags.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { pack } from 'tar-stream';
import Docker from 'dockerode';
import { pushImageAs } from '../../agent/docker/layer-cache.js';
import { readBuildEvents } from '../../agent/executors/docker-executor.js';
import { pruneCacheTags } from '../../coordinator/builds/cache-retention.js';
import { versionedTag } from '../../coordinator/builds/layer-cache-refs.js';
import { DOCKER_HOST } from '../helpers/cluster.js';

const REGISTRY = process.env.KILN_REGISTRY;

describe.skipIf(!REGISTRY)(`layer cache retention in the registry${REGISTRY ? '' : ' (skipped: needs KILN_REGISTRY; scripts/infra/up.sh --registry)'}`, () => {
  const docker = new Docker({ socketPath: DOCKER_HOST.replace(/^unix:\/\//, '') });
  const nonce = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  const repo = `kiln-retention-test-${nonce}`;
  const images: string[] = [];

  afterAll(async () => {
    for (const id of images) await docker.getImage(id).remove({ force: true }).catch(() => {});
    // everything the test pushed goes (keep 0 drops every version; then the moving tags)
    await pruneCacheTags(`${REGISTRY}/${repo}`, 0).catch(() => {});
    for (const tag of await tags().catch(() => [])) {
      const head = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
      const digest = head.headers.get('docker-content-digest');
      if (digest) await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${digest}`, { method: 'DELETE' }).catch(() => {});
    }
  });

  async function image(label: string): Promise<string> {
    const p = pack();
    p.entry({ name: 'Dockerfile' }, `FROM kiln/busybox:1\nLABEL kiln.test.version="${label} ${nonce}"\n`);
    p.finalize();
    const body = new PassThrough();
    (p as unknown as NodeJS.ReadableStream).pipe(body);
    const res = (await docker.buildImage(body, { version: '2', networkmode: 'none', t: `kiln-retention-test/${nonce}:${label}` } as Docker.ImageBuildOptions)) as NodeJS.ReadableStream;
    let id: string | null = null;
    await readBuildEvents(res, (e) => {
      if (e.id === 'moby.image.id') id = (e.aux as { ID: string }).ID;
    });
    if (!id) throw new Error('build failed');
    images.push(`kiln-retention-test/${nonce}:${label}`);
    return id;
  }

  async function tags(): Promise<string[]> {
    const res = await fetch(`http://${REGISTRY}/v2/${repo}/tags/list`);
    return ((await res.json()) as { tags: string[] | null }).tags?.sort() ?? [];
  }

  it('keeps the newest N versions per node and platform and deletes the older manifests', async () => {
    const base = 'linux-amd64-app--r';
    const other = 'linux-amd64-lib--r';
    const at = (n: number) => versionedTag(base, n);
    const ref = (tag: string) => `${REGISTRY}/${repo}:${tag}`;
    const signal = AbortSignal.timeout(120_000);
    const [i1, i2, i3, i4] = [await image('v1'), await image('v2'), await image('v3'), await image('v4')];
    await pushImageAs(docker, i1!, [ref(at(1))], signal);
    await pushImageAs(docker, i2!, [ref(at(2))], signal);
    await pushImageAs(docker, i3!, [ref(at(3))], signal);
    await pushImageAs(docker, i4!, [ref(base), ref(at(4))], signal);
    await pushImageAs(docker, i2!, [ref(at(5))], signal); // version 5 has version 2's manifest
    await pushImageAs(docker, i1!, [ref(other), ref(versionedTag(other, 1))], signal); // another node: version 1 only
    expect(await tags()).toEqual([base, at(1), at(2), at(3), at(4), at(5), other, versionedTag(other, 1)].sort());

    const report = await pruneCacheTags(`${REGISTRY}/${repo}`, 2);
    // at(1)'s manifest is also other's (kept): shared, like at(2) with at(5); at(3) goes.
    expect(report.deleted).toEqual([at(3)]);
    expect(report.shared).toBe(2);
    expect(await tags()).toEqual([base, at(1), at(2), at(4), at(5), other, versionedTag(other, 1)].sort());
    // a second sweep has nothing left to delete
    expect((await pruneCacheTags(`${REGISTRY}/${repo}`, 2)).deleted).toEqual([]);
  });
});
