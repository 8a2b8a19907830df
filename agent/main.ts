/**
 * `kiln agent`: loads the agent's config, builds its executor and runs it until a
 * signal. Signals are a ladder: the first SIGTERM/SIGINT drains (no new work, running
 * builds finish, heartbeats continue), the second cancels running builds and reports
 * them, the third exits at once. Exit 78 (EX_CONFIG) means retrying cannot help (bad
 * token, incompatible coordinator), so systemd's RestartPreventExitStatus=78 stops a
 * restart loop.
 */
import { join } from 'node:path';
import Docker from 'dockerode';
import { createLogger, isKilnError, sleep, Backoff } from '../shared/index.js';
import { Agent, FatalAgentError } from './agent.js';
import { CasCache } from './cas-cache.js';
import { loadAgentConfig, type AgentFlags } from './config.js';
import { DockerExecutor } from './executors/docker-executor.js';
import type { Executor } from './executors/executor.js';
import { NoopExecutor } from './executors/noop-executor.js';
import { discoverGpus } from './gpus.js';

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
  if (config.executor === 'noop') {
    executor = new NoopExecutor(host.arch);
  } else {
    const cas = new CasCache({ dir: join(config.workDir, 'cas'), coordinatorUrl: config.httpUrl, token: config.token, maxBytes: config.cacheMaxBytes });
    executor = new DockerExecutor(dockerClient(config.dockerHost), cas, config.workDir);
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
  }
}
