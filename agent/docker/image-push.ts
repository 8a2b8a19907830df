/**
 * Pushing a built image to a registry through the Docker Engine (`POST /images/{name}/push`,
 * what `docker push` does): tag the image as the ref, push it, read the engine's JSON-lines
 * progress for the manifest digest and size (`aux: {Tag, Digest, Size}`), untag it again.
 * Credentials, when given, go in the `X-Registry-Auth` header only (never in a log line).
 *
 * A push that fails is classified by what the registry said (`PushError.refused`):
 * refused (wrong or missing credentials, access denied, an invalid name or tag) fails the
 * node at once with the registry's message; anything else (the registry unreachable, a
 * 5xx, a timeout, a broken connection) is the infrastructure's and is retried.
 */
import type Docker from 'dockerode';
import { KilnError, coerceError, parseImageRef, type AssignPayload, type PushedImagePayload } from '../../shared/core.js';

/** What the engine forwards to the registry (`X-Registry-Auth`). */
export interface RegistryAuth {
  serveraddress: string;
  username?: string;
  password?: string;
  /** A bearer token the registry accepts as is. */
  registrytoken?: string;
}

export interface PushedManifest {
  ref: string;
  digest: string;
  /** Bytes of the manifest. */
  size: number;
}

export class PushError extends KilnError {
  constructor(
    message: string,
    /** true: the registry refused the push (credentials, access, name): retrying cannot help. */
    readonly refused: boolean,
    cause?: unknown,
  ) {
    super('E_PUSH', message, cause === undefined ? undefined : { cause });
    this.name = 'PushError';
  }
}

/** Media type of the manifests the Docker Engine (20.10) pushes. */
export const DOCKER_MANIFEST_V2 = 'application/vnd.docker.distribution.manifest.v2+json';

const REFUSED =
  /\b(unauthorized|authentication required|no basic auth credentials|incorrect username or password|denied|forbidden|access to the resource is denied|name unknown|name invalid|tag invalid|manifest invalid|invalid reference format|repository name must)\b|\b40[13]\b/i;

/** true when the registry's message says it refused the push (not that it failed). */
export function isRegistryRefusal(message: string): boolean {
  return REFUSED.test(message) && !/\b5\d\d\b/.test(message);
}

/** A push whose engine reports nothing this long is abandoned (see the agent's push_stall_timeout). */
export const DEFAULT_STALL_MS = 600_000;

/** Largest engine progress line kept whole (a line is a few hundred bytes). */
const MAX_LINE = 64 * 1024;

interface PushEvent {
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { Tag?: string; Digest?: string; Size?: number };
}

/** Reads the push response: the aux record, or the error the engine reported. */
function readPush(stream: NodeJS.ReadableStream): Promise<{ aux: PushEvent['aux'] | null; error: string | null; broken: Error | null }> {
  return new Promise((resolve) => {
    let buf = '';
    let aux: PushEvent['aux'] | null = null;
    let error: string | null = null;
    const line = (text: string) => {
      const t = text.trim();
      if (!t) return;
      try {
        const e = JSON.parse(t) as PushEvent;
        if (e.aux && typeof e.aux.Digest === 'string') aux = e.aux;
        if (e.error || e.errorDetail?.message) error = e.errorDetail?.message ?? e.error ?? null;
      } catch {
        // not JSON: ignored (the engine sends JSON lines only)
      }
    };
    stream.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (buf.length > MAX_LINE) buf = '';
    });
    let done = false;
    const finish = (broken: Error | null) => {
      if (done) return;
      done = true;
      line(buf);
      resolve({ aux, error, broken });
    };
    stream.on('end', () => finish(null));
    stream.on('error', (err: Error) => finish(err));
    stream.on('close', () => finish(null));
  });
}

/** The push in flight per ref on this agent: tag, push and untag of one ref run one at a time. */
const pushing = new Map<string, Promise<unknown>>();

/**
 * Pushes image `imageId` to `ref` (a normalised `domain/path:tag`), with `auth` when the
 * registry needs it. Resolves with the manifest digest and size the registry stored.
 * Pushes of one ref on this agent wait for each other: the push goes by tag, so two jobs
 * pushing `reg/app:latest` at once would otherwise push whichever image was tagged last
 * and untag it under the other's feet.
 */
export async function pushImage(docker: Docker, imageId: string, ref: string, opts: { auth?: RegistryAuth; signal?: AbortSignal; stallMs?: number } = {}): Promise<PushedManifest> {
  const before = pushing.get(ref) ?? Promise.resolve();
  const mine = before.catch(() => {}).then(() => pushTagged(docker, imageId, ref, opts));
  pushing.set(ref, mine);
  try {
    return await mine;
  } finally {
    if (pushing.get(ref) === mine) pushing.delete(ref);
  }
}

