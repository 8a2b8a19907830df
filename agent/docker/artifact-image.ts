/**
 * Turns a content-addressed artifact (a tar of files, addressed by the sha256 of the tar)
 * into the local image `kiln-cas/<hex>:latest` that a rewritten Dockerfile uses as a stage
 * (see dockerfile-rewrite.ts), without a registry or a build.
 *
 * The image is made by streaming a `docker save`-style tarball to POST /images/load. It
 * holds `manifest.json`, the config `<sha256 of config>.json` and the artifact itself as the
 * only layer, `layer.tar`. The config is deterministic: the engine's native architecture,
 * `os: linux`, the artifact digest as the one diff_id (the engine checks it against the layer),
 * `created` at the epoch, no history, empty runtime config. So one artifact always becomes
 * the same image id on engines of one architecture.
 * An image that is already tagged is not loaded again. Calls for the same digest on the same
 * engine that overlap share one load.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { pack } from 'tar-stream';
import { coerceError, KilnError, digestHex, ociArch, parseDigest, type Digest } from '../../shared/core.js';

/** The local image name of an artifact. */
export function artifactImageRef(digest: Digest): string {
  return `kiln-cas/${digestHex(digest)}:latest`;
}

const inflight = new WeakMap<Docker, Map<string, Promise<string>>>();

function dockerError(what: string, err: unknown): KilnError {
  return new KilnError('E_DOCKER', `${what}: ${coerceError(err).message}`, { cause: err });
}

async function imageExists(docker: Docker, ref: string): Promise<boolean> {
  try {
    await docker.getImage(ref).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw dockerError(`inspecting image ${ref} failed`, err);
  }
}

/** The docker-save tarball for the artifact; errors of the artifact stream are reported through `failed`. */
function saveTarball(digest: Digest, ref: string, arch: string, openTar: () => Readable, size: number) {
  const config = JSON.stringify({
    architecture: arch,
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [digest] },
    config: {},
    created: '1970-01-01T00:00:00Z',
    history: [],
  });
  const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
  const manifest = JSON.stringify([{ Config: configName, RepoTags: [ref], Layers: ['layer.tar'] }]);
  const header = { mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 };
  const out = pack();
  let failure: Error | null = null;
  const fail = (err: Error) => {
    failure ??= err;
    out.destroy(err);
  };
  out.entry({ ...header, name: 'manifest.json' }, manifest);
  out.entry({ ...header, name: configName }, config);
  const layer = out.entry({ ...header, name: 'layer.tar', size }, (err) => (err ? fail(err) : out.finalize()));
  const src = openTar();
  src.on('error', fail);
  src.pipe(layer);
  return { stream: out as unknown as Readable, failed: () => failure };
}

/** Reads the JSON lines of the /images/load response; throws on an `error` line. */
async function readLoadResponse(res: NodeJS.ReadableStream): Promise<void> {
  let text = '';
  for await (const chunk of res) text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let event: { error?: string; errorDetail?: { message?: string } };
    try {
      event = JSON.parse(line) as typeof event;
    } catch {
      continue;
    }
    if (event.error !== undefined || event.errorDetail !== undefined) throw new Error(event.errorDetail?.message ?? event.error ?? 'unknown error');
  }
}

async function load(docker: Docker, digest: Digest, ref: string, openTar: () => Readable, size: number): Promise<string> {
  if (await imageExists(docker, ref)) return ref;
  let arch: string;
  try {
    arch = ociArch((await docker.version()).Arch);
  } catch (err) {
    throw dockerError('reading the engine version failed', err);
  }
  const tarball = saveTarball(digest, ref, arch, openTar, size);
  try {
    await readLoadResponse(await docker.loadImage(tarball.stream));
  } catch (err) {
    const failure = tarball.failed();
    if (failure) throw new KilnError('E_INTERNAL', `reading artifact ${digest} for ${ref} failed: ${failure.message}`, { cause: failure });
    throw dockerError(`loading artifact ${digest} as ${ref} failed`, err);
  }
  const failure = tarball.failed();
  if (failure) throw new KilnError('E_INTERNAL', `reading artifact ${digest} for ${ref} failed: ${failure.message}`, { cause: failure });
  if (!(await imageExists(docker, ref))) throw new KilnError('E_DOCKER', `the engine loaded artifact ${digest} but has no image ${ref}`);
  return ref;
}

/**
 * Makes sure `kiln-cas/<hex>:latest` exists on the engine and returns that ref. `openTar`
 * opens the artifact tar; it must yield exactly `size` bytes whose sha256 is `digest`.
 */
export function ensureArtifactImage(docker: Docker, digest: string, openTar: () => Readable, size: number): Promise<string> {
  let d: Digest;
  try {
    d = parseDigest(digest, 'artifact digest');
    if (!Number.isSafeInteger(size) || size < 0) throw new KilnError('E_INVALID', `artifact ${digest}: invalid size ${size}`);
  } catch (err) {
    return Promise.reject(err);
  }
  const ref = artifactImageRef(d);
  let perEngine = inflight.get(docker);
  if (!perEngine) inflight.set(docker, (perEngine = new Map()));
  const running = perEngine.get(d);
  if (running) return running;
  const p = load(docker, d, ref, openTar, size).finally(() => perEngine.delete(d));
  perEngine.set(d, p);
  return p;
}
