/**
 * The agent's configuration: `loadAgentConfig(flags, host)` merges defaults < config
 * file < environment < flags, validates every value (errors name the setting) and
 * returns a frozen config. Nothing else in the agent reads `process.env`.
 *
 * File (YAML), every key optional:
 *   coordinator: http://coordinator.example:8080   # or ws://...; /api/v1/agent is added
 *   token_file: /etc/kiln-agent/token
 *   name: s390x-builder-1
 *   labels: { gpu: "false", pool: wheels }
 *   max_jobs: 2
 *   platforms: [linux/s390x, linux/arm64]         # extra platforms, run under qemu emulation
 *   docker_host: unix:///var/run/docker.sock
 *   work_dir: /var/lib/kiln-agent
 *   cache_max: 20GiB                                # local CAS cache size (LRU eviction)
 *   min_free_disk: 512MiB                           # take no work with less free space in work_dir
 *   log: { level: info, format: json }
 * Environment: KILN_AGENT_CONFIG, KILN_COORDINATOR, KILN_AGENT_TOKEN_FILE,
 * KILN_AGENT_TOKEN, KILN_AGENT_NAME, KILN_AGENT_LABELS, KILN_AGENT_MAX_JOBS,
 * KILN_AGENT_PLATFORMS, DOCKER_HOST, KILN_AGENT_WORK_DIR, KILN_AGENT_CACHE_MAX, KILN_AGENT_MIN_FREE_DISK, KILN_LOG_LEVEL,
 * KILN_LOG_FORMAT; under systemd, $CREDENTIALS_DIRECTORY/token and $STATE_DIRECTORY.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import {
  AGENT_SOCKET_PATH,
  KilnError,
  LogFileSchema,
  logSettings,
  configError,
  errnoCode,
  intSetting,
  labelsSetting,
  LABEL_KEY_RE,
  LABEL_KEY_RULE,
  NAME_RE,
  NAME_RULE,
  platformProblem,
  readConfigFile,
  sizeSetting,
  type LogFormat,
  type LogLevel,
} from '../shared/index.js';

export interface AgentConfig {
  /** ws(s)://host:port/api/v1/agent */
  wsUrl: string;
  /** http(s)://host:port, for CAS downloads */
  httpUrl: string;
  token: string;
  tokenSource: string;
  name: string;
  labels: Record<string, string>;
  maxJobs: number;
  extraPlatforms: string[];
  dockerHost: string;
  workDir: string;
  /** Local CAS cache size limit in bytes. */
  cacheMaxBytes: number;
  /** Below this many free bytes in the work dir the agent takes no work. */
  minFreeDiskBytes: number;
  executor: 'docker' | 'noop';
  log: { level: LogLevel; format: LogFormat };
}

export interface AgentFlags {
  config?: string;
  coordinator?: string;
  tokenFile?: string;
  name?: string;
  labels?: string;
  maxJobs?: string;
  platforms?: string;
  dockerHost?: string;
  workDir?: string;
  cacheMax?: string;
  minFreeDisk?: string;
  executor?: string;
  logLevel?: string;
  logFormat?: string;
}

const FileSchema = z.strictObject({
  coordinator: z.string().optional(),
  token_file: z.string().optional(),
  name: z.string().optional(),
  labels: z.record(z.string().regex(LABEL_KEY_RE, `must be ${LABEL_KEY_RULE}`), z.string()).optional(),
  max_jobs: z.number().int().optional(),
  platforms: z.array(z.string()).optional(),
  docker_host: z.string().optional(),
  work_dir: z.string().optional(),
  cache_max: z.union([z.string(), z.number()]).optional(),
  min_free_disk: z.union([z.string(), z.number()]).optional(),
  log: LogFileSchema.optional(),
});

export interface AgentHost {
  env: Record<string, string | undefined>;
  hostname: string;
  isTTY: boolean;
  readFile?: (path: string) => string;
}

/** Accepts http(s)://, ws(s):// or host:port and returns both URL forms. */
export function coordinatorUrls(text: string): { wsUrl: string; httpUrl: string } {
  let u: URL;
  try {
    u = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw configError('coordinator', `'${text}' is not a URL (use http://host:port or ws://host:port)`);
  }
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw configError('coordinator', `unsupported scheme '${u.protocol}' in '${text}'`);
  const base = `${u.hostname.includes(':') ? `[${u.hostname}]` : u.hostname}${u.port ? `:${u.port}` : ''}`;
  const path = u.pathname.replace(/\/+$/, '');
  const prefix = path.endsWith(AGENT_SOCKET_PATH) ? path.slice(0, -AGENT_SOCKET_PATH.length) : path;
  return { wsUrl: `${secure ? 'wss' : 'ws'}://${base}${prefix}${AGENT_SOCKET_PATH}`, httpUrl: `${secure ? 'https' : 'http'}://${base}${prefix}` };
}