async function pushTagged(docker: Docker, imageId: string, ref: string, opts: { auth?: RegistryAuth; signal?: AbortSignal; stallMs?: number }): Promise<PushedManifest> {
  const parsed = parseImageRef(ref);
  if (!parsed.ok || parsed.ref.tag === null) throw new PushError(`invalid image reference '${ref}'${parsed.ok ? ': no tag' : `: ${parsed.problem}`}`, true);
  const repo = `${parsed.ref.domain}/${parsed.ref.path}`;
  const tag = parsed.ref.tag;
  await docker.getImage(imageId).tag({ repo, tag });
  try {
    // The push is aborted by the caller's signal, or when the engine reports no progress for stallMs.
    const stall = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, stall.signal]) : stall.signal;
    const stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
    let timer = setTimeout(() => stall.abort(), stallMs);
    const progressed = () => {
      clearTimeout(timer);
      timer = setTimeout(() => stall.abort(), stallMs);
    };
    const stalled = () => new PushError(`pushing ${ref}: no progress for ${Math.round(stallMs / 1000)} s (the registry is not answering)`, false);
    const options: Record<string, unknown> = { tag, abortSignal: signal };
    if (opts.auth) options.authconfig = opts.auth;
    let r: Awaited<ReturnType<typeof readPush>>;
    try {
      let stream: NodeJS.ReadableStream;
      try {
        stream = (await docker.getImage(repo).push(options)) as NodeJS.ReadableStream;
      } catch (err) {
        if (stall.signal.aborted && !opts.signal?.aborted) throw stalled();
        const message = coerceError(err).message;
        throw new PushError(`the Docker Engine refused to push ${ref}: ${message}`, isRegistryRefusal(message), err);
      }
      stream.on('data', progressed);
      r = await readPush(stream);
    } finally {
      clearTimeout(timer);
    }
    if (stall.signal.aborted && !opts.signal?.aborted) throw stalled();
    if (r.error !== null) throw new PushError(`pushing ${ref} failed: ${r.error}`, isRegistryRefusal(r.error));
    if (r.broken) throw new PushError(`the push stream of ${ref} broke: ${r.broken.message}`, false, r.broken);
    if (!r.aux || typeof r.aux.Digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(r.aux.Digest)) throw new PushError(`pushing ${ref}: the Docker Engine reported no valid manifest digest`, false);
    const size = typeof r.aux.Size === 'number' && Number.isSafeInteger(r.aux.Size) && r.aux.Size >= 0 ? r.aux.Size : 0;
    return { ref, digest: r.aux.Digest, size };
  } finally {
    // Only the tag goes (the image keeps its kiln-build tag); a failure here changes nothing.
    await docker
      .getImage(ref)
      .remove({ noprune: true })
      .catch(() => {});
  }
}

/** The image's platform as its config says (`linux/arm64/v8`). */
export async function imagePlatform(docker: Docker, imageId: string, fallback: string): Promise<string> {
  const img = (await docker.getImage(imageId).inspect()) as { Os?: string; Architecture?: string; Variant?: string };
  if (!img.Os || !img.Architecture) return fallback;
  return `${img.Os}/${img.Architecture}${img.Variant ? `/${img.Variant}` : ''}`;
}

/**
 * Pushes the built image to every ref in turn, logging each; the records for the node's
 * result. Throws a PushError (see `refused`) at the first that fails.
 */
export async function pushImages(
  docker: Docker,
  imageId: string,
  refs: readonly string[],
  platform: string,
  opts: { authFor?: (domain: string) => RegistryAuth | undefined; signal?: AbortSignal; log: (line: string) => void; pushStallMs?: number },
): Promise<PushedImagePayload[]> {
  const exact = await imagePlatform(docker, imageId, platform);
  const out: PushedImagePayload[] = [];
  for (const ref of refs) {
    opts.log(`[kiln] pushing ${ref}\n`);
    const parsed = parseImageRef(ref);
    const auth = parsed.ok ? opts.authFor?.(parsed.ref.domain) : undefined;
    let m: PushedManifest;
    try {
      m = await pushImage(docker, imageId, ref, { ...(auth ? { auth } : {}), ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.pushStallMs !== undefined ? { stallMs: opts.pushStallMs } : {}) });
    } catch (err) {
      if (!(err instanceof PushError) || !err.refused || !parsed.ok) throw err;
      const host = parsed.ref.domain;
      const hint = auth ? `the registry refused the credentials the coordinator has for ${host}` : `no credentials for ${host} are configured on the coordinator (registries.credentials_file)`;
      throw new PushError(`${err.message} (${hint})`, true, err);
    }
    opts.log(`[kiln] pushed ${ref}: ${m.digest} (${exact}, manifest ${m.size} bytes)\n`);
    out.push({ ref, digest: m.digest, platform: exact, size: m.size, media_type: DOCKER_MANIFEST_V2 });
  }
  return out;
}

/** The credentials an assignment carries, by registry host, as the Engine and the index assembly take them. */
export function registryAuthLookup(given: AssignPayload['registry_auth']): (domain: string) => RegistryAuth | undefined {
  const byHost = new Map<string, RegistryAuth>();
  for (const a of given ?? []) {
    const auth: RegistryAuth = { serveraddress: a.host };
    if (a.username !== undefined) auth.username = a.username;
    if (a.password !== undefined) auth.password = a.password;
    if (a.token !== undefined) auth.registrytoken = a.token;
    byHost.set(a.host.toLowerCase(), auth);
  }
  return (domain) => byHost.get(domain.toLowerCase()); // host names are case-insensitive
}
