/**
 * The docker executor: runs a node as a BuildKit build on the host's Docker Engine.
 *
 * It fetches the node's context from the coordinator into the local CAS cache (verified
 * by digest), streams it to `POST /build?version=2` through dockerode (network `none`,
 * the node's platform, tagged with the coordinator's image name), turns BuildKit's
 * progress into log text (docker/buildkit-progress.ts), and reports the outcome. Cancel
 * and timeout abort the request, which makes the engine stop the build.
 */
import type Docker from 'dockerode';
import { ociArch, type AssignPayload, type Digest } from '../../shared/index.js';
import type { CasCache } from '../cas-cache.js';
import { buildContextStream } from '../docker/build-context.js';
import { BuildProgressDecoder, type BuildEvent } from '../docker/buildkit-progress.js';
import type { CancelReason, Executor, ExecutorInfo, RunIO, RunResult } from './executor.js';

export class DockerExecutor implements Executor {
  readonly kind = 'docker' as const;

  constructor(
    private readonly docker: Docker,
    private readonly cas: CasCache,
  ) {}

  async info(): Promise<ExecutorInfo> {
    const [version, info] = await Promise.all([this.docker.version(), this.docker.info() as Promise<{ Architecture?: string; OSType?: string }>]);
    const arch = ociArch(info.Architecture ?? version.Arch);
    return {
      nativePlatform: `linux/${arch}`,
      docker: {
        version: version.Version,
        api_version: version.ApiVersion,
        os: version.Os,
        arch,
        // Engines through 28.x do not report the BuildKit they embed in /version or /info.
        buildkit_version: null,
      },
    };
  }

  async run(job: AssignPayload, io: RunIO): Promise<RunResult> {
    io.log(`[kiln] agent ${io.agentName}: node '${job.node}' attempt ${job.attempt} for ${job.platform}${io.emulated ? ' (emulated)' : ''}\n`);
    const r = await this.build(job, io);
    io.log(r.status === 'success' ? `[kiln] success: ${r.imageId ?? ''}\n` : `[kiln] ${r.status}${r.error ? `: ${r.error}` : ''}\n`);
    return r;
  }

  private async build(job: AssignPayload, io: RunIO): Promise<RunResult> {
    const base = { exitCode: null, failedStep: null, imageId: null };
    const t0 = Date.now();
    let contextPath: string | null = null;
    if (job.context) {
      try {
        contextPath = await this.cas.get(job.context as Digest, io.signal);
      } catch (err) {
        if (io.signal.aborted) return this.aborted(io, 0, 0);
        return { ...base, status: 'failed', error: `fetching the build context ${job.context} failed: ${(err as Error).message}`, infra: true, fetchMs: Date.now() - t0, buildMs: 0 };
      }
    }
    const fetchMs = Date.now() - t0;
    if (io.signal.aborted) return this.aborted(io, fetchMs, 0);
    io.started();
    const t1 = Date.now();
    const { stream, dockerfile } = buildContextStream(contextPath, job.dockerfile_inline);
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

    let response: NodeJS.ReadableStream;
    try {
      response = await this.docker.buildImage(stream, opts as Docker.ImageBuildOptions);
    } catch (err) {
      stream.destroy();
      if (io.signal.aborted) return this.aborted(io, fetchMs, Date.now() - t1);
      return { ...base, status: 'failed', error: `Docker Engine refused the build: ${(err as Error).message}`, infra: true, fetchMs, buildMs: Date.now() - t1 };
    }
    const decoder = new BuildProgressDecoder();
    const streamError = await readBuildEvents(response, (event) => {
      const text = decoder.push(event);
      if (text) io.log(text);
    });
    const rest = decoder.end();
    if (rest) io.log(rest);
    const buildMs = Date.now() - t1;
    if (io.signal.aborted) return this.aborted(io, fetchMs, buildMs);
    const outcome = decoder.outcome();
    if (streamError && !outcome.error) {
      return { ...base, status: 'failed', error: `the build stream from the Docker Engine broke: ${streamError.message}`, infra: true, fetchMs, buildMs };
    }
    if (outcome.error || !outcome.imageId) {
      return {
        status: 'failed',
        exitCode: outcome.exitCode,
        error: outcome.error ?? 'the engine reported no image id',
        failedStep: outcome.failedStep,
        infra: false,
        imageId: null,
        fetchMs,
        buildMs,
      };
    }
    return { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId: outcome.imageId, fetchMs, buildMs };
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
