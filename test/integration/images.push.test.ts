/**
 * Images to a registry, for real: a coordinator and an agent process on the real dockerd
 * push to the real registry (KILN_REGISTRY, Debian's docker-registry 2.8).
 *
 * - A node with two `image:` refs: after its build and test, both refs are in the
 *   registry with the digest the node's result records (HEAD on the registry), and the
 *   build view, `GET /builds/{id}/images`, `kiln images` (table and JSON Lines) and the
 *   provenance record list them.
 * - The registry unreachable (a TCP proxy in front of it refusing connections), or not
 *   answering (the proxy holding every byte; the agent's push_stall_timeout is 2 s): an
 *   infrastructure failure, retried; once it is reachable again the next attempt pushes.
 * - A registry that refuses the push (htpasswd auth, no credentials configured): the node
 *   fails at once (one attempt, not an infrastructure failure) with the registry's message.
 * - An invalid reference is a 400 at submit naming the node and field.
 */
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { apiPath, type BuildViewT, type ImageViewT, type NodeViewT } from '../../shared/index.js';
import { freePort, inline, kiln, Proc, submitSpec, useCluster, waitFor, waitForBuild } from '../helpers/cluster.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

const run = promisify(execFile);
const REGISTRY = process.env.KILN_REGISTRY;
const V2 = 'application/vnd.docker.distribution.manifest.v2+json';

type BuildView = BuildViewT;
type PushedImage = NodeViewT['images'][number];

/** The registry's digest and size of a manifest (HEAD with the v2 Accept header). */
export async function headManifest(registry: string, repo: string, ref: string): Promise<{ status: number; digest: string | null; size: number }> {
  const res = await fetch(`http://${registry}/v2/${repo}/manifests/${ref}`, { method: 'HEAD', headers: { accept: V2 } });
  return { status: res.status, digest: res.headers.get('docker-content-digest'), size: Number(res.headers.get('content-length') ?? -1) };
}

