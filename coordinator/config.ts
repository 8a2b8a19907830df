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
 *   accept_timeout: 20s          # an assignment not accepted this long is offered elsewhere (default 2 x heartbeat, >= 10s)
 *   cutoff_cancel: 5m            # an agent cut off this long cancels its builds (sent in the welcome)
 *   default_platform: linux/amd64
 *   max_blob_bytes: 4294967296
 *   artifacts:
 *     retention: 30d             # finished, unpinned builds keep their artifacts this long
 *     gc_interval: 1h            # how often retention sweeps the store
 *     gc_grace: 1h               # blobs stored or relied on more recently are never deleted
 *   log: { level: info, format: json }
 *   cas:                         # where blobs are stored: local (data_dir/cas, the default) or s3
 *     backend: s3
 *     s3:                        # required with backend s3: endpoint, bucket, access_key, a secret
 *       endpoint: http://127.0.0.1:9000
 *       region: us-east-1
 *       bucket: kiln
 *       access_key: kiln
 *       secret_key_file: /etc/kiln/s3-secret   # or secret_key: ...
 *       prefix: kiln/
 *       path_style: true
 * Environment: KILN_CONFIG, KILN_LISTEN, KILN_DATA_DIR, KILN_AGENT_TOKEN_FILE,
 * KILN_API_TOKEN_FILE, KILN_HEARTBEAT_INTERVAL, KILN_LOST_AFTER, KILN_RECONNECT_GRACE,
 * KILN_ACCEPT_TIMEOUT, KILN_CUTOFF_CANCEL, KILN_LOG_LEVEL, KILN_LOG_FORMAT,
 * KILN_CAS_BACKEND, KILN_S3_ENDPOINT, KILN_S3_REGION, KILN_S3_BUCKET, KILN_S3_ACCESS_KEY,
 * KILN_S3_SECRET_KEY, KILN_S3_SECRET_KEY_FILE, KILN_S3_PREFIX, KILN_ARTIFACT_RETENTION,
 * KILN_GC_INTERVAL, KILN_GC_GRACE.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { z } from 'zod';
import {
  LogFileSchema,
  logSettings,
  configError,
  durationSetting,
  errnoCode,
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
  /** Sent to agents: cut off from the coordinator this long, they cancel their running builds (S). */
  cutoffCancelMs: number;
  defaultPlatform: string;
  maxBlobBytes: number;
  maxSpecBytes: number;
  /** false = no state file at all (benchmarks only). */
  persist: boolean;
  log: { level: LogLevel; format: LogFormat };
  cas: CasConfig;
  artifacts: { retentionMs: number; gcIntervalMs: number; gcGraceMs: number };
}

/** The S3 backend's settings, validated (endpoint is `scheme://host[:port]`, prefix ends in `/` or is empty). */
export interface S3CasConfig {
  endpoint: string;
  region: string;
  bucket: string;
  accessKey: string;
  secretKey: string;
  prefix: string;
  pathStyle: boolean;
}

export type CasConfig = { backend: 'local' } | { backend: 's3'; s3: S3CasConfig };

