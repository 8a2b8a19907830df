/**
 * The fleet-wide layer cache, agent side. The coordinator names a cache ref per platform and
 * node (`assign.cache`: `{ref, mode}`); every build of the node imports from it, and a
 * successful build in `readwrite` mode exports to it, so any agent of the pool starts from
 * what any other agent of the pool built.
 *
 * A backend decides how (the `LayerCacheBackend` interface):
 * - `InlineCacheBackend` (the one this Docker Engine can do): the Engine's built-in BuildKit
 *   (Docker 20.10, Engine API) imports with `cachefrom=[ref]` and exports *inline* cache only
 *   (`BUILDKIT_INLINE_CACHE=1`: cache metadata in the image config, mode=min, i.e. the
 *   layers of the final stage); the image is then tagged as the ref and pushed through the
 *   Engine API. Steps of other stages than the final one are not exported.
 * - A registry `mode=max` backend (every stage's layers, `type=registry,mode=max`) needs a
 *   standalone BuildKit (buildctl/buildx with a session) or an engine with the containerd
 *   image store; neither is available here. It would implement the same interface:
 *   `buildOptions` adding its cache-to exporter and `afterBuild` doing nothing (BuildKit
 *   pushes the cache itself).
 *
 * A missing ref (never exported yet) or an unreachable registry while importing is not an
 * error: BuildKit builds without the cache. A push that fails is logged and reported
 * (`push: 'failed'`, counted per pool by the coordinator); it never fails the node.
 *
 * Hit/miss: `cacheFigures` counts the build's steps (`[n/m] RUN ...`, `[stage n/m] COPY ...`;
 * not FROM, not BuildKit's internal vertices) that BuildKit reported CACHED and those it
 * executed, from the progress decoder's vertices (docker/buildkit-progress.ts).
 */
import type Docker from 'dockerode';
import { coerceError, type AssignCachePayload, type FinishedCachePayload } from '../../shared/core.js';
import type { RegistryAuth } from './image-push.js';

/** How long a cache push may take before it is given up (the node still succeeds). */
export const CACHE_PUSH_TIMEOUT_MS = 10 * 60 * 1000;

export type CachePush = FinishedCachePayload['push'];

export interface LayerCacheIO {
  log(text: string): void;
  signal: AbortSignal;
  /** Credentials for the cache registry, when the coordinator has some (X-Registry-Auth). */
  auth?: RegistryAuth;
}

export interface LayerCacheBackend {
  readonly kind: 'inline';
  /**
   * Engine API build options (query parameters) for this build; `buildArgs` are the node's.
   * Credentials for the import are not among them: the build's session answers them for
   * every registry (docker/registry-config.ts, docker/build-session.ts).
   */
  buildOptions(cache: AssignCachePayload, job: { no_cache: boolean; build_args: Record<string, string> }): Record<string, unknown>;
  /** After a successful build: export the cache in readwrite mode. Never throws. */
  afterBuild(cache: AssignCachePayload, imageId: string, io: LayerCacheIO): Promise<CachePush>;
}

/** `host:5000/repo:tag` -> repository and tag (the tag is after the last ':' past the last '/'). */
export function splitRef(ref: string): { repo: string; tag: string } {
  const colon = ref.lastIndexOf(':');
  if (colon <= ref.lastIndexOf('/')) return { repo: ref, tag: 'latest' };
  return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
}

/** Inline cache through the Engine API: cachefrom on every build, BUILDKIT_INLINE_CACHE=1 and a push in readwrite mode. */
export class InlineCacheBackend implements LayerCacheBackend {
  readonly kind = 'inline' as const;

  /** The push in flight per ref: tag, push and untag of one ref run one at a time on this agent. */
  private readonly pushing = new Map<string, Promise<unknown>>();

  constructor(
    private readonly docker: Docker,
    private readonly pushTimeoutMs = CACHE_PUSH_TIMEOUT_MS,
  ) {}

  buildOptions(cache: AssignCachePayload, job: { no_cache: boolean; build_args: Record<string, string> }): Record<string, unknown> {
    const opts: Record<string, unknown> = {};
    // A no-cache build would ignore what it imports; it still exports fresh layers.
    if (!job.no_cache) opts.cachefrom = JSON.stringify([cache.ref]);
    if (cache.mode === 'readwrite') opts.buildargs = { ...job.build_args, BUILDKIT_INLINE_CACHE: '1' };
    return opts;
  }

