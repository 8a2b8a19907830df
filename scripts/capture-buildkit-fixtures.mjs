// Captures real BuildKit build event streams from a running Docker Engine into
// test/fixtures/buildkit/*.jsonl (one JSON event per line, exactly as
// docker.modem.followProgress delivers them). The fixtures feed
// test/unit/buildkit-progress.decode.test.ts. Re-run by hand when the engine changes:
//   node scripts/capture-buildkit-fixtures.mjs   (DOCKER_HOST defaults to the local socket)
// Needs only the local kiln/busybox images; builds run with networkmode 'none'.
import { mkdirSync, writeFileSync } from 'node:fs';
import Docker from 'dockerode';
import tar from 'tar-stream';

const outDir = new URL('../test/fixtures/buildkit/', import.meta.url);

/** Dockerfile text -> a tar stream holding just that Dockerfile. */
function contextOf(dockerfile) {
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, dockerfile);
  pack.finalize();
  return pack;
}

function dockerFromEnv() {
  const host = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
  if (host.startsWith('unix://')) return new Docker({ socketPath: host.slice('unix://'.length) });
  const url = new URL(host.replace(/^tcp:/, 'http:'));
  return new Docker({ host: url.hostname, port: Number(url.port) });
}

async function capture(docker, name, dockerfile, options) {
  const stream = await docker.buildImage(contextOf(dockerfile), {
    version: '2',
    networkmode: 'none',
    ...options,
  });
  const events = await new Promise((resolve, reject) => {
    const seen = [];
    docker.modem.followProgress(
      stream,
      (err) => (err ? reject(err) : resolve(seen)),
      (event) => seen.push(event),
    );
  });
  writeFileSync(new URL(`${name}.jsonl`, outDir), events.map((e) => JSON.stringify(e)).join('\n') + '\n');
  process.stderr.write(`${name}: ${events.length} events\n`);
}

const docker = dockerFromEnv();
mkdirSync(outDir, { recursive: true });

const twoStep = "FROM kiln/busybox:1\nRUN printf 'one\\ntwo\\n'; echo three\n";
await capture(docker, 'success-fresh', twoStep, { nocache: true, t: 'kiln-fixture/two-step:latest' });
await capture(docker, 'success-cached', twoStep, { t: 'kiln-fixture/two-step:latest' });
await capture(docker, 'failure-exit3', 'FROM kiln/busybox:1\nRUN echo before; exit 3\n', { nocache: true });
await capture(docker, 's390x', 'FROM kiln/busybox:1-s390x\nRUN uname -m\n', {
  nocache: true,
  platform: 'linux/s390x',
  t: 'kiln-fixture/s390x:latest',
});
// The tags only exist to get "naming to" statuses into the fixtures; the build cache stays.
for (const tag of ['kiln-fixture/two-step:latest', 'kiln-fixture/s390x:latest']) {
  await docker.getImage(tag).remove().catch(() => {});
}
