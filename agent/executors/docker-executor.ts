/**
 * The docker executor: runs a node as a BuildKit build on the host's Docker Engine.
 *
 * 1. Fetches the node's context and input artifacts into the local CAS cache (verified by
 *    digest, one download per digest per host).
 * 2. Reads the Dockerfile (inline, or from the context), resolves its base images to the
 *    engine's image ids, and reports them (`resolved`); when the coordinator asked, waits
 *    for its go-ahead (it may reuse an identical node's result instead and cancel).
 * 3. Turns each input into a local image `kiln-cas/<hex>` once (docker/artifact-image.ts)
 *    and rewrites the Dockerfile so each input is a stage named after it, bind-mounted
 *    where the spec says, with its env (docker/dockerfile-rewrite.ts).
 * 4. Streams the context to `POST /build?version=2` through dockerode (network `none`, the
 *    node's platform, tagged with the coordinator's image name) and turns BuildKit's
 *    progress into log text (docker/buildkit-progress.ts). Registry credentials and build
 *    secrets are served through the build's BuildKit session (docker/build-session.ts).
 * 5. When the node has a test, runs it in a container of the built image (network none,
 *    the attempt's GPUs attached; docker/test-container.ts); its exit code decides.
 * 6. On success exports the declared outputs from the image (docker/export-outputs.ts).
 * 7. Layer cache (docker/layer-cache.ts): every build imports the node's cache ref when the
 *    assignment names one; a successful build in readwrite mode exports it (a failed push
 *    is logged, never fails the node). Steps cached/executed are reported as `cache`.
 * 8. Then pushes the image to the node's `image:` refs (docker/image-push.ts). An index
 *    node builds nothing: it puts one multi-platform index of its platform nodes' pushed
 *    images at its refs (docker/image-index.ts). A registry's refusal (credentials,
 *    access, name) fails the node; its other failures are infrastructure failures.
 * 9. After a push, the image's SBOM (docker/sbom.ts) goes to the CAS and each pushed
 *    image record names it (`sbom`; null when it could not be made, which is logged and
 *    does not fail the node). An index lists its platform images' SBOMs.
 * Cancel and timeout abort the request, which makes the engine stop the build. With
 * tracing on, each step is a phase span (`io.phase`: input fetch, resolve, build, test,
 * output export, cache export, push; session-job.ts ends the last one).
 *
 * Failures of the agent's own (the engine unreachable or broken mid-build, a 5xx from the
 * daemon, a full disk) are infrastructure failures (`infra: true`, retryable elsewhere)
 * that keep the engine's error and tell the agent's health what happened (`trouble`).
 */
import type Docker from 'dockerode';
import { baseImageRefs, coerceError, formatDuration, parseImageRef, pullHosts, sha256, type AssignPayload, type BaseImagePayload, type Digest } from '../../shared/core.js';
import type { CasCache, CasLease } from '../cas-cache.js';
import { ensureArtifactImage } from '../docker/artifact-image.js';
import { buildContextStream, readTarFile } from '../docker/build-context.js';
import { executorInfoOf } from '../docker/engine-api.js';
import { BuildProgressDecoder, type BuildEvent } from '../docker/buildkit-progress.js';

import { rewriteForInputs } from '../docker/dockerfile-rewrite.js';
import { exportOutputs } from '../docker/export-outputs.js';
import { runTest } from '../docker/test-container.js';
import { assembleIndex } from '../docker/image-index.js';
import { PushError, pushImages, registryAuthLookup, type RegistryAuth } from '../docker/image-push.js';
import { explainPullRefusal, registryConfig } from '../docker/registry-config.js';
import { buildInSession, endpointOf, openBuildSession, type BuildSession } from '../docker/build-session.js';
import { cacheFigures, forgiveCacheImport, InlineCacheBackend, type LayerCacheBackend } from '../docker/layer-cache.js';
import { indexSboms } from '../docker/index-sboms.js';
import { diskFullMessage, diskFullNeed, isCorruptArtifact, isDiskFull, isEngineClientError, isEngineUnreachable } from '../failure-kinds.js';
import type { CancelReason, Executor, ExecutorInfo, RunIO, RunResult, Trouble } from './executor.js';