function readTokenFile(path: string, read: (p: string) => string): string {
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    throw new KilnError('E_CONFIG', `agent token file ${path} cannot be read (${errnoCode(err) ?? (err as Error).message})`, { cause: err });
  }
  const token = text.trim();
  if (!token) throw new KilnError('E_CONFIG', `agent token file ${path} is empty`);
  return token;
}

export function loadAgentConfig(flags: AgentFlags, host: AgentHost): Readonly<AgentConfig> {
  const env = host.env;
  const read = host.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  const configPath = flags.config ?? env.KILN_AGENT_CONFIG;
  const file = configPath ? readConfigFile(configPath, FileSchema, read) : {};

  const coordinator = flags.coordinator ?? env.KILN_COORDINATOR ?? file.coordinator;
  if (!coordinator) throw configError('coordinator', 'no coordinator given (use --coordinator http://host:port or KILN_COORDINATOR)');
  const urls = coordinatorUrls(coordinator);

  const tokenFile = flags.tokenFile ?? env.KILN_AGENT_TOKEN_FILE ?? file.token_file ?? (env.CREDENTIALS_DIRECTORY ? join(env.CREDENTIALS_DIRECTORY, 'token') : undefined);
  let token: string;
  let tokenSource: string;
  if (tokenFile) {
    token = readTokenFile(tokenFile, read);
    tokenSource = tokenFile;
  } else if (env.KILN_AGENT_TOKEN) {
    token = env.KILN_AGENT_TOKEN.trim();
    tokenSource = 'KILN_AGENT_TOKEN';
  } else {
    throw configError('token_file', 'no agent token (use --token-file FILE, KILN_AGENT_TOKEN_FILE or KILN_AGENT_TOKEN; the coordinator prints where its agent token is)');
  }

  const name = flags.name ?? env.KILN_AGENT_NAME ?? file.name ?? host.hostname;
  if (!NAME_RE.test(name)) throw configError('name', `'${name}' is not a valid agent name (${NAME_RULE})`);

  const labelsText = flags.labels ?? env.KILN_AGENT_LABELS;
  const labels = labelsText !== undefined ? labelsSetting('labels', labelsText) : (file.labels ?? {});

  const maxJobsValue = flags.maxJobs ?? env.KILN_AGENT_MAX_JOBS ?? file.max_jobs ?? 2;
  const maxJobs = intSetting('max_jobs', maxJobsValue, 1, 1024);

  const platformsText = flags.platforms ?? env.KILN_AGENT_PLATFORMS;
  const extraPlatforms = platformsText !== undefined ? platformsText.split(',').map((s) => s.trim()).filter(Boolean) : (file.platforms ?? []);
  for (const p of extraPlatforms) {
    const problem = platformProblem(p);
    if (problem) throw configError('platforms', problem);
  }

  const dockerHost = flags.dockerHost ?? env.DOCKER_HOST ?? file.docker_host ?? 'unix:///var/run/docker.sock';
  if (!/^(unix|tcp|http):\/\//.test(dockerHost)) throw configError('docker_host', `'${dockerHost}' must be unix:///path or tcp://host:port`);

  const workDir = resolve(flags.workDir ?? env.KILN_AGENT_WORK_DIR ?? file.work_dir ?? env.STATE_DIRECTORY ?? join(env.HOME || homedir(), '.cache', 'kiln-agent'));

  const cacheMaxBytes = sizeSetting('cache_max', flags.cacheMax ?? env.KILN_AGENT_CACHE_MAX ?? file.cache_max ?? '20GiB');

  const minFreeDiskBytes = sizeSetting('min_free_disk', flags.minFreeDisk ?? env.KILN_AGENT_MIN_FREE_DISK ?? file.min_free_disk ?? '512MiB');

  const executor = flags.executor ?? 'docker';
  if (executor !== 'docker' && executor !== 'noop') throw configError('executor', `'${executor}' is not docker or noop`);

  const log = logSettings(flags, env, file.log, host.isTTY);
  return Object.freeze({ ...urls, token, tokenSource, name, labels, maxJobs, extraPlatforms, dockerHost, workDir, cacheMaxBytes, minFreeDiskBytes, executor, log });
}