  async afterBuild(cache: AssignCachePayload, imageId: string, io: LayerCacheIO): Promise<CachePush> {
    if (cache.mode !== 'readwrite') return 'none';
    const t0 = Date.now();
    const signal = AbortSignal.any([io.signal, AbortSignal.timeout(this.pushTimeoutMs)]);
    try {
      const refs = cache.keep_ref ? [cache.ref, cache.keep_ref] : [cache.ref];
      await this.oneAtATime(cache.ref, () => pushImageAs(this.docker, imageId, refs, signal, io.auth));
      io.log(`[kiln] cache: pushed ${refs.join(' and ')} (${Date.now() - t0} ms)\n`);
      return 'pushed';
    } catch (err) {
      const why = signal.aborted && !io.signal.aborted ? `no answer within ${Math.round(this.pushTimeoutMs / 1000)}s` : coerceError(err).message;
      io.log(`[kiln] cache: push of ${cache.ref} failed: ${why.slice(0, 2000)} (the node is not failed for it)\n`);
      return 'failed';
    }
  }

  /** Runs `fn` after the previous push of `ref` on this agent ended (so one cannot untag what the other pushes). */
  private async oneAtATime<T>(ref: string, fn: () => Promise<T>): Promise<T> {
    const before = this.pushing.get(ref) ?? Promise.resolve();
    const mine = before.catch(() => {}).then(fn);
    this.pushing.set(ref, mine);
    try {
      return await mine;
    } finally {
      if (this.pushing.get(ref) === mine) this.pushing.delete(ref);
    }
  }
}

/**
 * Tags `imageId` as `ref`, pushes it through the Engine API (no credentials: the cache
 * given: the coordinator sends them when it has some for the cache registry), then removes that local tag again:
 * the Engine's BuildKit resolves a `cachefrom` ref against local images first, so a tag
 * left behind would shadow the registry and later builds on this engine would import
 * their own stale cache instead of what other agents pushed. Throws with the engine's or
 * the registry's message. (A minimal push for the cache ref; node image pushes have their
 * own module.)
 */
export async function pushImageAs(docker: Docker, imageId: string, refs: readonly string[], signal: AbortSignal, auth?: RegistryAuth): Promise<void> {
  const tagged: string[] = [];
  try {
    for (const ref of refs) {
      const { repo, tag } = splitRef(ref);
      await docker.getImage(imageId).tag({ repo, tag });
      tagged.push(ref);
      // The engine wants an X-Registry-Auth header even without credentials ({}).
      const stream = (await docker.getImage(ref).push({ authconfig: auth ?? {}, abortSignal: signal } as Docker.ImagePushOptions)) as NodeJS.ReadableStream;
      const error = await new Promise<string | null>((resolve, reject) => {
        let failed: string | null = null;
        docker.modem.followProgress(
          stream,
          (err: Error | null) => (err ? reject(err) : resolve(failed)),
          (e: { error?: string; errorDetail?: { message?: string } }) => {
            if (e.error) failed ??= e.errorDetail?.message ?? e.error;
          },
        );
      });
      if (error !== null) throw new Error(error);
    }
  } finally {
    // Only the tags: the image keeps its other tags (kiln-build/...), noprune keeps parents.
    for (const ref of tagged) {
      await docker
        .getImage(ref)
        .remove({ noprune: true })
        .catch(() => {});
    }
  }
}

/** A vertex of a build as the progress decoder saw it last. */
export interface StepCompletion {
  name: string;
  completion: 'done' | 'cached' | 'error' | 'canceled' | null;
}

/** A Dockerfile step vertex (`[2/3] RUN ...`, `[build 1/4] COPY ...`), FROM excluded. */
const STEP_RE = /^\[(?:[^\]\s]+ )?\d+\/\d+\] (?!FROM\b)/;

/** Build steps BuildKit reported cached (hit) and executed (miss). */
export function cacheFigures(steps: Iterable<StepCompletion>): { hit: number; miss: number } {
  let hit = 0;
  let miss = 0;
  for (const s of steps) {
    if (!STEP_RE.test(s.name)) continue;
    if (s.completion === 'cached') hit++;
    else if (s.completion === 'done') miss++;
  }
  return { hit, miss };
}

/** BuildKit's vertex for a cache import (`cachefrom`): its error is not the build's. */
const IMPORT_VERTEX = 'importing cache manifest from ';

/**
 * The build's outcome with a failed cache import forgiven: a ref never exported yet (`not
 * found`) or a registry that cannot be reached makes BuildKit mark the import vertex as
 * failed, and then builds without the cache. When the build produced its image, that
 * vertex's error is not the build's error.
 */
export function forgiveCacheImport<O extends { imageId: string | null; error: string | null; exitCode: number | null; failedStep: string | null }>(o: O): O {
  if (o.imageId === null || o.failedStep === null || !o.failedStep.startsWith(IMPORT_VERTEX)) return o;
  return { ...o, error: null, exitCode: null, failedStep: null };
}
