/**
 * The artifact store's two other faces, on real parts:
 * - the S3 backend: a coordinator process storing every blob in a real S3 server (s3rver
 *   on port 0), an agent building against it, artifacts listed with presigned links that
 *   work without any kiln token, and `kiln artifacts get` downloading through them;
 * - retention: finished builds' artifacts are deleted by a sweep unless the build is
 *   pinned, the list shows them expired, and a later identical node builds again instead
 *   of reusing a result whose outputs are gone.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ArtifactViewT as Artifact, NodeViewT as NodeBody } from '../../shared/index.js';
import { apiPath, sha256 as sha } from '../../shared/index.js';
import { kiln, startAgent, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';
import { startS3, type TestS3 } from '../helpers/s3.js';
import type * as Minio from 'minio';


const outputSpec = (marker: string) => ({
  name: 'store-test',
  nodes: { make: { dockerfile_inline: `FROM kiln/busybox:1\nRUN mkdir /o && echo "${marker}" > /o/file.txt && seq 1 5000 > /o/numbers`, outputs: { o: '/o' } } },
});

async function artifacts(c: CoordinatorHandle, id: string): Promise<Artifact[]> {
  return (await c.api<{ items: Artifact[] }>(apiPath.buildArtifacts(id))).body.items;
}

describe('artifacts in S3', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let s3: TestS3;
  let coord: CoordinatorHandle;
  const procs: Proc[] = [];

  beforeAll(async () => {
    dir = await tempDir('s3');
    s3 = await startS3();
    coord = await startCoordinator({
      dataDir: join(dir.path, 'data'),
      env: { KILN_CAS_BACKEND: 's3', KILN_S3_ENDPOINT: s3.endpoint, KILN_S3_BUCKET: 'kiln-artifacts', KILN_S3_ACCESS_KEY: s3.accessKey, KILN_S3_SECRET_KEY: s3.secretKey, KILN_S3_REGION: s3.region },
    });
    procs.push(coord.proc);
    procs.push(await startAgent({ coordinator: coord, name: 's3-agent', workDir: join(dir.path, 'agent') }));
  });
  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await s3.stop();
    await dir.cleanup();
  });

  it('stores contexts, outputs and provenance in the bucket and hands out presigned links', async () => {
    const marker = `s3-${Date.now()}`;
    const id = await submitSpec(coord, outputSpec(marker));
    const b = await waitForBuild(coord, id);
    expect(b.state).toBe('success');
    const [art] = await artifacts(coord, id);
    expect(art!.url).toMatch(new RegExp(`^${s3.endpoint}/kiln-artifacts/kiln/sha256/${art!.digest.slice(7)}\\?.*X-Amz-Signature=`));
    const res = await fetch(art!.url!); // no kiln token: the link itself is the credential
    expect(res.status).toBe(200);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(sha(bytes)).toBe(art!.digest);
    expect(bytes.length).toBe(art!.size_bytes);

    // Nothing of it is on the coordinator's disk; the bucket has the blobs and no temp objects.
    const { Client } = createRequire(import.meta.url)('minio') as typeof Minio;
    const mc = new Client({ endPoint: '127.0.0.1', port: Number(new URL(s3.endpoint).port), useSSL: false, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region, pathStyle: true });
    const keys: string[] = [];
    for await (const o of mc.listObjectsV2('kiln-artifacts', 'kiln/', true)) keys.push((o as { name: string }).name);
    expect(keys).toContain(`kiln/sha256/${art!.digest.slice(7)}`);
    const view = await coord.api<{ nodes: Array<{ provenance: string }> }>(apiPath.build(id));
    expect(keys).toContain(`kiln/sha256/${view.body.nodes[0]!.provenance.slice(7)}`);
    expect(keys.filter((k) => k.startsWith('kiln/tmp/'))).toEqual([]);

    const got = await kiln(['artifacts', 'get', id, 'make', 'o', '-o', join(dir.path, 'out')], coord.cliEnv);
    expect(got.code, got.stderr).toBe(0);
    expect(await readFile(join(dir.path, 'out', 'file.txt'), 'utf8')).toBe(`${marker}\n`);
  });
});

describe('artifact retention', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  const procs: Proc[] = [];

  beforeAll(async () => {
    dir = await tempDir('retention');
    // Everything expires the moment its build finishes; sweeps are triggered by the test.
    coord = await startCoordinator({ dataDir: join(dir.path, 'data'), env: { KILN_ARTIFACT_RETENTION: '1ms', KILN_GC_GRACE: '1ms' } });
    procs.push(coord.proc);
    procs.push(await startAgent({ coordinator: coord, name: 'gc-agent', workDir: join(dir.path, 'agent') }));
  });
  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await dir.cleanup();
  });

  it('deletes expired artifacts unless the build is pinned, and does not reuse what is gone', async () => {
    const marker = `gc-${Date.now()}`;
    const kept = await submitSpec(coord, outputSpec(`${marker}-kept`));
    const dropped = await submitSpec(coord, outputSpec(`${marker}-dropped`));
    for (const id of [kept, dropped]) expect((await waitForBuild(coord, id)).state).toBe('success');
    const pin = await kiln(['pin', kept], coord.cliEnv);
    expect(pin.code, pin.stderr).toBe(0);
    expect(pin.stdout).toContain('pinned');
    const keptArt = (await artifacts(coord, kept))[0]!;
    const droppedArt = (await artifacts(coord, dropped))[0]!;
    expect(keptArt.expires_at).toBeNull();
    expect(Date.parse(droppedArt.expires_at!)).toBeLessThanOrEqual(Date.now());

    await new Promise((r) => setTimeout(r, 20)); // past the 1 ms grace
    const gc = await coord.api<{ deleted: number }>(apiPath.gc(), { method: 'POST' });
    expect(gc.status).toBe(200);
    expect(gc.body.deleted).toBeGreaterThanOrEqual(1);
    expect((await coord.api(apiPath.casBlob(keptArt.digest), { method: 'HEAD' })).status).toBe(200);
    expect((await coord.api(apiPath.casBlob(droppedArt.digest), { method: 'HEAD' })).status).toBe(404);
    expect((await artifacts(coord, dropped))[0]!.url).toBeNull();
    expect((await kiln(['artifacts', 'get', dropped, 'make', 'o', '-o', join(dir.path, 'x')], coord.cliEnv)).stderr).toMatch(/expired/);

    // The same node again: its earlier result has no outputs any more, so it builds.
    const again = await submitSpec(coord, outputSpec(`${marker}-dropped`));
    const b = await waitForBuild(coord, again);
    expect(b.state).toBe('success');
    const node = (await coord.api<{ nodes: NodeBody[] }>(apiPath.build(again))).body.nodes[0]!;
    expect(node.reused_from).toBeNull();
    expect(node.outputs[0]!.digest).toBe(droppedArt.digest); // deterministic export: same bytes again

    // Unpinned, the kept build's artifacts go at the next sweep.
    expect((await kiln(['unpin', kept], coord.cliEnv)).code).toBe(0);
    await waitFor('the unpinned artifact to be swept', async () => {
      await coord.api(apiPath.gc(), { method: 'POST' });
      return (await coord.api(apiPath.casBlob(keptArt.digest), { method: 'HEAD' })).status === 404;
    });
  });
});
