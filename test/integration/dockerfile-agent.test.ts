/**
 * Dockerfile.agent, for real: build the agent image with BuildKit (NODE_IMAGE is the
 * local kiln/node:20-local from scripts/infra/make-node-image.sh, since no registry is
 * reachable; `npm ci` inside the build reaches the npm registry over the host network),
 * run it as a container with the host's Docker socket mounted, and have it build a node
 * for a coordinator running on the host.
 */
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pack } from 'tar-stream';
import { readBuildEvents } from '../../agent/executors/docker-executor.js';
import { DOCKER_HOST, REPO, inline, nodeLog, startCoordinator, submitSpec, tempDir, waitForAgent, waitForBuild, type CoordinatorHandle } from '../helpers/cluster.js';
import { readdir, readFile, stat } from 'node:fs/promises';

const docker = new Docker({ socketPath: DOCKER_HOST.replace('unix://', '') });
const IMAGE = 'kiln/agent:test';
const SKIP = new Set(['node_modules', 'dist', '.git', '.kiln', 'test', 'examples']);

/** A tar of the repository as `docker build .` would send it (without what .dockerignore excludes). */
async function repoContext(): Promise<NodeJS.ReadableStream> {
  const p = pack();
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(REPO, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (!rel && SKIP.has(name)) continue;
      const st = await stat(join(REPO, r));
      if (st.isDirectory()) await walk(r);
      else if (st.isFile()) p.entry({ name: r, mode: st.mode & 0o777, mtime: new Date(0) }, await readFile(join(REPO, r)));
    }
  };
  await walk('');
  p.finalize();
  return p as unknown as NodeJS.ReadableStream;
}

describe('Dockerfile.agent', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  let container: Docker.Container | null = null;

  beforeAll(async () => {
    dir = await tempDir('image');
    coord = await startCoordinator({ dataDir: `${dir.path}/data` });
  });

  afterAll(async () => {
    if (container) await container.remove({ force: true }).catch(() => {});
    await coord.proc.stop();
    await dir.cleanup();
  });

  it('builds, and the container agent builds nodes through the mounted socket', async () => {
    await docker.getImage('kiln/node:20-local').inspect().catch(() => {
      throw new Error('kiln/node:20-local is missing: run scripts/infra/make-node-image.sh (scripts/test.sh does)');
    });
    const stream = (await docker.buildImage(await repoContext(), {
      version: '2',
      dockerfile: 'Dockerfile.agent',
      t: IMAGE,
      networkmode: 'host',
      buildargs: { NODE_IMAGE: 'kiln/node:20-local' },
    } as Docker.ImageBuildOptions)) as NodeJS.ReadableStream;
    const errors: string[] = [];
    let imageId: string | null = null;
    await readBuildEvents(stream, (e) => {
      if (e.error) errors.push(e.error);
      if (e.id === 'moby.image.id') imageId = (e.aux as { ID: string }).ID;
    });
    expect(errors).toEqual([]);
    expect(imageId).toMatch(/^sha256:/);

    const token = (await readFile(coord.agentTokenFile, 'utf8')).trim();
    container = await docker.createContainer({
      Image: IMAGE,
      Cmd: ['--coordinator', coord.url, '--name', 'in-a-container', '--max-jobs', '1'],
      Env: [`KILN_AGENT_TOKEN=${token}`],
      HostConfig: { NetworkMode: 'host', Binds: ['/var/run/docker.sock:/var/run/docker.sock'] },
    });
    await container.start();
    await waitForAgent(coord, 'in-a-container', 'connected');
    const marker = `from-container-${Date.now()}`;
    const id = await submitSpec(coord, { nodes: { n: inline(`FROM kiln/busybox:1\nRUN echo ${marker}`, { no_cache: true }) } });
    const b = await waitForBuild(coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes[0]!.agent).toBe('in-a-container');
    expect(await nodeLog(coord, id, 'n')).toContain(marker);

    // SIGTERM drains and exits 0
    await container.stop({ t: 30 });
    const info = await container.inspect();
    expect(info.State.ExitCode).toBe(0);
  });
});
