/**
 * The simulated build: an `Executor` (agent/executors/executor.ts) that runs on simulated
 * time instead of BuildKit, for the real agent session (agent/agent-session.ts) to drive.
 *
 * Each run follows the docker executor's phases: a log header, the fetch, `resolved` (and
 * the wait for `proceed` when the assignment asks for it), `started`, log lines at planned
 * times, outputs uploaded to the real CAS, the result line, and the result. Its outcome
 * (success, build failure, infrastructure failure, hang past the timeout) is drawn from
 * the seed. An abort (cancel, timeout, shutdown) is noticed a little later, as BuildKit
 * would, and reported `cancelled` (a timeout: `failed`).
 *
 * Every byte a run writes to its log is recorded in `produced` (by attempt id): the ground
 * truth the invariant checker compares the coordinator's stored logs with.
 */
import { createHash } from 'node:crypto';
import type { CancelReason, Executor, ExecutorInfo, RunIO, RunResult } from '../../agent/executors/executor.js';
import type { Cas } from '../../coordinator/cas/cas.js';
import { ARTIFACT_MEDIA_TYPE, type AssignPayload, type Digest, type OutputArtifactPayload } from '../../shared/index.js';
import type { Rng } from './rng.js';
import type { World } from './world.js';

export interface JobOdds {
  /** The build fails (a RUN exits non-zero). */
  fail: number;
  /** The build fails for infrastructure reasons (Docker Engine gone, disk full). */
  infra: number;
  /** The build hangs past its timeout. */
  hang: number;
}

export interface ExecutorEnv {
  world: World;
  cas: Cas;
  /** attempt id -> the log bytes the build wrote, in order. */
  produced: Map<string, Buffer[]>;
  odds: () => JobOdds;
}

interface Plan {
  fetchMs: number;
  buildMs: number;
  /** Times (ms after the build starts) and lengths of the log lines the build writes. */
  lines: Array<{ at: number; len: number }>;
  outcome: 'success' | 'fail' | 'infra' | 'hang';
}

const BASE_IMAGE_DIGEST = `sha256:${'b'.repeat(64)}`;

