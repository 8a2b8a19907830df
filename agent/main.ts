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
 *
 * An idle agent loads only what it needs to be connected: the engine is asked for its
 * version and pinged over plain HTTP, and the docker executor (dockerode and the build
 * code) is loaded with the first build. `AGENT_COMMAND` is what the CLI needs to declare
 * `kiln agent`: its flags, made from the settings table.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { coerceError, createLogger, EX_CONFIG, fetchTrusting, isKilnError, settingFlags, settingsHelpFooter, sleep, Backoff, type FlagSpec } from '../shared/core.js';
import { Agent, FatalAgentError } from './agent.js';
import { AGENT_OPTIONS, AGENT_SETTINGS, loadAgentConfig, type AgentConfig, type AgentFlags } from './config.js';
import { engineEndpoint, engineGet } from './docker/engine-api.js';
import { DeferredDockerExecutor } from './executors/docker-deferred.js';
import type { Executor } from './executors/executor.js';
import { discoverGpus, queryGpuUse } from './gpus.js';
import { HealthMonitor } from './health.js';
import { GpuSampler } from './host-metrics.js';

/** The token the agent sends now (its credential may be rotated while it runs), and the coordinator it is connected to (CAS and credential calls go there). */
interface CurrentToken {
  token: string;
  httpUrl: string;
}

/** The real docker executor, made with the first build: its modules load only then. */
async function loadDockerExecutor(config: AgentConfig, current: CurrentToken): Promise<Executor> {
  const [{ DockerExecutor }, { CasCache }, { dockerClient }] = await Promise.all([import('./executors/docker-executor.js'), import('./cas-cache.js'), import('./docker/docker-client.js')]);
  // With a CA file, CAS downloads and uploads verify the coordinator with it (undici, loaded only then).
  const fetchFn = config.ca ? await fetchTrusting(config.ca.pem) : undefined;
  const cas = new CasCache({
    dir: join(config.workDir, 'cas'),
    get coordinatorUrl() {
      return current.httpUrl;
    },
    get token() {
      return current.token;
    },
    maxBytes: config.cacheMaxBytes,
    ...(fetchFn ? { fetch: fetchFn } : {}),
  });
  return new DockerExecutor(dockerClient(config.dockerHost), cas, config.workDir, { pushStallMs: config.pushStallTimeoutMs });
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
  const logger = createLogger({ name: 'kiln-agent', level: config.log.level, format: config.log.format, env: host.env });
  let executor: Executor;
  await mkdir(config.workDir, { recursive: true }).catch((err: unknown) => logger.warn({ work_dir: config.workDir, err: coerceError(err).message }, 'cannot create the work dir'));
  const current: CurrentToken = { token: config.token, httpUrl: config.httpUrl };
  // Enrolment (and rotation) code loads only for an agent that enrols or holds a credential.
  if (config.enrolToken !== null) {
    const { enrol } = await import('./enrol.js');
    try {
      current.token = await enrol({ httpUrl: config.coordinators.map((c) => c.httpUrl), enrolToken: config.enrolToken, tokenSource: config.tokenSource, name: config.name, credentialFile: config.credentialFile, logger, ...(config.ca ? { fetch: await fetchTrusting(config.ca.pem) } : {}) });
    } catch (err) {
      if (!isKilnError(err, 'E_CONFIG')) throw err;
      logger.fatal({ err: coerceError(err).message }, 'agent cannot enrol; not retrying');
      return EX_CONFIG;
    }
  }
  const ownCredential = current.token.startsWith('kiln_agent_');
  const engine = config.executor === 'docker' ? engineEndpoint(config.dockerHost) : null;
  if (engine === null) {
    const { NoopExecutor, noopOptionsFromEnv } = await import('./executors/noop-executor.js');
    executor = new NoopExecutor(host.arch, noopOptionsFromEnv(host.env));
  } else {
    executor = new DeferredDockerExecutor(engine, () => loadDockerExecutor(config, current));
    // The engine may still be starting (or restarting): wait for it with backoff.
    const backoff = new Backoff({ baseMs: 500, capMs: 15_000 });
    for (;;) {
      try {
        await executor.info();
        break;
      } catch (err) {
        const delay = backoff.next();
        logger.warn({ docker_host: config.dockerHost, err: coerceError(err).message, retry_in_ms: delay }, 'Docker Engine not reachable');
        await sleep(delay);
      }
    }
  }
  const gpus = engine !== null ? await discoverGpus(host.env) : [];
  const health = new HealthMonitor({
    workDir: config.workDir,
    minFreeBytes: config.minFreeDiskBytes,
    ping: engine !== null ? (signal) => engineGet(engine, '/_ping', signal) : null,
    logger,
  });
  const initial = await health.start();
  if (!initial.accepting) logger.warn({ problem: initial.problem }, 'not taking work yet');
  // nvidia-smi at most once per 5 s; heartbeats send the latest sample.
  const gpuUse = gpus.length > 0 ? new GpuSampler(() => queryGpuUse(host.env), 5_000) : undefined;
  // Tracing (issue 12): its modules load only when an OTLP endpoint is configured.
  const tracer = config.tracing ? await import('./tracing.js').then((m) => m.startAgentTracer(config.tracing!, { name: config.name, hostname: host.hostname }, logger)) : undefined;
  const agent = new Agent({
    url: config.wsUrl,
    coordinators: config.coordinators,
    onCoordinator: (endpoint) => (current.httpUrl = endpoint.httpUrl),
    ca: config.ca,
    token: current.token,
    ...(ownCredential
      ? {
          rotateCredential: async (credential: string) => {
            const { rotateCredential } = await import('./enrol.js');
            current.token = await rotateCredential({ httpUrl: current.httpUrl, credential, credentialFile: config.credentialFile, logger, ...(config.ca ? { fetch: await fetchTrusting(config.ca.pem) } : {}) });
            return current.token;
          },
          authHint: `agent credential ${config.credentialFile}: this agent was revoked or its credential is unknown here; ask an admin for a new enrolment token (kiln tokens create --agent --name ${config.name}), delete this file, put the token in ${config.tokenSource === config.credentialFile ? 'the token file' : config.tokenSource} and restart`,
        }
      : {}),
    name: config.name,
    labels: config.labels,
    maxJobs: config.maxJobs,
    extraPlatforms: config.extraPlatforms,
    executor,
    gpus,
    logger,
    health,
    ...(gpuUse ? { gpuUse } : {}),
    ...(tracer ? { tracer } : {}),
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
      logger.fatal({ err: coerceError(err).message }, 'agent cannot work with this coordinator; not retrying');
      return EX_CONFIG;
    }
    throw err;
  } finally {
    health.stop();
    await tracer?.shutdown(5_000);
  }
}

/** `kiln agent` for the CLI: its flags and how to run it with commander's option object. */
export const AGENT_COMMAND = {
  flags: [...settingFlags(AGENT_SETTINGS), ...AGENT_OPTIONS] as readonly FlagSpec[],
  helpAfter: settingsHelpFooter(AGENT_SETTINGS),
  run: runAgent,
};
