/**
 * Image push and index assembly (issue 11): a large image pushed through kiln's push path
 * (agent/docker/image-push.ts: tag, Engine API push, digest from the progress, untag) vs
 * `docker push` of an image of the same size by the Docker CLI, interleaved, in one run;
 * then the time kiln takes to assemble a 3-platform index (HEAD each child, PUT the list).
 * Target: kiln push <= 1.1 x docker push.
 *
 * Every push uploads a layer the registry has never seen (each run builds its own random
 * layer), to a registry of its own (docker-registry on a free port, temp storage), so no
 * cross-repository mount or earlier run shortens it.
 *
 *   node dist/scripts/bench/image-push.js [--runs 3] [--mib 200] [--docker-host unix:///var/run/docker.sock]
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { pack } from 'tar-stream';
import { readBuildEvents } from '../../agent/executors/docker-executor.js';
import { dockerClient } from '../../agent/docker/docker-client.js';
import { assembleIndex } from '../../agent/docker/image-index.js';
import { pushImages } from '../../agent/docker/image-push.js';
import { fmt, freePort, machineLine, median, now } from './bench-util.js';

const run = promisify(execFile);
const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : dflt);
const RUNS = Number(arg('--runs', '3'));
const MIB = Number(arg('--mib', '200'));
const DOCKER_HOST = arg('--docker-host', 'unix:///var/run/docker.sock');
const DOCKER_CLI = '/usr/bin/docker';

async function build(docker: Docker, dockerfile: string, platform: string | null, tag: string): Promise<string> {
  const p = pack();
  p.entry({ name: 'Dockerfile', mtime: new Date(0) }, dockerfile);
  p.finalize();
  const body = new PassThrough();
  (p as unknown as NodeJS.ReadableStream).pipe(body);
  const opts: Record<string, unknown> = { version: '2', networkmode: 'none', t: tag };
  if (platform) opts.platform = platform;
  const res = (await docker.buildImage(body, opts as Docker.ImageBuildOptions)) as NodeJS.ReadableStream;
  let id: string | null = null;
  let error: string | null = null;
  await readBuildEvents(res, (e) => {
    if (e.error) error = e.error;
    const aux = (e as { id?: string; aux?: { ID?: string } }).aux;
    if ((e as { id?: string }).id === 'moby.image.id' && aux?.ID) id = aux.ID;
  });
  if (error || !id) throw new Error(`build of ${tag} failed: ${error ?? 'no image id'}`);
  return id;
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-push-'));
  const port = await freePort();
  const reg = `127.0.0.1:${port}`;
  const config = join(dir, 'registry.yml');
  await writeFile(config, `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${join(dir, 'data')}}}\nhttp: {addr: ${reg}}\n`);
  const registry = spawn('/usr/bin/docker-registry', ['serve', config], { stdio: 'ignore' });
  const docker = dockerClient(DOCKER_HOST);
  const tags: string[] = [];
  try {
    for (let i = 0; i < 100; i++) {
      if ((await fetch(`http://${reg}/v2/`).catch(() => null))?.status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const kilnMs: number[] = [];
    const cliMs: number[] = [];
    const stamp = Date.now().toString(36);
    for (let r = 0; r < RUNS; r++) {
      for (const who of r % 2 === 0 ? (['kiln', 'cli'] as const) : (['cli', 'kiln'] as const)) {
        // A fresh random layer per push: nothing to mount or skip.
        const local = `kiln-bench/push-${who}-${stamp}-${r}:latest`;
        const id = await build(docker, `FROM kiln/busybox:1\nRUN head -c ${MIB * 1024 * 1024} /dev/urandom > /blob && echo ${who}-${stamp}-${r}\n`, null, local);
        tags.push(local);
        const ref = `${reg}/bench/${who}-${r}:1`;
        const t0 = now();
        if (who === 'kiln') await pushImages(docker, id, [ref], 'linux/amd64', { log: () => {} });
        else {
          await run(DOCKER_CLI, ['-H', DOCKER_HOST, 'tag', id, ref]);
          await run(DOCKER_CLI, ['-H', DOCKER_HOST, 'push', ref]);
          await run(DOCKER_CLI, ['-H', DOCKER_HOST, 'rmi', ref]).catch(() => undefined);
        }
        (who === 'kiln' ? kilnMs : cliMs).push(now() - t0);
      }
    }
    const k = median(kilnMs);
    const c = median(cliMs);
    console.log(machineLine());
    console.log(`image push, ${MIB} MiB random layer, ${RUNS} runs each, interleaved: kiln ${fmt(k / 1000, 2)} s (median), docker push ${fmt(c / 1000, 2)} s; ratio ${fmt(k / c, 2)}x (target <= 1.1x)`);

    // Index assembly: three small per-platform images pushed, then the list put (timed).
    const entries = [];
    for (const [platform, arch] of [
      ['linux/amd64', 'amd64'],
      ['linux/arm64', 'arm64'],
      ['linux/s390x', 's390x'],
    ] as const) {
      const local = `kiln-bench/index-${arch}-${stamp}:latest`;
      const id = await build(docker, `FROM kiln/busybox:1-${arch}\nRUN echo ${stamp} > /stamp\n`, platform, local);
      tags.push(local);
      const images = await pushImages(docker, id, [`${reg}/bench/multi:1-${arch}`], platform, { log: () => {} });
      entries.push({ node: `app.linux-${arch}`, platform, images });
    }
    const indexMs: number[] = [];
    for (let r = 0; r < Math.max(5, RUNS); r++) {
      const t0 = now();
      await assembleIndex([`${reg}/bench/multi:v${r}`], entries);
      indexMs.push(now() - t0);
    }
    console.log(`index assembly, 3 platforms (3 HEADs + 1 PUT): ${fmt(median(indexMs), 1)} ms median of ${indexMs.length} (min ${fmt(Math.min(...indexMs), 1)} ms)`);
  } finally {
    for (const t of tags) await docker.getImage(t).remove({ force: true }).catch(() => undefined);
    registry.kill('SIGTERM');
    await new Promise((r) => registry.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
