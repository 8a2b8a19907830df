/**
 * The noop executor, for dispatch benchmarks only (`kiln agent --executor noop`): every
 * node succeeds at once without touching Docker, so what is measured is the
 * coordinator, the protocol and the persistence. It reports `started` but writes no log.
 */
import { ociArch } from '../../shared/index.js';
import type { AssignPayload } from '../../shared/index.js';
import type { Executor, ExecutorInfo, RunIO, RunResult } from './executor.js';

export class NoopExecutor implements Executor {
  readonly kind = 'noop' as const;

  constructor(private readonly arch: string) {}

  async info(): Promise<ExecutorInfo> {
    return { nativePlatform: `linux/${ociArch(this.arch)}`, docker: null };
  }

  async run(_job: AssignPayload, io: RunIO): Promise<RunResult> {
    io.started();
    return { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId: null, fetchMs: 0, buildMs: 0 };
  }
}