/** How long a partial build-log line (no newline yet) is held before it is shown anyway. */
export const PARTIAL_LINE_WAIT_MS = 100;

/** What an infra failure means for the agent's health, if anything. */
function troubleOf(err: unknown, message: string): Trouble | undefined {
  if (isDiskFull(err)) return { kind: 'disk_full', error: diskFullMessage(err) ?? message, needBytes: diskFullNeed(err) };
  if (isEngineUnreachable(err)) return { kind: 'engine_unreachable', error: message };
  return undefined;
}

/** The credentials the assignment carries for its layer-cache registry (none: anonymous). */
function cacheAuth(job: AssignPayload): RegistryAuth | undefined {
  if (!job.cache) return undefined;
  const r = parseImageRef(job.cache.ref);
  return r.ok ? registryAuthLookup(job.registry_auth)(r.ref.domain) : undefined;
}

export class DockerExecutor implements Executor {
  readonly kind = 'docker' as const;
  private native: string | null = null;
  private readonly layerCache: LayerCacheBackend;

  constructor(
    private readonly docker: Docker,
    private readonly cas: CasCache,
    private readonly workDir: string,
    /** pushStallMs: a push or index put with no progress this long is a registry failure. */
    private readonly pushOpts: { pushStallMs?: number } = {},
    layerCache?: LayerCacheBackend,
  ) {
    this.layerCache = layerCache ?? new InlineCacheBackend(docker);
  }

  async info(): Promise<ExecutorInfo> {
    const [version, info] = await Promise.all([this.docker.version(), this.docker.info() as Promise<{ Architecture?: string }>]);
    return executorInfoOf(version, info);
  }

  async run(job: AssignPayload, io: RunIO): Promise<RunResult> {
    io.log(`[kiln] agent ${io.agentName}: node '${job.node}' attempt ${job.attempt} for ${job.platform}${io.emulated ? ' (emulated)' : ''}\n`);
    const leases: CasLease[] = [];
    let r: RunResult;
    try {
      r = await this.build(job, io, leases);
    } finally {
      for (const l of leases) l.release();
    }
    if (r.status === 'success') {
      io.log(`[kiln] success: ${r.imageId ?? ''}\n`);
      for (const o of r.outputs ?? []) io.log(`[kiln] output ${o.name}: ${o.digest} (${o.size} bytes)\n`);
    } else {
      io.log(`[kiln] ${r.status}${r.error ? `: ${r.error}` : ''}\n`);
    }
    return r;
  }

