// Integration test for agent/docker/buildkit-progress.ts: real BuildKit builds through
// dockerode against $DOCKER_HOST (default unix:///var/run/docker.sock), with the events fed
// through the decoder as they arrive. Uses only the local kiln/busybox:1 image and networkmode
// 'none'; the built images are removed afterwards. Skipped when no engine answers.
import { randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import tar from 'tar-stream';
import { dockerClient } from '../../agent/docker/docker-client.js';
import { afterAll, describe, it, expect } from 'vitest';
import { BuildProgressDecoder } from '../../agent/docker/buildkit-progress.js';
import type { BuildEvent, BuildOutcome } from '../../agent/docker/buildkit-progress.js';

const dockerHost = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';

const docker = dockerClient(dockerHost);
const engineAnswers = await docker.ping().then(() => true, () => false);

/** A build context holding just this Dockerfile. */
function contextOf(dockerfile: string): PassThrough {
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, dockerfile);
  pack.finalize();
  return pack.pipe(new PassThrough());
}

interface LiveBuild { text: string; outcome: BuildOutcome; pushes: number }

async function buildLive(dockerfile: string): Promise<LiveBuild> {
  const decoder = new BuildProgressDecoder();
  let text = '';
  let pushes = 0;
  const stream = await docker.buildImage(contextOf(dockerfile), { version: '2', networkmode: 'none', nocache: true });
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null) => (err ? reject(err) : resolve()),
      (event: BuildEvent) => {
        text += decoder.push(event);
        pushes++;
      },
    );
  });
  text += decoder.end();
  return { text, outcome: decoder.outcome(), pushes };
}

const builtImages: string[] = [];

afterAll(async () => {
  for (const id of builtImages) await docker.getImage(id).remove().catch(() => undefined);
});

describe.skipIf(!engineAnswers)(
  engineAnswers ? 'BuildProgressDecoder on a real BuildKit build' : `BuildProgressDecoder on a real BuildKit build (skipped: no Docker engine answers at ${dockerHost})`,
  () => {
    it('shows the RUN output live and returns the image id', async () => {
      const marker = `kiln-marker-${randomUUID()}`;
      const { text, outcome, pushes } = await buildLive(`FROM kiln/busybox:1\nRUN echo ${marker}\n`);
      if (outcome.imageId) builtImages.push(outcome.imageId);

      expect(pushes).toBeGreaterThan(1);
      const run = /^#(\d+) \[2\/2\] RUN echo kiln-marker-/m.exec(text)?.[1];
      expect(run, text).toBeDefined();
      const outputLines = text.split('\n').filter((l) => l.endsWith(` ${marker}`) && /^#\d+ \d+\.\d+ /.test(l));
      expect(outputLines, text).toHaveLength(1);
      expect(outputLines[0]?.startsWith(`#${run} `)).toBe(true);
      expect(text).toMatch(new RegExp(`^#${run} DONE \\d+\\.\\ds$`, 'm'));
      expect(outcome.error).toBeNull();
      expect(outcome.imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
      const image = await docker.getImage(outcome.imageId ?? '').inspect();
      expect(image.Id).toBe(outcome.imageId);
    });

    it('reports a failing RUN with its exit code and no image', async () => {
      const { text, outcome } = await buildLive(`FROM kiln/busybox:1\nRUN echo ${randomUUID()}; exit 7\n`);
      expect(outcome.imageId).toBeNull();
      expect(outcome.exitCode).toBe(7);
      expect(outcome.failedStep).toMatch(/^\[2\/2\] RUN echo .*; exit 7$/);
      expect(text).toMatch(/^#\d+ ERROR: .*exit code: 7$/m);
      expect(text).toMatch(/^ERROR: .*exit code: 7\n$/m);
    });
  },
);
