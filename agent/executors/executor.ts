/**
 * What runs a node on an agent. The docker executor runs a real BuildKit build on the
 * host's Docker Engine; the noop executor (benchmarks only) finishes at once.
 */
import type { AssignPayload, BaseImagePayload, DockerInfoPayload, FinishedCachePayload, OutputArtifactPayload, PushedImagePayload, SpanAttributes } from '../../shared/core.js';

export interface ExecutorInfo {
  /** The platform the host runs natively, e.g. linux/amd64. */
  nativePlatform: string;
  docker: DockerInfoPayload | null;
}

export interface RunIO {
  /** Appends text to the node's log. */
  log(text: string | Uint8Array): void;
  /** Call when the build itself begins (after inputs were fetched). */
  started(): void;
  /**
   * Reports the resolved base images and waits for the coordinator's go-ahead (`proceed`)
   * when the assignment asked for it (`resolve: true`); resolves at once otherwise. When the
   * coordinator reuses an earlier result instead, the signal is aborted.
   */
  resolved(info: { baseImages: BaseImagePayload[]; dockerfileDigest: string | null }): Promise<void>;
  /**
   * Call when the node's test begins (after a successful build): the build's time limit
   * stops counting; the executor enforces the test's own (`assign.test.timeout_ms`).
   */
  testStarting(): void;
  /** Aborted on cancel or timeout; `signal.reason` is a CancelReason. */
  signal: AbortSignal;
  agentName: string;
  /** The node's platform runs under emulation on this host. */
  emulated: boolean;
  /**
   * Tracing (absent: off): the job enters a phase (`input fetch`, `build`, `test`,
   * `output export`, `push`, ...), which ends the previous one; null only ends it. The
   * last phase ends with the job.
   */
  phase?: (name: string | null, attributes?: SpanAttributes) => void;
}

export interface CancelReason {
  /** cutoff: the agent was cut off from the coordinator too long and stopped its builds. */
  kind: 'cancel' | 'timeout' | 'shutdown' | 'cutoff';
  message: string;
}

export interface RunResult {
  status: 'success' | 'failed' | 'cancelled';
  exitCode: number | null;
  error: string | null;
  failedStep: string | null;
  /** The infrastructure failed (Docker unreachable, context fetch failed, disk full), not the build. */
  infra: boolean;
  /** What the agent should learn about its own health from an infra failure. */
  trouble?: Trouble;
  /** Exit code of the node's test command, when it ran to its end. */
  testExitCode?: number | null;
  imageId: string | null;
  fetchMs: number;
  buildMs: number;
  /** Exported and uploaded outputs (success only). */
  outputs?: OutputArtifactPayload[];
  baseImages?: BaseImagePayload[];
  dockerfileDigest?: string | null;
  /** Images pushed (success of a node with `image:`, or an index node). */
  images?: PushedImagePayload[];
  /** Layer cache: build steps cached/executed and the cache push (docker executor). */
  cache?: FinishedCachePayload;
}

/** disk_full: a write to the work dir hit ENOSPC; engine_unreachable: a Docker Engine call could not connect or broke. */
export type Trouble = { kind: 'disk_full'; error: string; needBytes: number | null } | { kind: 'engine_unreachable'; error: string };

export interface Executor {
  readonly kind: 'docker' | 'noop';
  info(): Promise<ExecutorInfo>;
  run(job: AssignPayload, io: RunIO): Promise<RunResult>;
}