  private async build(job: AssignPayload, io: RunIO, leases: CasLease[]): Promise<RunResult> {
    if (job.index) return this.runIndex(job, io);
    const base = { exitCode: null, failedStep: null, imageId: null };
    const t0 = Date.now();
    const infraFail = (error: string, fetchMs: number, buildMs = 0, cause?: unknown): RunResult => {
      const trouble = cause === undefined ? undefined : troubleOf(cause, error);
      return { ...base, status: 'failed', error, infra: true, fetchMs, buildMs, ...(trouble ? { trouble } : {}) };
    };

    // 1. context and inputs into the local CAS cache
    let contextPath: string | null = null;
    const inputPaths = new Map<string, CasLease>();
    io.phase?.('input fetch', { 'kiln.inputs': job.inputs.length });
    try {
      const [ctx, ...inputs] = await Promise.all([
        job.context ? this.cas.acquire(job.context as Digest, io.signal) : Promise.resolve(null),
        ...job.inputs.map((i) => this.cas.acquire(i.digest as Digest, io.signal)),
      ]);
      if (ctx) {
        leases.push(ctx);
        contextPath = ctx.path;
      }
      job.inputs.forEach((i, n) => {
        leases.push(inputs[n]!);
        inputPaths.set(i.name, inputs[n]!);
      });
    } catch (err) {
      if (io.signal.aborted) return this.aborted(io, Date.now() - t0, 0);
      const error = `fetching the build context or inputs failed: ${coerceError(err).message}`;
      if (isCorruptArtifact(err)) return { ...base, status: 'failed', error, infra: false, fetchMs: Date.now() - t0, buildMs: 0 };
      return infraFail(error, Date.now() - t0, 0, err);
    }
    for (const i of job.inputs) io.log(`[kiln] input ${i.name}: ${i.digest}${i.mount ? ` mounted at ${i.mount}` : ''}\n`);

    // 2. the Dockerfile and its base images (and the coordinator's go-ahead)
    io.phase?.('resolve');
    let dockerfileText: string | null = job.dockerfile_inline;
    if (dockerfileText === null && contextPath !== null) {
      try {
        dockerfileText = await readTarFile(contextPath, job.dockerfile ?? 'Dockerfile');
      } catch (err) {
        return { ...base, status: 'failed', error: `reading ${job.dockerfile ?? 'Dockerfile'} from the context failed: ${coerceError(err).message}`, infra: false, fetchMs: Date.now() - t0, buildMs: 0 };
      }
    }
    const dockerfileDigest = dockerfileText !== null ? sha256(dockerfileText) : null;
    let baseImages: BaseImagePayload[] = [];
    try {
      if (dockerfileText !== null) baseImages = await this.resolveBaseImages(dockerfileText, job.build_args, job.platform);
    } catch (err) {
      return infraFail(`the Docker Engine could not be asked for the base images: ${coerceError(err).message}`, Date.now() - t0, 0, err);
    }
    const fetchMs = Date.now() - t0;
    const meta = { baseImages, dockerfileDigest };
    if (io.signal.aborted) return { ...this.aborted(io, fetchMs, 0), ...meta };
    try {
      await io.resolved(meta);
    } catch {
      return { ...this.aborted(io, fetchMs, 0), ...meta };
    }

    // 3. inputs as images and stages, then the build
    io.phase?.('build');
    let dockerfileOverride: string | null = job.dockerfile_inline;
    if (job.inputs.length > 0) {
      try {
        const rewriteInputs = [];
        for (const i of job.inputs) {
          const lease = inputPaths.get(i.name)!;
          const image = await ensureArtifactImage(this.docker, i.digest as Digest, () => this.cas.open(i.digest as Digest), lease.size);
          rewriteInputs.push({ name: i.name, image, mount: i.mount, env: i.env });
        }
        if (dockerfileText === null) throw new Error(`${job.dockerfile ?? 'Dockerfile'} is not in the context`);
        dockerfileOverride = rewriteForInputs(dockerfileText, rewriteInputs);
      } catch (err) {
        if (io.signal.aborted) return { ...this.aborted(io, fetchMs, 0), ...meta };
        const infra = !(err as { code?: string }).code?.startsWith('E_INVALID');
        const error = `preparing the inputs failed: ${coerceError(err).message}`;
        if (infra) return { ...infraFail(error, fetchMs, 0, err), ...meta };
        return { ...base, status: 'failed', error, infra, fetchMs, buildMs: 0, ...meta };
      }
    }

    // 4. the build
    io.started();
    const t1 = Date.now();
    const { stream, dockerfile } = buildContextStream(contextPath, dockerfileOverride);
    const opts: Record<string, unknown> = {
      version: '2',
      platform: job.platform,
      networkmode: 'none',
      t: job.image_tag,
      dockerfile: dockerfile ?? job.dockerfile ?? 'Dockerfile',
      abortSignal: io.signal,
    };
    if (Object.keys(job.build_args).length > 0) opts.buildargs = job.build_args;
    if (job.target) opts.target = job.target;
    if (job.no_cache) opts.nocache = true;
    // Layer cache: import the node's cache ref (and mark inline cache for export).
    if (job.cache) Object.assign(opts, this.layerCache.buildOptions(job.cache, job));
    // Credentials for the registries the build pulls from (base images, the cache ref).
    // The Engine's BuildKit asks for them through a session (it ignores X-Registry-Config):
    // one of ours, answering each registry with its own credentials (docker/build-session.ts).
    const registryconfig = registryConfig(job.registry_auth);
    // Build secrets (`RUN --mount=type=secret,id=NAME`) are served by the same session.
    const secrets = new Map((job.secret_values ?? []).map((v) => [v.name, v.value] as const));
    const missing = (job.secrets ?? []).filter((x) => !secrets.has(x.name)).map((x) => x.name);
    if (missing.length > 0) {
      stream.destroy();
      return { ...base, status: 'failed', error: `the coordinator no longer holds the secret${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m}'`).join(', ')} this node names (set with: kiln secrets set NAME)`, infra: false, fetchMs, buildMs: 0, ...meta };
    }
    let session: BuildSession | null = null;
    let response: NodeJS.ReadableStream;
    try {
      if (registryconfig || secrets.size > 0) {
        session = await openBuildSession(endpointOf(this.docker as unknown as Parameters<typeof endpointOf>[0]), registryconfig ?? {}, io.signal, secrets);
        opts.session = session.id;
        response = await buildInSession(this.docker, stream, opts);
      } else response = await this.docker.buildImage(stream, opts as Docker.ImageBuildOptions);
    } catch (err) {
      session?.close();
      stream.destroy();
      if (io.signal.aborted) return { ...this.aborted(io, fetchMs, Date.now() - t1), ...meta };
      const message = `Docker Engine refused the build: ${coerceError(err).message}`;
      // A 4xx is the engine refusing this request (a bad option), not the engine failing.
      if (isEngineClientError(err) && !isEngineUnreachable(err)) return { ...base, status: 'failed', error: message, infra: false, fetchMs, buildMs: Date.now() - t1, ...meta };
      return { ...infraFail(message, fetchMs, Date.now() - t1, err), ...meta };
    }
    // Build secrets: each step's output is redacted on its own (log-redactor.ts, loaded only
    // for such a node), so a value printed in pieces is caught even while other steps print.
    const secretValues = job.secret_values ?? [];
    const Redactor = secretValues.length > 0 ? (await import('../log-redactor.js')).LogRedactor : null;
    const decoder = new BuildProgressDecoder(Redactor ? { filter: () => new Redactor(secretValues) } : undefined);
    // A line without its newline yet (a prompt, progress dots) is shown once it has waited
    // PARTIAL_LINE_WAIT_MS, checked that often while one is held.
    let partialTimer: NodeJS.Timeout | null = null;
    const showPartials = () => {
      partialTimer = null;
      const shown = decoder.flushPartials(Date.now() - PARTIAL_LINE_WAIT_MS);
      if (shown) io.log(shown);
      if (decoder.hasPartial()) partialTimer = setTimeout(showPartials, PARTIAL_LINE_WAIT_MS);
    };
    const streamError = await readBuildEvents(response, (event) => {
      const text = decoder.push(event);
      if (text) io.log(text);
      if (partialTimer === null && decoder.hasPartial()) partialTimer = setTimeout(showPartials, PARTIAL_LINE_WAIT_MS);
    });
    if (partialTimer) clearTimeout(partialTimer);
    session?.close();
    const rest = decoder.end();
    if (rest) io.log(rest);
    const buildMs = Date.now() - t1;
    if (io.signal.aborted) return { ...this.aborted(io, fetchMs, buildMs), ...meta };
    // A cache import that found nothing (or no registry) is not the build's failure.
    const outcome = job.cache ? forgiveCacheImport(decoder.outcome()) : decoder.outcome();
    const cacheSteps = cacheFigures(decoder.steps());
    if (streamError && outcome.exitCode === null) {
      // The engine went away or broke the connection mid-build (dockerd restarting or
      // killed): whatever BuildKit said last, the build did not fail on its own.
      const said = outcome.error ? ` (last error from BuildKit: ${outcome.error})` : '';
      const message = `the build stream from the Docker Engine broke: ${streamError.message}${said}`;
      return { ...infraFail(message, fetchMs, buildMs, streamError), ...meta, trouble: { kind: 'engine_unreachable', error: message } };
    }
    if (outcome.error || !outcome.imageId) {
      // BuildKit running out of space for its snapshots is the host's trouble, not the node's.
      const engineDiskFull = outcome.exitCode === null && outcome.error !== null && /no space left on device/i.test(outcome.error);
      return {
        status: 'failed',
        exitCode: outcome.exitCode,
        error: outcome.error !== null && outcome.exitCode === null && dockerfileText !== null ? explainPullRefusal(outcome.error, pullHosts(dockerfileText, job.build_args, job.platform), job.registry_auth) : (outcome.error ?? 'the engine reported no image id'),
        failedStep: outcome.failedStep,
        infra: engineDiskFull,
        imageId: null,
        fetchMs,
        buildMs,
        ...meta,
        cache: { ...cacheSteps, push: 'none' },
      };
    }
    const imageId = outcome.imageId;
    io.phase?.(null);

    // 5. the test
    let testExitCode: number | null | undefined;
    if (job.test) {
      io.testStarting();
      io.phase?.('test');
      let outcomeT;
      try {
        outcomeT = await runTest(this.docker, { imageId, test: job.test, gpus: job.gpus, attemptId: job.attempt_id }, { log: (c) => io.log(c), signal: io.signal });
      } catch (err) {
        if (io.signal.aborted) return { ...this.aborted(io, fetchMs, Date.now() - t1), imageId, ...meta };
        const message = `running the test failed: ${coerceError(err).message}`;
        if (isEngineClientError(err) && !isEngineUnreachable(err)) return { ...base, status: 'failed', imageId, error: message, failedStep: 'test', infra: false, testExitCode: null, fetchMs, buildMs: Date.now() - t1, ...meta };
        return { ...infraFail(message, fetchMs, Date.now() - t1, err), imageId, failedStep: 'test', ...meta };
      }
      const testFailed = (error: string, exitCode: number | null): RunResult => ({
        status: 'failed',
        exitCode,
        error,
        failedStep: 'test',
        infra: false,
        imageId,
        testExitCode: exitCode,
        fetchMs,
        buildMs: Date.now() - t1,
        ...meta,
      });
      if (outcomeT.kind === 'aborted') return { ...this.aborted(io, fetchMs, Date.now() - t1), imageId, ...meta };
      if (outcomeT.kind === 'timeout') return testFailed(`test timed out after ${formatDuration(job.test.timeout_ms)}`, null);
      if (outcomeT.kind === 'not_started') return testFailed(`the test command could not start: ${outcomeT.error}`, null);
      if (outcomeT.exitCode !== 0) return testFailed(`test failed with exit code ${outcomeT.exitCode}`, outcomeT.exitCode);
      testExitCode = 0;
    }
    const tested = testExitCode !== undefined ? { testExitCode } : {};

    // 6. outputs (only after the test passed)
    let outputs: RunResult['outputs'] = [];
    if (job.outputs.length > 0) {
      io.phase?.('output export', { 'kiln.outputs': job.outputs.length });
      try {
        outputs = await exportOutputs(this.docker, imageId, job.outputs, this.cas, this.workDir, io.signal);
      } catch (err) {
        if (io.signal.aborted) return { ...this.aborted(io, fetchMs, Date.now() - t1), ...meta };
        const code = (err as { code?: string }).code;
        const error = `exporting outputs failed: ${coerceError(err).message}`;
        // A full disk while extracting or packing is the agent's trouble, whatever wrapped it.
        const infra = isDiskFull(err) || (code !== 'E_NOT_FOUND' && code !== 'E_ARCHIVE');
        if (infra) return { ...infraFail(error, fetchMs, Date.now() - t1, err), imageId, ...tested, ...meta };
        return { ...base, status: 'failed', imageId, error, infra, fetchMs, buildMs: Date.now() - t1, ...tested, ...meta };
      }
    }
    // 7. layer cache export (readwrite mode); a failed push does not fail the node
    io.phase?.(job.cache ? 'cache export' : null);
    const push = job.cache ? await this.layerCache.afterBuild(job.cache, imageId, { log: (t) => io.log(t), signal: io.signal, auth: cacheAuth(job) }) : 'none';
    if (io.signal.aborted) return { ...this.aborted(io, fetchMs, Date.now() - t1), ...meta };
    const cache = { ...cacheSteps, push };
    // 8. images (only after the test passed and the outputs are out)
    let pushed: Pick<RunResult, 'images'> = {};
    if (job.images && job.images.length > 0) {
      io.phase?.('push', { 'kiln.images': job.images.length });
      try {
        pushed = { images: await pushImages(this.docker, imageId, job.images, job.platform, { authFor: registryAuthLookup(job.registry_auth), signal: io.signal, log: (l) => io.log(l), ...this.pushOpts }) };
      } catch (err) {
        if (io.signal.aborted) return { ...this.aborted(io, fetchMs, Date.now() - t1), imageId, ...meta };
        const error = coerceError(err).message;
        if (err instanceof PushError && err.refused) return { ...base, status: 'failed', imageId, error, failedStep: 'push', infra: false, fetchMs, buildMs: Date.now() - t1, ...tested, ...meta, cache };
        return { ...infraFail(error, fetchMs, Date.now() - t1, err instanceof PushError ? undefined : err), imageId, failedStep: 'push', ...tested, ...meta, cache };
      }
      // 9. the pushed image's SBOM (docker/sbom.ts): a failure is logged, never fails the node
      // Loaded on first use: the CycloneDX library costs ~75 ms to import, only nodes that push need it.
      const images = pushed.images!;
      const sbomDeps = { cas: this.cas, workDir: this.workDir, log: (l: string) => io.log(l), signal: io.signal };
      pushed = {
        images: await import('../docker/sbom.js').then(
          (m) => m.withSboms(this.docker, imageId, images, job.platform, sbomDeps),
          (err: unknown) => {
            io.log(`[kiln] sbom: could not be made: ${coerceError(err).message}\n`);
            return images.map((i) => ({ ...i, sbom: null }));
          },
        ),
      };
      if (io.signal.aborted) return { ...this.aborted(io, fetchMs, Date.now() - t1), imageId, ...meta };
    }
    return { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId, fetchMs, buildMs: Date.now() - t1, outputs, ...tested, ...meta, cache, ...pushed };
  }

  /** An index node: one multi-platform index at the node's refs, from its platform nodes' images. */
  private async runIndex(job: AssignPayload, io: RunIO): Promise<RunResult> {
    const t0 = Date.now();
    io.started();
    const done = { exitCode: null, imageId: null, fetchMs: 0 };
    io.phase?.('push', { 'kiln.index': true, 'kiln.images': job.images?.length ?? 0 });
    try {
      const authFor = registryAuthLookup(job.registry_auth);
      const assembled = await assembleIndex(job.images ?? [], job.index ?? [], { authFor: (d) => authFor(d) ?? null, signal: io.signal, log: (l) => io.log(l), ...this.pushOpts });
      // The index lists its platform images' SBOMs (made when they were pushed; nothing is scanned again).
      const images = assembled.map((i) => ({ ...i, sbom: null, platform_sboms: indexSboms(job.index ?? []) }));
      return { ...done, status: 'success', error: null, failedStep: null, infra: false, buildMs: Date.now() - t0, outputs: [], images };
    } catch (err) {
      if (io.signal.aborted) return this.aborted(io, 0, Date.now() - t0);
      const error = `assembling the image index failed: ${coerceError(err).message}`;
      return { ...done, status: 'failed', error, failedStep: 'index', infra: !(err instanceof PushError && err.refused), buildMs: Date.now() - t0 };
    }
  }

  /** The engine's image ids for the Dockerfile's FROM images (null when it does not have one). */
  private async resolveBaseImages(dockerfile: string, buildArgs: Record<string, string>, platform: string): Promise<BaseImagePayload[]> {
    let refs: Array<{ ref: string; resolved: boolean }>;
    try {
      const [os, arch, variant] = platform.split('/');
      const native = (this.native ??= (await this.info()).nativePlatform);
      const [bos, barch, bvariant] = native.split('/');
      refs = baseImageRefs(dockerfile, buildArgs, {
        TARGETPLATFORM: platform,
        TARGETOS: os,
        TARGETARCH: arch,
        TARGETVARIANT: variant ?? '',
        BUILDPLATFORM: native,
        BUILDOS: bos,
        BUILDARCH: barch,
        BUILDVARIANT: bvariant ?? '',
      });
    } catch {
      return [];
    }
    return Promise.all(
      refs.map(async ({ ref, resolved }) => {
        if (!resolved) return { ref, digest: null };
        try {
          const img = (await this.docker.getImage(ref).inspect()) as { Id?: string };
          return { ref, digest: img.Id && /^sha256:[0-9a-f]{64}$/.test(img.Id) ? img.Id : null };
        } catch (err) {
          // An engine that cannot be reached must not look like an image it does not have.
          if (isEngineUnreachable(err)) throw err;
          return { ref, digest: null };
        }
      }),
    );
  }

  private aborted(io: RunIO, fetchMs: number, buildMs: number): RunResult {
    const reason = io.signal.reason as CancelReason | undefined;
    const base = { exitCode: null, failedStep: null, imageId: null, infra: false, fetchMs, buildMs };
    if (reason?.kind === 'timeout') return { ...base, status: 'failed', error: reason.message };
    return { ...base, status: 'cancelled', error: reason?.message ?? 'cancelled' };
  }
}

/**
 * Reads the Engine's JSON-lines build response. Unlike dockerode's followProgress, it
 * splits on newline bytes before decoding (a UTF-8 character split across network
 * chunks stays whole) and survives a malformed line instead of throwing inside a
 * stream callback. Resolves with the stream's error, if any.
 */
export function readBuildEvents(stream: NodeJS.ReadableStream, onEvent: (e: BuildEvent) => void): Promise<Error | null> {
  return new Promise((resolve) => {
    let pending: Buffer[] = [];
    const handleLine = (line: Buffer) => {
      const text = line.toString('utf8').trim();
      if (!text) return;
      try {
        onEvent(JSON.parse(text) as BuildEvent);
      } catch {
        onEvent({ stream: `[kiln] unparsable line from the Docker Engine: ${text.slice(0, 200)}\n` });
      }
    };
    stream.on('data', (chunk: Buffer) => {
      let start = 0;
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, start)) {
        pending.push(chunk.subarray(start, i));
        handleLine(Buffer.concat(pending));
        pending = [];
        start = i + 1;
      }
      if (start < chunk.length) pending.push(chunk.subarray(start));
    });
    let ended = false;
    stream.on('end', () => {
      ended = true;
      if (pending.length > 0) handleLine(Buffer.concat(pending));
      resolve(null);
    });
    stream.on('error', (err: Error) => resolve(err));
    stream.on('close', () => resolve(ended ? null : new Error('the build stream closed before it ended')));
  });
}