describe.skipIf(!REGISTRY)('images pushed to a registry (needs KILN_REGISTRY, e.g. 127.0.0.1:5000 from scripts/infra/up.sh --registry)', () => {
  // A short stall limit, so a registry that stops answering fails a push quickly.
  const c = useCluster('images', { agents: [{ name: 'pusher', env: { KILN_AGENT_PUSH_STALL_TIMEOUT: '2s' } }] });
  const uniq = `${process.pid}-${Date.now().toString(36)}`;
  const api = <T>(path: string) => c.coord.api<T>(path).then((r) => r.body);
  const env = () => c.coord.cliEnv;

  it('pushes every ref after build and test; result, images route, kiln images and provenance list them', async () => {
    const repo = `kiln-test/app-${uniq}`;
    const id = await submitSpec(c.coord, {
      name: 'push',
      nodes: {
        app: inline(`FROM kiln/busybox:1\nRUN echo ${uniq} > /stamp\n`, { image: [`${REGISTRY}/${repo}:1.0`, `${REGISTRY}/${repo}`], test: { command: 'cat /stamp' } }),
      },
    });
    const b = await waitForBuild(c.coord, id);
    const view = await api<BuildView>(apiPath.build(id));
    const app = view.nodes.find((n) => n.name === 'app')!;
    expect(b.state, JSON.stringify(app)).toBe('success');
    expect(app.image_refs).toEqual([`${REGISTRY}/${repo}:1.0`, `${REGISTRY}/${repo}:latest`]);
    expect(app.images.map((i) => i.ref)).toEqual(app.image_refs);
    for (const i of app.images) {
      expect(i).toMatchObject({ platform: 'linux/amd64', media_type: V2 });
      const tag = i.ref.slice(i.ref.lastIndexOf(':') + 1);
      const h = await headManifest(REGISTRY!, repo, tag);
      expect(h).toEqual({ status: 200, digest: i.digest, size: i.size });
    }
    const listed = await api<{ items: ImageViewT[] }>(apiPath.buildImages(id));
    expect(listed.items).toEqual(app.images.map((i) => ({ ...i, node: 'app', index: false })));

    const table = await kiln(['images', id], env());
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^NODE\s+REF\s+DIGEST\s+PLATFORM\s+SIZE\s+SBOM$/);
    expect(lines[1]!.split(/\s+/)).toEqual(['app', `${REGISTRY}/${repo}:1.0`, app.images[0]!.digest, 'linux/amd64', String(app.images[0]!.size), 'B', app.images[0]!.sbom]);
    expect(lines).toHaveLength(3);
    const json = await kiln(['images', id, '--json'], env());
    expect(json.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual(listed.items);

    const prov = await kiln(['provenance', id, 'app', '--json'], env());
    expect((JSON.parse(prov.stdout) as { images: PushedImage[] }).images).toEqual(app.images);
  });

  it('a registry that cannot be reached is an infrastructure failure: retried, then pushed once it is back', async () => {
    const [host, port] = REGISTRY!.split(':');
    const proxy = await startTcpProxy({ host, port: Number(port) });
    try {
      proxy.refuse();
      const repo = `kiln-test/flaky-${uniq}`;
      const id = await submitSpec(c.coord, { name: 'flaky', nodes: { app: inline(`FROM kiln/busybox:1\nRUN echo flaky-${uniq}\n`, { image: `127.0.0.1:${proxy.port}/${repo}:1` }) } });
      await waitFor('the first attempt to fail', async () => {
        const v = await api<BuildView>(apiPath.build(id));
        return v.nodes[0]!.attempts.some((a) => a.state === 'failed');
      });
      proxy.heal();
      await waitForBuild(c.coord, id);
      const app = (await api<BuildView>(apiPath.build(id))).nodes[0]!;
      expect(app.state, JSON.stringify(app)).toBe('success');
      const first = app.attempts[0]!;
      expect(first).toMatchObject({ state: 'failed', infra: true });
      expect(first.error).toMatch(/push/i);
      expect(app.attempts.at(-1)!.state).toBe('success');
      expect((await headManifest(REGISTRY!, repo, '1')).digest).toBe(app.images[0]!.digest);
    } finally {
      await proxy.close();
    }
  });

  it('a registry that stops answering mid-push is an infrastructure failure (push_stall_timeout), retried', async () => {
    const [host, port] = REGISTRY!.split(':');
    const proxy = await startTcpProxy({ host, port: Number(port) });
    try {
      proxy.blackhole();
      const repo = `kiln-test/stalled-${uniq}`;
      const id = await submitSpec(c.coord, { name: 'stalled', nodes: { app: inline(`FROM kiln/busybox:1\nRUN echo stalled-${uniq}\n`, { image: `127.0.0.1:${proxy.port}/${repo}:1` }) } });
      await waitFor('the first attempt to fail', async () => (await api<BuildView>(apiPath.build(id))).nodes[0]!.attempts.some((a) => a.state === 'failed'));
      proxy.heal();
      await waitForBuild(c.coord, id);
      const app = (await api<BuildView>(apiPath.build(id))).nodes[0]!;
      expect(app.state, JSON.stringify(app)).toBe('success');
      expect(app.attempts[0]).toMatchObject({ state: 'failed', infra: true });
      expect(app.attempts[0]!.error).toContain('no progress for 2 s (the registry is not answering)');
      expect((await headManifest(REGISTRY!, repo, '1')).digest).toBe(app.images[0]!.digest);
    } finally {
      await proxy.close();
    }
  });

  it('a registry that refuses the push fails the node at once with its message', async () => {
    const port = await freePort();
    const htpasswd = join(c.dir, 'htpasswd');
    const { stdout } = await run('htpasswd', ['-Bbn', 'kiln', 'right-password']);
    await writeFile(htpasswd, stdout);
    const config = join(c.dir, 'registry.yml');
    await writeFile(
      config,
      `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${join(c.dir, 'registry-data')}}}\nhttp: {addr: 127.0.0.1:${port}}\nauth: {htpasswd: {realm: kiln-test, path: ${htpasswd}}}\n`,
    );
    c.track(new Proc(spawn('/usr/bin/docker-registry', ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] })));
    await waitFor('the htpasswd registry', async () => (await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => null))?.status === 401);
    const id = await submitSpec(c.coord, { name: 'denied', nodes: { app: inline(`FROM kiln/busybox:1\nRUN echo denied-${uniq}\n`, { image: `127.0.0.1:${port}/kiln-test/denied:1` }) } });
    await waitForBuild(c.coord, id);
    const app = (await api<BuildView>(apiPath.build(id))).nodes[0]!;
    expect(app.state).toBe('failed');
    expect(app.attempts).toHaveLength(1);
    expect(app.attempts[0]!.infra).toBe(false);
    expect(app.failed_step).toBe('push');
    expect(app.error).toMatch(/no basic auth credentials|unauthorized|authentication required/i);
    expect(app.error).toContain(`no credentials for 127.0.0.1:${port} are configured on the coordinator`);
  });

  it('an invalid image reference is a 400 at submit naming the node and field', async () => {
    const r = await c.coord.api<{ errors: Array<{ path: string; message: string }> }>(apiPath.builds(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nodes: { app: inline('FROM kiln/busybox:1\n', { image: `${REGISTRY}/Team/App:1` }) } }),
    });
    expect(r.status).toBe(400);
    expect(r.body.errors).toEqual([expect.objectContaining({ path: 'nodes.app.image', message: expect.stringContaining("node 'app': field 'image': invalid image reference") })]);
  });
});
