/**
 * The docker executor of an agent that has not built anything yet. It answers `info()`
 * with two plain HTTP calls to the engine (docker/engine-api.ts) and loads the real
 * DockerExecutor (dockerode, tar-stream, protobufjs, the BuildKit progress decoder) with
 * its first `run()`, so an idle agent does not carry them. A load that fails (it should
 * not) fails that run and is tried again with the next.
 */
import type { AssignPayload } from '../../shared/core.js';
import { engineInfo, type EngineEndpoint } from '../docker/engine-api.js';
import type { Executor, ExecutorInfo, RunIO, RunResult } from './executor.js';

export class DeferredDockerExecutor implements Executor {
  readonly kind = 'docker' as const;
  private loading: Promise<Executor> | null = null;

  constructor(
    private readonly engine: EngineEndpoint,
    /** Makes the real executor (imports its modules). */
    private readonly load: () => Promise<Executor>,
  ) {}

  info(): Promise<ExecutorInfo> {
    return engineInfo(this.engine);
  }

  async run(job: AssignPayload, io: RunIO): Promise<RunResult> {
    this.loading ??= this.load();
    let real: Executor;
    try {
      real = await this.loading;
    } catch (err) {
      this.loading = null;
      throw err;
    }
    return real.run(job, io);
  }
}
