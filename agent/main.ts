/**
 * `kiln agent`: loads the agent's config, builds its executor and runs it until a
 * signal. Signals are a ladder: the first SIGTERM/SIGINT drains (no new work, running
 * builds finish, heartbeats continue), the second cancels running builds and reports
 * them, the third exits at once. Exit 78 (EX_CONFIG) means retrying cannot help (bad
 * token, incompatible coordinator), so systemd's RestartPreventExitStatus=78 stops a
 * restart loop.
 *
 * Besides the agent it starts the health monitor (Docker Engine ping, free space of the
 * work dir; health.ts) and, on a host with GPUs, the GPU-use sampler for heartbeats.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Docker from 'dockerode';
import { createLogger, isKilnError, sleep, Backoff } from '../shared/index.js';
import { Agent, FatalAgentError } from './agent.js';
import { CasCache } from './cas-cache.js';
import { loadAgentConfig, type AgentFlags } from './config.js';
import { DockerExecutor } from './executors/docker-executor.js';
import type { Executor } from './executors/executor.js';
import { NoopExecutor, noopOptionsFromEnv } from './executors/noop-executor.js';
import { discoverGpus, queryGpuUse } from './gpus.js';
import { HealthMonitor } from './health.js';
import { GpuSampler } from './host-metrics.js';

export const EX_CONFIG = 78;

export function dockerClient(dockerHost: string): Docker {
  if (dockerHost.startsWith('unix://')) return new Docker({ socketPath: dockerHost.slice('unix://'.length) });
  const u = new URL(dockerHost.replace(/^tcp:/, 'http:'));
  return new Docker({ host: u.hostname, port: Number(u.port || 2375), protocol: 'http' });
}

export interface ProcessHost {
  env: Record<string, string | undefined>;
  hostname: string;
  arch: string;
  isTTY: boolean;
  onSignal: (handler: (signal: string) => void) => void;
}

export async function runAgent(flags: AgentFlags, host: ProcessHost): Promise<number> {
  const config = loadAgentConfig(flags, host);
  const logger = createLogger({ name: 'kiln-agent', level: config.log.level, format: config.log.format });
  let executor: Executor;
  let docker: Docker | null = null;
  await mkdir(config.workDir, { recursive: true }).catch((err: unknown) => logger.warn({ work_dir: config.workDir, err: (err as Error).message }, 'cannot create the work dir'));
  if (config.executor === 'noop') {
    executor = new NoopExecutor(host.arch, noopOptionsFromEnv(host.env));
  } else {
    const cas = new CasCache({ dir: join(config.workDir, 'cas'), coordinatorUrl: config.httpUrl, token: config.token, maxBytes: config.cacheMaxBytes });
    docker = dockerClient(config.dockerHost);
    executor = new DockerExecutor(docker, cas, config.workDir);
    // The engine may still be starting (or restarting): wait for it with backoff.
    const backoff = new Backoff({ baseMs: 500, capMs: 15_000 });
    for (;;) {
      try {
        await executor.info();
        break;
      } catch (err) {
        const delay = backoff.next();
        logger.warn({ docker_host: config.dockerHost, err: (err as Error).message, retry_in_ms: delay }, 'Docker Engine not reachable');
        await sleep(delay);
      }
    }
  }
  const gpus = config.executor === 'docker' ? await discoverGpus(host.env) : [];
  const engine = docker;
  const health = new HealthMonitor({
    workDir: config.workDir,
    minFreeBytes: config.minFreeDiskBytes,
    // dockerode's ping takes an abortSignal option its types do not declare.
    ping: engine ? (signal) => (engine.ping as unknown as (o: { abortSignal: AbortSignal }) => Promise<unknown>).call(engine, { abortSignal: signal }) : null,
    logger,
  });
  const initial = await health.start();
  if (!initial.accepting) logger.warn({ problem: initial.problem }, 'not taking work yet');
  // nvidia-smi at most once per 5 s; heartbeats send the latest sample.
  const gpuUse = gpus.length > 0 ? new GpuSampler(() => queryGpuUse(host.env), 5_000) : undefined;
  const agent = new Agent({
    url: config.wsUrl,
    token: config.token,
    name: config.name,
    labels: config.labels,
    maxJobs: config.maxJobs,
    extraPlatforms: config.extraPlatforms,
    executor,
    gpus,
    logger,
    health,
    ...(gpuUse ? { gpuUse } : {}),
  });
  let signals = 0;
  host.onSignal((signal) => {
    signals++;
    if (signals === 1) {
      logger.info({ signal, running: agent.runningJobs() }, 'draining: no new work; running builds finish (signal again to cancel them)');
      void agent.drain();
    } else if (signals === 2) {
      logger.warn({ signal }, 'cancelling running builds (signal again to exit now)');
      void agent.cancelAll();
    } else {
      logger.error({ signal }, 'exiting now');
      process.exit(1);
    }
  });
  try {
    await agent.run();
    logger.info('agent stopped');
    return 0;
  } catch (err) {
    if (err instanceof FatalAgentError || isKilnError(err, 'E_CONFIG')) {
      logger.fatal({ err: (err as Error).message }, 'agent cannot work with this coordinator; not retrying');
      return EX_CONFIG;
    }
    throw err;
  } finally {
    health.stop();
  }
}