function sha256(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export class SimExecutor implements Executor {
  constructor(
    readonly kind: 'docker' | 'noop',
    private readonly env: ExecutorEnv,
    private readonly rng: Rng,
    /** Runs `fn` later, only while the agent process that owns this executor lives. */
    private readonly later: (ms: number, label: string, fn: () => void | Promise<void>) => void,
  ) {}

  info(): Promise<ExecutorInfo> {
    return Promise.resolve({ nativePlatform: 'linux/amd64', docker: null });
  }

  private plan(a: AssignPayload): Plan {
    const odds = this.env.odds();
    const r = this.rng.next();
    const outcome = r < odds.hang ? 'hang' : r < odds.hang + odds.infra ? 'infra' : r < odds.hang + odds.infra + odds.fail ? 'fail' : 'success';
    const buildMs = outcome === 'hang' ? a.timeout_ms + 5000 : this.rng.int(200, 4000);
    const lines: Plan['lines'] = [];
    const n = this.rng.int(0, 8);
    for (let i = 0; i < n; i++) lines.push({ at: this.rng.int(0, Math.min(buildMs, 4000)), len: this.rng.int(5, 200) });
    lines.sort((x, y) => x.at - y.at);
    return { fetchMs: this.rng.int(5, 300), buildMs, lines, outcome };
  }

  run(a: AssignPayload, io: RunIO): Promise<RunResult> {
    const w = this.env.world;
    const alias = w.attempt(a.attempt_id);
    const plan = this.plan(a);
    const log = (text: string) => {
      const data = Buffer.from(text);
      let list = this.env.produced.get(a.attempt_id);
      if (!list) this.env.produced.set(a.attempt_id, (list = []));
      list.push(data);
      io.log(data);
    };
    let phase: 'fetch' | 'resolve' | 'build' | 'done' = 'fetch';
    let fetchMs = 0;
    let buildStartedAt: number | null = null;
    let meta: { baseImages: RunResult['baseImages'] & object; dockerfileDigest: string | null } | null = null;
    return new Promise<RunResult>((resolve) => {
      const complete = (r: Omit<RunResult, 'fetchMs' | 'buildMs' | 'baseImages' | 'dockerfileDigest'>) => {
        if (phase === 'done') return;
        phase = 'done';
        if (r.status === 'success') {
          log(`[kiln] success: ${r.imageId ?? ''}\n`);
          for (const o of r.outputs ?? []) log(`[kiln] output ${o.name}: ${o.digest} (${o.size} bytes)\n`);
        } else {
          log(`[kiln] ${r.status}${r.error ? `: ${r.error}` : ''}\n`);
        }
        resolve({ ...r, fetchMs, buildMs: buildStartedAt === null ? 0 : w.now - buildStartedAt, baseImages: meta?.baseImages ?? [], dockerfileDigest: meta?.dockerfileDigest ?? null });
      };
      const aborted = () => {
        const reason = io.signal.reason as CancelReason | undefined;
        const base = { exitCode: null, failedStep: null, imageId: null, infra: false };
        if (reason?.kind === 'timeout') complete({ ...base, status: 'failed', error: reason.message });
        else complete({ ...base, status: 'cancelled', error: reason?.message ?? 'cancelled' });
      };
      io.signal.addEventListener(
        'abort',
        () => {
          // the executor notices the abort (fetch aborted, BuildKit cancelled) a little later;
          // while it waits for `proceed`, the rejected wait ends it at once
          if (phase === 'fetch' || phase === 'build') this.later(this.rng.int(5, phase === 'build' ? 300 : 50), `aborted ${alias}`, aborted);
        },
        { once: true },
      );
      log(`[kiln] agent ${io.agentName}: node '${a.node}' attempt ${a.attempt} for ${a.platform}${io.emulated ? ' (emulated)' : ''}\n`);
      this.later(plan.fetchMs, `fetched ${alias}`, () => {
        if (phase !== 'fetch') return;
        fetchMs = plan.fetchMs;
        meta = { baseImages: [{ ref: 'kiln/busybox:1', digest: BASE_IMAGE_DIGEST }], dockerfileDigest: a.dockerfile_inline ? sha256(a.dockerfile_inline) : null };
        if (io.signal.aborted) return aborted();
        phase = 'resolve';
        // Not awaited by the event: the wait for `proceed` ends in a later event.
        io.resolved(meta).then(
          () => {
            if (phase !== 'resolve') return;
            phase = 'build';
            buildStartedAt = w.now;
            this.build(a, io, plan, alias, log, complete, () => phase === 'build');
          },
          aborted,
        );
      });
    });
  }

  private build(
    a: AssignPayload,
    io: RunIO,
    plan: Plan,
    alias: string,
    log: (text: string) => void,
    complete: (r: Omit<RunResult, 'fetchMs' | 'buildMs' | 'baseImages' | 'dockerfileDigest'>) => void,
    building: () => boolean,
  ): void {
    io.started();
    for (const line of plan.lines) {
      this.later(line.at, `output ${alias}`, () => {
        if (building()) log(`#${line.at} ${'x'.repeat(line.len)}\n`);
      });
    }
    this.later(plan.buildMs, `built ${alias}`, async () => {
      if (!building()) return;
      const base = { exitCode: null, failedStep: null, imageId: null, infra: false };
      if (plan.outcome === 'success') {
        const outputs: OutputArtifactPayload[] = [];
        for (const out of a.outputs) {
          const bytes = Buffer.from(`artifact ${alias} ${out.name} ${out.path}`);
          const digest = sha256(bytes);
          await this.env.cas.putBuffer(digest as Digest, bytes);
          outputs.push({ name: out.name, digest, size: bytes.length, media_type: ARTIFACT_MEDIA_TYPE });
        }
        if (!building()) return;
        complete({ ...base, status: 'success', error: null, imageId: sha256(`image ${alias}`), outputs });
      } else if (plan.outcome === 'fail') {
        complete({ ...base, status: 'failed', exitCode: 1, error: 'process "/bin/sh -c make" did not complete successfully: exit code: 1', failedStep: '[2/2] RUN make' });
      } else if (plan.outcome === 'infra') {
        complete({ ...base, status: 'failed', error: 'the Docker Engine is unreachable (connect ENOENT /var/run/docker.sock)', infra: true });
      }
      // 'hang': never finishes by itself; the timeout aborts it
    });
  }
}