export interface CoordinatorFlags {
  config?: string;
  listen?: string;
  dataDir?: string;
  init?: boolean;
  heartbeatInterval?: string;
  lostAfter?: string;
  logLevel?: string;
  logFormat?: string;
  casBackend?: string;
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
  accept_timeout: Duration.optional(),
  cutoff_cancel: Duration.optional(),
  default_platform: z.string().optional(),
  max_blob_bytes: z.number().int().positive().optional(),
  artifacts: z.strictObject({ retention: Duration.optional(), gc_interval: Duration.optional(), gc_grace: Duration.optional() }).optional(),
  log: LogFileSchema.optional(),
  cas: z
    .strictObject({
      backend: z.enum(['local', 's3']).optional(),
      s3: z
        .strictObject({
          endpoint: z.string().optional(),
          region: z.string().optional(),
          bucket: z.string().optional(),
          access_key: z.string().optional(),
          secret_key: z.string().optional(),
          secret_key_file: z.string().optional(),
          prefix: z.string().optional(),
          path_style: z.boolean().optional(),
        })
        .optional(),
    })
    .optional(),
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

/** S3's bucket naming rules (the part kiln can check offline). */
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** The `cas` section: flag > env > file > local. The S3 settings are read and checked only for backend s3. */
function casSettings(
  flags: CoordinatorFlags,
  env: Record<string, string | undefined>,
  file: z.infer<typeof FileSchema>['cas'],
  read: (path: string) => string,
): CasConfig {
  const backend = flags.casBackend ?? env.KILN_CAS_BACKEND ?? file?.backend ?? 'local';
  if (backend !== 'local' && backend !== 's3') throw configError('cas.backend', `'${backend}' is not local or s3`);
  if (backend === 'local') return { backend };
  const s3 = file?.s3 ?? {};
  const required = (setting: string, envName: string, value: string | undefined): string => {
    if (!value) throw configError(setting, `required when cas.backend is s3 (set ${setting} in the config file or ${envName})`);
    return value;
  };
  const secretFile = (setting: string, path: string): string => {
    let text: string;
    try {
      text = read(resolve(path));
    } catch (err) {
      throw configError(setting, `${path} cannot be read (${errnoCode(err) ?? (err as Error).message})`);
    }
    const secret = text.trim();
    if (!secret) throw configError(setting, `${path} is empty`);
    return secret;
  };

  const endpointText = required('cas.s3.endpoint', 'KILN_S3_ENDPOINT', env.KILN_S3_ENDPOINT ?? s3.endpoint);
  let url: URL;
  try {
    url = new URL(endpointText);
  } catch {
    throw configError('cas.s3.endpoint', `'${endpointText}' is not a URL (use http://host:port or https://host)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw configError('cas.s3.endpoint', `unsupported scheme '${url.protocol}' in '${endpointText}' (use http:// or https://)`);
  if (url.pathname !== '/' || url.search || url.hash || url.username || url.password) {
    throw configError('cas.s3.endpoint', `'${endpointText}' must be scheme://host[:port], without a path, query or credentials`);
  }
  const bucket = required('cas.s3.bucket', 'KILN_S3_BUCKET', env.KILN_S3_BUCKET ?? s3.bucket);
  if (!BUCKET_RE.test(bucket) || bucket.includes('..')) {
    throw configError('cas.s3.bucket', `'${bucket}' is not a valid bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit)`);
  }
  const accessKey = required('cas.s3.access_key', 'KILN_S3_ACCESS_KEY', env.KILN_S3_ACCESS_KEY ?? s3.access_key);
  const secretKey =
    env.KILN_S3_SECRET_KEY ??
    (env.KILN_S3_SECRET_KEY_FILE !== undefined ? secretFile('cas.s3.secret_key_file', env.KILN_S3_SECRET_KEY_FILE) : undefined) ??
    s3.secret_key ??
    (s3.secret_key_file !== undefined ? secretFile('cas.s3.secret_key_file', s3.secret_key_file) : undefined);
  if (!secretKey) {
    throw configError('cas.s3.secret_key', 'required when cas.backend is s3 (set cas.s3.secret_key or cas.s3.secret_key_file in the config file, or KILN_S3_SECRET_KEY or KILN_S3_SECRET_KEY_FILE)');
  }
  const region = env.KILN_S3_REGION ?? s3.region ?? 'us-east-1';
  if (!/^[a-z0-9-]{1,64}$/.test(region)) throw configError('cas.s3.region', `'${region}' is not a region name (e.g. us-east-1)`);
  const prefixText = (env.KILN_S3_PREFIX ?? s3.prefix ?? 'kiln/').replace(/^\/+/, '');
  const prefix = prefixText === '' || prefixText.endsWith('/') ? prefixText : `${prefixText}/`;
  return { backend, s3: { endpoint: url.origin, region, bucket, accessKey, secretKey, prefix, pathStyle: s3.path_style ?? true } };
}

export function loadCoordinatorConfig(flags: CoordinatorFlags, host: ConfigEnvironment): Readonly<CoordinatorConfig> {
  const env = host.env;
  const configPath = flags.config ?? env.KILN_CONFIG;
  const file = configPath ? readConfigFile(configPath, FileSchema, host.readFile) : {};

  const listenText = flags.listen ?? env.KILN_LISTEN ?? file.listen ?? '127.0.0.1:8080';
  const heartbeat = flags.heartbeatInterval ?? env.KILN_HEARTBEAT_INTERVAL ?? file.heartbeat_interval ?? '10s';
  const heartbeatIntervalMs = durationSetting('heartbeat_interval', heartbeat);
  const lostText = flags.lostAfter ?? env.KILN_LOST_AFTER ?? file.lost_after;
  const lostAfterMs = lostText !== undefined ? durationSetting('lost_after', lostText) : heartbeatIntervalMs * 3;
  if (lostAfterMs <= heartbeatIntervalMs) throw configError('lost_after', `must be longer than heartbeat_interval (${heartbeatIntervalMs} ms)`);
  const defaultPlatform = file.default_platform ?? `linux/${ociArch(host.arch)}`;
  const pp = platformProblem(defaultPlatform);
  if (pp) throw configError('default_platform', pp);
  const log = logSettings(flags, env, file.log, host.isTTY);
  const agentTokenFile = env.KILN_AGENT_TOKEN_FILE ?? file.auth?.agent_token_file;
  const apiTokenFile = env.KILN_API_TOKEN_FILE ?? file.auth?.api_token_file;
  const cas = casSettings(flags, env, file.cas, host.readFile ?? ((p) => readFileSync(p, 'utf8')));

  return Object.freeze({
    listen: listenSetting('listen', listenText),
    dataDir: resolve(flags.dataDir ?? env.KILN_DATA_DIR ?? file.data_dir ?? defaultDataDir(env)),
    init: flags.init ?? false,
    agentTokenFile: agentTokenFile ? resolve(agentTokenFile) : undefined,
    apiTokenFile: apiTokenFile ? resolve(apiTokenFile) : undefined,
    heartbeatIntervalMs,
    lostAfterMs,
    reconnectGraceMs:
      (env.KILN_RECONNECT_GRACE ?? file.reconnect_grace) !== undefined
        ? durationSetting('reconnect_grace', (env.KILN_RECONNECT_GRACE ?? file.reconnect_grace)!)
        : Math.max(60_000, lostAfterMs),
    cancelGraceMs: file.cancel_grace !== undefined ? durationSetting('cancel_grace', file.cancel_grace) : 30_000,
    timeoutGraceMs: 60_000,
    acceptTimeoutMs:
      (env.KILN_ACCEPT_TIMEOUT ?? file.accept_timeout) !== undefined
        ? durationSetting('accept_timeout', (env.KILN_ACCEPT_TIMEOUT ?? file.accept_timeout)!)
        : Math.max(10_000, heartbeatIntervalMs * 2),
    cutoffCancelMs: durationSetting('cutoff_cancel', env.KILN_CUTOFF_CANCEL ?? file.cutoff_cancel ?? '5m'),
    defaultPlatform,
    maxBlobBytes: file.max_blob_bytes !== undefined ? intSetting('max_blob_bytes', file.max_blob_bytes, 1, Number.MAX_SAFE_INTEGER) : 4 * 1024 ** 3,
    maxSpecBytes: 4 * 1024 * 1024,
    persist: !(flags.noPersist ?? false),
    log,
    cas,
    artifacts: {
      retentionMs: durationSetting('artifacts.retention', env.KILN_ARTIFACT_RETENTION ?? file.artifacts?.retention ?? '30d'),
      gcIntervalMs: durationSetting('artifacts.gc_interval', env.KILN_GC_INTERVAL ?? file.artifacts?.gc_interval ?? '1h'),
      gcGraceMs: durationSetting('artifacts.gc_grace', env.KILN_GC_GRACE ?? file.artifacts?.gc_grace ?? '1h'),
    },
  });
}
