/**
 * The coordinator's configuration: `loadCoordinatorConfig(flags, env)` merges defaults <
 * config file < environment < flags, validates every value (errors name the setting),
 * normalises durations to ms and paths to absolute, and returns a frozen config. Nothing
 * else in the coordinator reads `process.env`.
 *
 * File (YAML), every key optional:
 *   listen: 127.0.0.1:8080
 *   data_dir: /var/lib/kiln
 *   auth: { agent_token_file: /etc/kiln/agent-token, api_token_file: /etc/kiln/api-token }
 *   heartbeat_interval: 10s      # sent to agents in the welcome; jittered by them
 *   lost_after: 30s              # default 3 x heartbeat_interval
 *   reconnect_grace: 60s         # after a restart, time for agents to reclaim attempts
 *   default_platform: linux/amd64
 *   max_blob_bytes: 4294967296
 *   log: { level: info, format: json }
 * Environment: KILN_CONFIG, KILN_LISTEN, KILN_DATA_DIR, KILN_AGENT_TOKEN_FILE,
 * KILN_API_TOKEN_FILE, KILN_HEARTBEAT_INTERVAL, KILN_LOG_LEVEL, KILN_LOG_FORMAT.
 */
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { z } from 'zod';
import {
  LogFileSchema,
  logSettings,
  configError,
  durationSetting,
  intSetting,
  listenSetting,
  ociArch,
  platformProblem,
  readConfigFile,
  type LogFormat,
  type LogLevel,
} from '../shared/index.js';

export interface CoordinatorConfig {
  listen: { host: string; port: number };
  dataDir: string;
  /** Create a new state file in an existing data dir that has none. */
  init: boolean;
  agentTokenFile: string | undefined;
  apiTokenFile: string | undefined;
  heartbeatIntervalMs: number;
  lostAfterMs: number;
  reconnectGraceMs: number;
  cancelGraceMs: number;
  timeoutGraceMs: number;
  acceptTimeoutMs: number;
  defaultPlatform: string;
  maxBlobBytes: number;
  maxSpecBytes: number;
  /** false = no state file at all (benchmarks only). */
  persist: boolean;
  log: { level: LogLevel; format: LogFormat };
}

export interface CoordinatorFlags {
  config?: string;
  listen?: string;
  dataDir?: string;
  init?: boolean;
  heartbeatInterval?: string;
  lostAfter?: string;
  logLevel?: string;
  logFormat?: string;
  /** Benchmarks only. */
  noPersist?: boolean;
}

const Duration = z.union([z.string(), z.number().positive()]);

const FileSchema = z.strictObject({
  listen: z.string().optional(),
  data_dir: z.string().optional(),
  auth: z.strictObject({ agent_token_file: z.string().optional(), api_token_file: z.string().optional() }).optional(),
  heartbeat_interval: Duration.optional(),
  lost_after: Duration.optional(),
  reconnect_grace: Duration.optional(),
  cancel_grace: Duration.optional(),
  default_platform: z.string().optional(),
  max_blob_bytes: z.number().int().positive().optional(),
  log: LogFileSchema.optional(),
});

export interface ConfigEnvironment {
  env: Record<string, string | undefined>;
  /** `process.arch` of the coordinator host. */
  arch: string;
  isTTY: boolean;
  readFile?: (path: string) => string;
}

function defaultDataDir(env: Record<string, string | undefined>): string {
  const state = env.XDG_STATE_HOME || resolve(env.HOME || homedir(), '.local', 'state');
  return resolve(state, 'kiln', 'coordinator');
}

export function loadCoordinatorConfig(flags: CoordinatorFlags, host: ConfigEnvironment): Readonly<CoordinatorConfig> {
  const env = host.env;
  const configPath = flags.config ?? env.KILN_CONFIG;
  const file = configPath ? readConfigFile(configPath, FileSchema, host.readFile) : {};

  const listenText = flags.listen ?? env.KILN_LISTEN ?? file.listen ?? '127.0.0.1:8080';
  const heartbeat = flags.heartbeatInterval ?? env.KILN_HEARTBEAT_INTERVAL ?? file.heartbeat_interval ?? '10s';
  const heartbeatIntervalMs = durationSetting('heartbeat_interval', heartbeat);
  const lostText = flags.lostAfter ?? file.lost_after;
  const lostAfterMs = lostText !== undefined ? durationSetting('lost_after', lostText) : heartbeatIntervalMs * 3;
  if (lostAfterMs <= heartbeatIntervalMs) throw configError('lost_after', `must be longer than heartbeat_interval (${heartbeatIntervalMs} ms)`);
  const defaultPlatform = file.default_platform ?? `linux/${ociArch(host.arch)}`;
  const pp = platformProblem(defaultPlatform);
  if (pp) throw configError('default_platform', pp);
  const log = logSettings(flags, env, file.log, host.isTTY);
  const agentTokenFile = env.KILN_AGENT_TOKEN_FILE ?? file.auth?.agent_token_file;
  const apiTokenFile = env.KILN_API_TOKEN_FILE ?? file.auth?.api_token_file;

  return Object.freeze({
    listen: listenSetting('listen', listenText),
    dataDir: resolve(flags.dataDir ?? env.KILN_DATA_DIR ?? file.data_dir ?? defaultDataDir(env)),
    init: flags.init ?? false,
    agentTokenFile: agentTokenFile ? resolve(agentTokenFile) : undefined,
    apiTokenFile: apiTokenFile ? resolve(apiTokenFile) : undefined,
    heartbeatIntervalMs,
    lostAfterMs,
    reconnectGraceMs: file.reconnect_grace !== undefined ? durationSetting('reconnect_grace', file.reconnect_grace) : Math.max(60_000, lostAfterMs),
    cancelGraceMs: file.cancel_grace !== undefined ? durationSetting('cancel_grace', file.cancel_grace) : 30_000,
    timeoutGraceMs: 60_000,
    acceptTimeoutMs: Math.max(10_000, heartbeatIntervalMs * 2),
    defaultPlatform,
    maxBlobBytes: file.max_blob_bytes !== undefined ? intSetting('max_blob_bytes', file.max_blob_bytes, 1, Number.MAX_SAFE_INTEGER) : 4 * 1024 ** 3,
    maxSpecBytes: 4 * 1024 * 1024,
    persist: !(flags.noPersist ?? false),
    log,
  });
}
