// Real-engine test for agent/docker/dockerfile-rewrite.ts and agent/docker/artifact-image.ts:
// an artifact tar (bin/tool + a data file) is loaded as kiln-cas/<hex>:latest, a Dockerfile
// is rewritten to bind-mount it and set TOOL_HOME, and the result is built with BuildKit
// through dockerode against $DOCKER_HOST (default unix:///var/run/docker.sock): natively and
// as linux/s390x under qemu (the artifact stage must come from the build platform). The
// output is read back from a created, never started, container. networkmode 'none', local
// images only; the test images are removed afterwards.
import { createHash, randomUUID } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import tar from 'tar-stream';
import { dockerClient } from '../../agent/docker/docker-client.js';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { ensureArtifactImage } from '../../agent/docker/artifact-image.js';
import { rewriteForInputs } from '../../agent/docker/dockerfile-rewrite.js';

const dockerHost = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';

const docker = dockerClient(dockerHost);
const engineAnswers = await docker.ping().then(() => true, () => false);
const hasImage = (ref: string) => docker.getImage(ref).inspect().then(() => true, () => false);
const hasNative = engineAnswers && (await hasImage('kiln/busybox:1'));
const hasS390x = engineAnswers && (await hasImage('kiln/busybox:1-s390x'));
const skipReason = !engineAnswers
  ? `no Docker engine answers at ${dockerHost}`
  : !hasNative
    ? 'image kiln/busybox:1 is missing (run scripts/infra/make-base-images.sh)'
    : null;

const marker = `kiln-rewrite-${randomUUID()}`;
const TOOL_SCRIPT = `#!/bin/sh\necho "tool ran: ${marker}"\ncat "$(dirname "$0")/../share/data.txt"\n`;
const DATA = `data file of ${marker}\n`;

async function artifactTar(): Promise<Buffer> {
  const p = tar.pack();
  const h = { mtime: new Date(0), uid: 0, gid: 0 };
  p.entry({ ...h, name: 'bin/', type: 'directory', mode: 0o755 });
  p.entry({ ...h, name: 'bin/tool', mode: 0o755 }, TOOL_SCRIPT);
  p.entry({ ...h, name: 'share/', type: 'directory', mode: 0o755 });
  p.entry({ ...h, name: 'share/data.txt', mode: 0o644 }, DATA);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function contextOf(dockerfile: string): PassThrough {
  const p = tar.pack();
  p.entry({ name: 'Dockerfile' }, dockerfile);
  p.finalize();
  return p.pipe(new PassThrough());
}

interface Event { error?: string; errorDetail?: { message?: string } }

async function build(dockerfile: string, tag: string, platform?: string): Promise<Event[]> {
  const stream = await docker.buildImage(contextOf(dockerfile), {
    version: '2',
    networkmode: 'none',
    t: tag,
    nocache: true,
    ...(platform ? { platform } : {}),
  });
  return new Promise<Event[]>((resolve, reject) => {
    const events: Event[] = [];
    docker.modem.followProgress(
      stream,
      (err: Error | null) => (err ? reject(err) : resolve(events)),
      (e: Event) => events.push(e),
    );
  });
}

/** /out/r.txt of the image, through a created (never started) container. */
async function readResult(image: string): Promise<string> {
  const container = await docker.createContainer({ Image: image, Cmd: ['/x'], NetworkDisabled: true });
  try {
    const archive = await container.getArchive({ path: '/out/r.txt' });
    const ex = tar.extract();
    let text = '';
    const done = new Promise<void>((resolve, reject) => {
      ex.on('entry', (header, body, next) => {
        body.on('data', (c: unknown) => {
          if (header.name === 'r.txt') text += (c as Buffer).toString('utf8');
        });
        body.on('end', next);
      });
      ex.on('finish', resolve);
      ex.on('error', reject);
    });
    archive.pipe(ex);
    await done;
    return text;
  } finally {
    await container.remove({ force: true });
  }
}

const toRemove: string[] = [];

afterAll(async () => {
  for (const ref of toRemove.reverse()) await docker.getImage(ref).remove().catch(() => undefined);
});

describe.skipIf(skipReason !== null)(
  skipReason ? `Dockerfile rewrite on a real BuildKit build (skipped: ${skipReason})` : 'Dockerfile rewrite on a real BuildKit build',
  () => {
    let toolImage = '';

    const dockerfileFor = (base: string) =>
      rewriteForInputs(`FROM ${base}\nRUN mkdir /out && /opt/tool/bin/tool > /out/r.txt && env | grep TOOL_HOME >> /out/r.txt`, [
        { name: 'tool', image: toolImage, mount: '/opt/tool', env: { TOOL_HOME: '/opt/tool' } },
      ]);

    const expectResult = (text: string) => expect(text).toBe(`tool ran: ${marker}\n${DATA}TOOL_HOME=/opt/tool\n`);

    it('loads the artifact as kiln-cas/<hex>:latest once, sharing concurrent calls and skipping when present', async () => {
      const layer = await artifactTar();
      const hex = createHash('sha256').update(layer).digest('hex');
      const open = () => Readable.from([layer]);
      const loads = vi.spyOn(docker, 'loadImage');
      try {
        const [a, b] = await Promise.all([
          ensureArtifactImage(docker, `sha256:${hex}`, open, layer.length),
          ensureArtifactImage(docker, `sha256:${hex}`, open, layer.length),
        ]);
        toRemove.push(a);
        expect(a).toBe(`kiln-cas/${hex}:latest`);
        expect(b).toBe(a);
        expect(loads).toHaveBeenCalledTimes(1);
        expect(await ensureArtifactImage(docker, `sha256:${hex}`, open, layer.length)).toBe(a);
        expect(loads).toHaveBeenCalledTimes(1);
      } finally {
        loads.mockRestore();
      }
      const info = await docker.getImage(`kiln-cas/${hex}:latest`).inspect();
      expect(info.Architecture).toBe((await docker.version()).Arch);
      expect(info.Os).toBe('linux');
      expect(info.RootFS.Layers).toEqual([`sha256:${hex}`]);
      toolImage = `kiln-cas/${hex}:latest`;
    });

    it('builds the rewritten Dockerfile natively with the mount and the ENV', async () => {
      expect(toolImage).not.toBe('');
      const tag = 'kiln-test/rewrite:latest';
      toRemove.push(tag);
      const events = await build(dockerfileFor('kiln/busybox:1'), tag);
      expect(events.filter((e) => e.error !== undefined || e.errorDetail !== undefined)).toEqual([]);
      await docker.getImage(tag).inspect();
      expectResult(await readResult(tag));
    });

    it.skipIf(!hasS390x)(
      hasS390x ? 'builds it for linux/s390x with the artifact from the build platform' : 'builds it for linux/s390x (skipped: image kiln/busybox:1-s390x is missing)',
      async () => {
        expect(toolImage).not.toBe('');
        const tag = 'kiln-test/rewrite:s390x';
        toRemove.push(tag);
        const events = await build(dockerfileFor('kiln/busybox:1-s390x'), tag, 'linux/s390x');
        expect(events.filter((e) => e.error !== undefined || e.errorDetail !== undefined)).toEqual([]);
        expect((await docker.getImage(tag).inspect()).Architecture).toBe('s390x');
        expectResult(await readResult(tag));
      },
    );
  },
);
