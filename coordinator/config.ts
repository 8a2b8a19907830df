/**
 * The coordinator's configuration. `COORDINATOR_SETTINGS` is its one table of settings:
 * each row gives the config file key, the environment variable, the flag (the row id in
 * kebab case), the default and the description, and `kiln coordinator --help` and the
 * README's table are made from it. `loadCoordinatorConfig(flags, host)` reads the table
 * with one precedence rule, defaults < config file < environment < flags, validates
 * every value (errors name the setting), normalises durations to ms and paths to
 * absolute, and returns a frozen config. Nothing else in the coordinator reads
 * `process.env`. `config/coordinator.example.yaml` shows the file.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import type { EngineTimings } from './builds/engine-state.js';
import { loadRegistryCredentials, NO_CREDENTIALS, type RegistryCredentials } from './registry/credentials.js';
import type { LayerCacheConfig } from './builds/layer-cache-refs.js';
import { parseRateSpec, type RateSpec } from './access/rate-limit.js';
import { allowedHostsSettingType, webhooksSettingType, type WebhookSettings } from './webhooks/webhook-settings.js';
import { redactPostgresUrl } from './state/pg/pg-url.js';
import { advertiseUrlType, LEASE_TTL_MAX_MS, LEASE_TTL_MIN_MS, stateType } from './cluster/cluster-settings.js';
import {
  CACHE_MODES,
  LOG_SETTINGS,
  SettingsReader,
  configError,
  errnoCode,
  coerceError,
  fileSchema,
  kebab,
  ociArch,
  platformProblem,
  readConfigFile,
  settingTypes as t,
  type SettingFlags,
  type SettingTable,
  type LogFormat,
  type LogLevel,
  MAX_CONCURRENCY,
  NAME_RE,
  NAME_RULE,
  type SettingType,
  loadTracingConfig,
  tracingSettings,
  type TracingConfig,
} from '../shared/index.js';

/** Concurrency group limits (issue 11): `name=n,...` as text, a map in the file; names like node names, limits 1..10000. */
const concurrencyGroupsType: SettingType<ReadonlyMap<string, number>> = {
  hint: 'name=n,...',
  file: z.record(z.string(), z.number().int()),
  parse: (setting: string, v: unknown) => {
    const entries: Array<[string, unknown]> =
      typeof v === 'string'
        ? v
            .split(',')
            .map((p) => p.trim())
            .filter(Boolean)
            .map((p) => {
              const i = p.indexOf('=');
              if (i <= 0) throw configError(setting, `'${p}' is not name=limit`);
              return [p.slice(0, i).trim(), p.slice(i + 1).trim()];
            })
        : Object.entries(v as Record<string, unknown>);
    if (entries.length > 1000) throw configError(setting, `too many groups (${entries.length}; at most 1000)`);
    const out = new Map<string, number>();
    for (const [name, raw] of entries) {
      if (!NAME_RE.test(name)) throw configError(setting, `group name '${name.slice(0, 80)}' is not valid (use ${NAME_RULE})`);
      const n = typeof raw === 'number' ? raw : Number(raw);
      if (!Number.isInteger(n) || n < 1 || n > MAX_CONCURRENCY) throw configError(setting, `limit of group '${name}' must be an integer in 1..${MAX_CONCURRENCY} (got '${String(raw)}')`);
      out.set(name, n);
    }
    return out;
  },
};

/** A token-bucket rate (`50/s burst 200`, `600/m`) or `off` (access/rate-limit.ts). */
const rateType: SettingType<RateSpec | null> = {
  hint: 'N/s burst M|off',
  file: z.string(),
  parse: (setting: string, v: unknown) => {
    if (typeof v !== 'string') throw configError(setting, `'${String(v)}' is not a rate (write e.g. '50/s burst 200', or off)`);
    return parseRateSpec(setting, v);
  },
};

export const COORDINATOR_SETTINGS = {
  listen: { type: t.listen(), key: 'listen', env: 'KILN_LISTEN', default: '127.0.0.1:8080', description: 'address to listen on (:8080 for all interfaces)' },
  dataDir: {
    type: t.text('dir'),
    key: 'data_dir',
    env: 'KILN_DATA_DIR',
    defaultText: '$STATE_DIRECTORY/data under systemd, else $XDG_STATE_HOME/kiln/coordinator (~/.local/state/kiln/coordinator)',
    description: 'state, logs, CAS and tokens',
  },
  state: {
    type: stateType,
    key: 'state',
    env: 'KILN_STATE',
    defaultText: 'empty: the embedded state (state file and journal) in data_dir',
    description: 'where the state is kept: empty for the embedded state in data_dir, or a PostgreSQL URL (postgres://user:password@host:port/database), which several coordinators may share (one leads, the others stand by)',
  },
  advertiseUrl: {
    type: advertiseUrlType,
    key: 'advertise_url',
    env: 'KILN_ADVERTISE_URL',
    defaultText: 'the listen address as a URL',
    description: 'the URL other coordinators, agents and clients reach this coordinator at, http(s)://host[:port] (GET /api/v1/cluster lists it; standbys send writes and agents to the leader\'s)',
  },
  leaseTtl: {
    type: t.duration(),
    key: 'lease_ttl',
    env: 'KILN_LEASE_TTL',
    default: '10s',
    description: 'with a PostgreSQL state: the leader lease; a leader none of whose renewals landed this long steps down, and a standby takes over once it expires (2s-5m)',
  },
  agentTokenFile: { type: t.text('file'), key: 'auth.agent_token_file', env: 'KILN_AGENT_TOKEN_FILE', defaultText: 'data_dir/tokens/agent, created', description: 'the token agents present' },
  apiTokenFile: { type: t.text('file'), key: 'auth.api_token_file', env: 'KILN_API_TOKEN_FILE', defaultText: 'data_dir/tokens/api, created', description: 'the token API clients present' },
  tlsCert: {
    type: t.text('file'),
    key: 'tls.cert',
    env: 'KILN_TLS_CERT',
    description: 'PEM certificate (chain) to serve HTTPS and WSS with; with tls.key. Reloaded on SIGHUP and when the file changes',
  },
  tlsKey: { type: t.text('file'), key: 'tls.key', env: 'KILN_TLS_KEY', description: 'PEM private key of tls.cert; with tls.cert' },
  heartbeatInterval: { type: t.duration(), key: 'heartbeat_interval', env: 'KILN_HEARTBEAT_INTERVAL', default: '10s', description: 'agent heartbeat interval (sent to agents, who jitter it by 10%)' },
  lostAfter: { type: t.duration(), key: 'lost_after', env: 'KILN_LOST_AFTER', defaultText: '3 x heartbeat_interval', description: 'an agent silent this long is lost; its attempts are re-queued' },
  reconnectGrace: { type: t.duration(), key: 'reconnect_grace', env: 'KILN_RECONNECT_GRACE', defaultText: 'lost_after, at least 60s', description: 'after a restart, time for agents to reclaim their attempts' },
  cancelGrace: { type: t.duration(), key: 'cancel_grace', env: 'KILN_CANCEL_GRACE', default: '30s', description: 'a cancelled attempt its agent has not confirmed this long is recorded as cancelled' },
  acceptTimeout: { type: t.duration(), key: 'accept_timeout', env: 'KILN_ACCEPT_TIMEOUT', defaultText: '2 x heartbeat_interval, at least 10s', description: 'an assignment not accepted this long is offered elsewhere' },
  cutoffCancel: { type: t.duration(), key: 'cutoff_cancel', env: 'KILN_CUTOFF_CANCEL', default: '5m', description: 'sent to agents: cut off from the coordinator this long, they cancel their builds' },
  defaultPlatform: { type: t.text('platform'), key: 'default_platform', env: 'KILN_DEFAULT_PLATFORM', defaultText: 'linux/ and the host arch', description: 'platform of nodes that name none' },
  registryCredentialsFile: {
    type: t.text('file'),
    key: 'registries.credentials_file',
    env: 'KILN_REGISTRY_CREDENTIALS_FILE',
    description: 'YAML file: registry host -> username + password_file, or token_file (sent only to agents pushing to or pulling from there)',
  },
  secretsKeyFile: {
    type: t.text('file'),
    key: 'secrets.key_file',
    env: 'KILN_SECRETS_KEY_FILE',
    defaultText: 'data_dir/keys/secrets.key, created on the first secret',
    description: 'key (32 bytes, base64) the build secrets are encrypted with at rest; keep it outside the data dir (a systemd credential) to keep backups of the data dir useless without it',
  },
  maxBlobBytes: { type: t.size(), key: 'max_blob_bytes', env: 'KILN_MAX_BLOB_BYTES', default: '4GiB', description: 'largest blob (context, artifact) the CAS accepts' },
  artifactRetention: { type: t.duration(), key: 'artifacts.retention', env: 'KILN_ARTIFACT_RETENTION', default: '30d', description: 'finished, unpinned builds keep their artifacts this long' },
  gcInterval: { type: t.duration(), key: 'artifacts.gc_interval', env: 'KILN_GC_INTERVAL', default: '1h', description: 'how often the retention sweep runs' },
  gcGrace: { type: t.duration(), key: 'artifacts.gc_grace', env: 'KILN_GC_GRACE', default: '1h', description: 'blobs stored or relied on more recently are never deleted' },
  ...LOG_SETTINGS,
  casBackend: { type: t.oneOf(['local', 's3']), key: 'cas.backend', env: 'KILN_CAS_BACKEND', default: 'local', description: 'where blobs are stored: data_dir/cas, or an S3-compatible store' },
  s3Endpoint: { type: t.text('url'), key: 'cas.s3.endpoint', env: 'KILN_S3_ENDPOINT', description: 'S3 endpoint, scheme://host[:port] (required with cas.backend s3)' },
  s3Region: { type: t.text('region'), key: 'cas.s3.region', env: 'KILN_S3_REGION', default: 'us-east-1', description: 'S3 region' },
  s3Bucket: { type: t.text('bucket'), key: 'cas.s3.bucket', env: 'KILN_S3_BUCKET', description: 'S3 bucket (required with cas.backend s3)' },
  s3AccessKey: { type: t.text('key'), key: 'cas.s3.access_key', env: 'KILN_S3_ACCESS_KEY', description: 'S3 access key (required with cas.backend s3)' },
  s3SecretKey: { type: t.text('secret'), key: 'cas.s3.secret_key', env: 'KILN_S3_SECRET_KEY', secret: true, description: 'S3 secret key (this or cas.s3.secret_key_file with cas.backend s3)' },
  s3SecretKeyFile: { type: t.text('file'), key: 'cas.s3.secret_key_file', env: 'KILN_S3_SECRET_KEY_FILE', description: 'file holding the S3 secret key' },
  s3Prefix: { type: t.text('prefix'), key: 'cas.s3.prefix', env: 'KILN_S3_PREFIX', default: 'kiln/', description: 'key prefix of every object' },
  s3PathStyle: { type: t.bool(), key: 'cas.s3.path_style', env: 'KILN_S3_PATH_STYLE', default: true, description: 'path-style requests (MinIO, Garage); false for virtual-hosted style' },
  cacheRegistry: {
    type: t.text('repository'),
    key: 'cache.registry',
    env: 'KILN_CACHE_REGISTRY',
    description: 'layer cache: registry repository of the BuildKit cache refs, host[:port]/path (none: no layer cache)',
  },
  cacheKeep: {
    type: t.int(0, 1000),
    key: 'cache.keep',
    env: 'KILN_CACHE_KEEP',
    default: 5,
    description: 'layer cache: versioned cache tags kept per node and platform; older ones are deleted from the registry every artifacts.gc_interval (0: push only the moving tag)',
  },
  cacheMode: { type: t.oneOf(CACHE_MODES), key: 'cache.mode', env: 'KILN_CACHE_MODE', default: 'readwrite', description: 'layer cache use when cache.registry is set: readwrite (import and push), read (import only) or off; builds and nodes may override it' },
  concurrencyGroups: {
    type: concurrencyGroupsType,
    key: 'concurrency_groups',
    env: 'KILN_CONCURRENCY_GROUPS',
    description: 'concurrency group limits shared by every build, name=n,... (a map in the file): at most n nodes of the group hold an agent slot at once',
  },
  ...tracingSettings('kiln-coordinator'),
  rateLimitPerKey: {
    type: rateType,
    key: 'rate_limit.per_key',
    env: 'KILN_RATE_LIMIT_PER_KEY',
    default: '100/s burst 500',
    description: 'API calls per API key (token bucket; 429 with Retry-After when empty), or off; agents are not limited',
  },
  rateLimitPerAddress: {
    type: rateType,
    key: 'rate_limit.per_address',
    env: 'KILN_RATE_LIMIT_PER_ADDRESS',
    default: '200/s burst 1000',
    description: 'API calls per source address, with or without a valid key (token bucket), or off; agents are not limited',
  },
  webhooks: {
    type: webhooksSettingType,
    key: 'webhooks.hooks',
    env: 'KILN_WEBHOOKS',
    description:
      'the coordinator\'s webhooks, a list (JSON text in the flag or environment) of {name, url, events: [build, node], build_states, node_states, secret_file}: every build\'s state changes are POSTed to url, signed with the secret file (read at start, mode 0600)',
  },
  webhookAllowedHosts: {
    type: allowedHostsSettingType,
    key: 'webhooks.allowed_hosts',
    env: 'KILN_WEBHOOK_ALLOWED_HOSTS',
    defaultText: 'none: per-build webhooks are refused',
    description: 'hosts a build\'s own webhooks (notify: in the spec) may call: names, addresses, *.domain, or * for any; :port for a port other than 80 and 443',
  },
  webhookTimeout: { type: t.duration(), key: 'webhooks.timeout', env: 'KILN_WEBHOOK_TIMEOUT', default: '10s', description: 'time limit of one webhook request' },
  webhookAttempts: { type: t.int(1, 20), key: 'webhooks.attempts', env: 'KILN_WEBHOOK_ATTEMPTS', default: 6, description: 'attempts per webhook delivery (network errors, 5xx and 429 are retried)' },
  webhookBackoff: {
    type: t.duration(),
    key: 'webhooks.backoff',
    env: 'KILN_WEBHOOK_BACKOFF',
    default: '5s',
    description: 'first webhook retry delay ceiling; doubles per attempt up to 5m, full jitter; a longer Retry-After wins (up to 1h)',
  },
  webhookQueue: { type: t.int(1, 100_000), key: 'webhooks.queue', env: 'KILN_WEBHOOK_QUEUE', default: 1000, description: 'events waiting per webhook; when full the oldest is dropped (counted and logged)' },
} as const satisfies SettingTable;

const FileSchema = fileSchema(COORDINATOR_SETTINGS);

/** The engine's timings (heartbeat interval, lost and grace periods, accept timeout) come from here too. */
export interface CoordinatorConfig extends EngineTimings {
  listen: { host: string; port: number };
  dataDir: string;
  /** Where the state is kept: the embedded state in dataDir, or a PostgreSQL database (url: never log it; `location` is redacted). */
  state: { kind: 'embedded' } | { kind: 'postgres'; url: string; location: string };
  /** The URL this coordinator is reached at (advertise_url); null: its listen address, known once it listens. */
  advertiseUrl: string | null;
  /** The leader lease's TTL (lease_ttl; PostgreSQL state only). */
  leaseTtlMs: number;
  /** Create a new state file in an existing data dir that has none. */
  init: boolean;
  agentTokenFile: string | undefined;
  apiTokenFile: string | undefined;
  /** HTTPS and WSS with this certificate and key (absolute paths); null: plain HTTP. */
  tls: { certFile: string; keyFile: string } | null;
  /** Sent to agents: cut off from the coordinator this long, they cancel their running builds (S). */
  cutoffCancelMs: number;
  defaultPlatform: string;
  maxBlobBytes: number;
  maxSpecBytes: number;
  /** false = no state file at all (benchmarks only). */
  persist: boolean;
  /** true = the journal is written but never synced (the dispatch benchmark only; set in code, no flag). */
  unsyncedJournal?: boolean;
  log: { level: LogLevel; format: LogFormat };
  cas: CasConfig;
  artifacts: { retentionMs: number; gcIntervalMs: number; gcGraceMs: number };
  /** Registry credentials by host (read at start; see registry/credentials.ts). */
  registries: RegistryCredentials;
  /** The key file of the build secrets (undefined: data_dir/keys/secrets.key). */
  secretsKeyFile: string | undefined;
  /** The fleet-wide layer cache; null when no cache registry is configured. */
  cache: LayerCacheConfig | null;
  /** Concurrency group limits (issue 11), by group name. */
  concurrencyGroups: ReadonlyMap<string, number>;
  /** OpenTelemetry traces (issue 12); null: off. */
  tracing: TracingConfig | null;
  /** API rate limits (null: off). */
  rateLimit: { perKey: RateSpec | null; perAddress: RateSpec | null };
  /** Webhooks (issue 13): the coordinator's hooks, the hosts per-build hooks may call, delivery limits. */
  webhooks: WebhookSettings;
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

/** `kiln coordinator`'s flags: one per setting, plus the options that are not settings. */
export interface CoordinatorFlags extends SettingFlags<typeof COORDINATOR_SETTINGS> {
  /** The config file (also KILN_CONFIG). */
  config?: string;
  init?: boolean;
  /** Benchmarks only. */
  noPersist?: boolean;
}

/** `kiln coordinator`'s options that are not settings (commander form). */
export const COORDINATOR_OPTIONS = [
  { flags: '--config <file>', description: 'YAML config file [env KILN_CONFIG]', hidden: false },
  { flags: '--init', description: 'create a new empty state in an existing data dir that has none', hidden: false },
  { flags: '--no-persist', description: 'keep state in memory only (benchmarks)', hidden: true },
] as const;

export interface ConfigEnvironment {
  env: Record<string, string | undefined>;
  /** `process.arch` of the coordinator host. */
  arch: string;
  isTTY: boolean;
  readFile?: (path: string) => string;
}

type Reader = SettingsReader<typeof COORDINATOR_SETTINGS>;

function defaultDataDir(env: Record<string, string | undefined>): string {
  // systemd's StateDirectory= (a colon-separated list when it names several: the first). A
  // subdirectory, so the first start creates it and knows to begin a new state, and a state
  // file lost later is still refused (systemd creates the StateDirectory itself, empty).
  const stateDirectory = env.STATE_DIRECTORY?.split(':')[0];
  if (stateDirectory) return resolve(stateDirectory, 'data');
  const state = env.XDG_STATE_HOME || resolve(env.HOME || homedir(), '.local', 'state');
  return resolve(state, 'kiln', 'coordinator');
}

/** S3's bucket naming rules (the part kiln can check offline). */
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** The `cas` section. The S3 settings are read and checked only for backend s3. */
function casSettings(s: Reader, read: (path: string) => string): CasConfig {
  const backend = s.need('casBackend');
  if (backend === 'local') return { backend };
  const required = (id: 's3Endpoint' | 's3Bucket' | 's3AccessKey'): string => {
    const value = s.get(id);
    const row = s.table[id];
    if (!value) throw configError(row.key, `required when cas.backend is s3 (set ${row.key} in the config file, --${kebab(id)} or ${row.env})`);
    return value;
  };
  const secretFile = (path: string): string => {
    let text: string;
    try {
      text = read(resolve(path));
    } catch (err) {
      throw configError('cas.s3.secret_key_file', `${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`);
    }
    const secret = text.trim();
    if (!secret) throw configError('cas.s3.secret_key_file', `${path} is empty`);
    return secret;
  };

  const endpointText = required('s3Endpoint');
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
  const bucket = required('s3Bucket');
  if (!BUCKET_RE.test(bucket) || bucket.includes('..')) {
    throw configError('cas.s3.bucket', `'${bucket}' is not a valid bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit)`);
  }
  const accessKey = required('s3AccessKey');
  // The secret and its file are one choice: the higher layer wins, the secret itself on a tie.
  const secretFirst = s.rank('s3SecretKey') >= s.rank('s3SecretKeyFile');
  const secretPath = s.get('s3SecretKeyFile');
  const secretKey = (secretFirst ? s.get('s3SecretKey') : undefined) ?? (secretPath !== undefined ? secretFile(secretPath) : undefined);
  if (!secretKey) {
    throw configError('cas.s3.secret_key', 'required when cas.backend is s3 (set cas.s3.secret_key or cas.s3.secret_key_file in the config file, or KILN_S3_SECRET_KEY or KILN_S3_SECRET_KEY_FILE)');
  }
  const region = s.need('s3Region');
  if (!/^[a-z0-9-]{1,64}$/.test(region)) throw configError('cas.s3.region', `'${region}' is not a region name (e.g. us-east-1)`);
  const prefixText = s.need('s3Prefix').replace(/^\/+/, '');
  const prefix = prefixText === '' || prefixText.endsWith('/') ? prefixText : `${prefixText}/`;
  return { backend, s3: { endpoint: url.origin, region, bucket, accessKey, secretKey, prefix, pathStyle: s.need('s3PathStyle') } };
}

export function loadCoordinatorConfig(flags: CoordinatorFlags, host: ConfigEnvironment): Readonly<CoordinatorConfig> {
  const env = host.env;
  const configPath = flags.config ?? env.KILN_CONFIG;
  const file = configPath ? readConfigFile(configPath, FileSchema, host.readFile) : {};
  const s: Reader = new SettingsReader(COORDINATOR_SETTINGS, { flags: flags as Record<string, unknown>, env, file });

  const heartbeatIntervalMs = s.need('heartbeatInterval');
  const lostAfterMs = s.get('lostAfter') ?? heartbeatIntervalMs * 3;
  if (lostAfterMs <= heartbeatIntervalMs) throw configError('lost_after', `must be longer than heartbeat_interval (${heartbeatIntervalMs} ms)`);
  const defaultPlatform = s.get('defaultPlatform') ?? `linux/${ociArch(host.arch)}`;
  const pp = platformProblem(defaultPlatform);
  if (pp) throw configError('default_platform', pp);
  const maxBlobBytes = s.need('maxBlobBytes');
  if (maxBlobBytes < 1) throw configError('max_blob_bytes', `'${maxBlobBytes}' is not a positive byte size`);
  const agentTokenFile = s.get('agentTokenFile');
  const apiTokenFile = s.get('apiTokenFile');
  const tlsCert = s.get('tlsCert');
  const tlsKey = s.get('tlsKey');
  if ((tlsCert === undefined || tlsCert === '') !== (tlsKey === undefined || tlsKey === '')) {
    const [missing, given] = tlsCert ? (['tls.key', 'tls.cert'] as const) : (['tls.cert', 'tls.key'] as const);
    const row = missing === 'tls.key' ? s.table.tlsKey : s.table.tlsCert;
    throw configError(missing, `required with ${given} (set ${missing} in the config file, --${kebab(missing === 'tls.key' ? 'tlsKey' : 'tlsCert')} or ${row.env})`);
  }
  const cas = casSettings(s, host.readFile ?? ((p) => readFileSync(p, 'utf8')));
  const credentialsFile = s.get('registryCredentialsFile');
  const registries = credentialsFile ? loadRegistryCredentials(resolve(credentialsFile), host.readFile) : NO_CREDENTIALS;

  const cacheRegistry = s.get('cacheRegistry');
  let cache: LayerCacheConfig | null = null;
  if (cacheRegistry !== undefined && cacheRegistry !== '') {
    const problem = cacheRepositoryProblem(cacheRegistry);
    if (problem) throw configError('cache.registry', problem);
    cache = { registry: cacheRegistry, mode: s.need('cacheMode'), keep: s.need('cacheKeep') };
  }

  const stateUrl = s.get('state') ?? '';
  const leaseTtlMs = s.need('leaseTtl');
  if (leaseTtlMs < LEASE_TTL_MIN_MS || leaseTtlMs > LEASE_TTL_MAX_MS) throw configError('lease_ttl', `must be between 2s and 5m (got ${leaseTtlMs} ms)`);

  return Object.freeze({
    listen: s.need('listen'),
    dataDir: resolve(s.get('dataDir') ?? defaultDataDir(env)),
    state: stateUrl === '' ? { kind: 'embedded' as const } : { kind: 'postgres' as const, url: stateUrl, location: redactPostgresUrl(stateUrl) },
    advertiseUrl: s.get('advertiseUrl') ?? null,
    leaseTtlMs,
    init: flags.init ?? false,
    agentTokenFile: agentTokenFile ? resolve(agentTokenFile) : undefined,
    apiTokenFile: apiTokenFile ? resolve(apiTokenFile) : undefined,
    tls: tlsCert && tlsKey ? { certFile: resolve(tlsCert), keyFile: resolve(tlsKey) } : null,
    heartbeatIntervalMs,
    lostAfterMs,
    reconnectGraceMs: s.get('reconnectGrace') ?? Math.max(60_000, lostAfterMs),
    cancelGraceMs: s.need('cancelGrace'),
    timeoutGraceMs: 60_000,
    acceptTimeoutMs: s.get('acceptTimeout') ?? Math.max(10_000, heartbeatIntervalMs * 2),
    cutoffCancelMs: s.need('cutoffCancel'),
    defaultPlatform,
    maxBlobBytes,
    maxSpecBytes: 4 * 1024 * 1024,
    persist: !(flags.noPersist ?? false),
    log: { level: s.need('logLevel'), format: s.get('logFormat') ?? (host.isTTY ? 'text' : 'json') },
    cas,
    artifacts: { retentionMs: s.need('artifactRetention'), gcIntervalMs: s.need('gcInterval'), gcGraceMs: s.need('gcGrace') },
    registries,
    secretsKeyFile: s.get('secretsKeyFile') ? resolve(s.get('secretsKeyFile')!) : undefined,
    cache,
    concurrencyGroups: (s.get('concurrencyGroups') as ReadonlyMap<string, number> | undefined) ?? new Map<string, number>(),
    tracing: loadTracingConfig(s, env),
    rateLimit: { perKey: s.get('rateLimitPerKey') ?? null, perAddress: s.get('rateLimitPerAddress') ?? null },
    webhooks: {
      hooks: (s.get('webhooks') ?? []).map((h) => ({ ...h, secretFile: h.secretFile === null ? null : resolve(h.secretFile) })),
      allowedHosts: s.get('webhookAllowedHosts') ?? [],
      timeoutMs: s.need('webhookTimeout'),
      maxAttempts: s.need('webhookAttempts'),
      backoffBaseMs: s.need('webhookBackoff'),
      queueLimit: s.need('webhookQueue'),
    },
  });
}

// A registry host (name or IPv4, optional port) and a repository path of the distribution
// spec's lower-case components.
const REGISTRY_HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/** Why `host[:port]/path` is not a cache repository, or null. Exported for tests. */
export function cacheRepositoryProblem(repo: string): string | null {
  const shape = `'${repo.slice(0, 200)}' must be host[:port]/path, e.g. 127.0.0.1:5000/kiln-cache`;
  if (repo.length > 200) return `${shape} (at most 200 characters)`;
  const slash = repo.indexOf('/');
  if (slash <= 0) return shape;
  const host = repo.slice(0, slash);
  const components = repo.slice(slash + 1).split('/');
  if (!REGISTRY_HOST_RE.test(host) || !(host.includes('.') || host.includes(':') || host === 'localhost')) return `${shape}: '${host}' is not a registry host (name with a dot or a port, or localhost)`;
  const port = host.includes(':') ? Number(host.slice(host.lastIndexOf(':') + 1)) : 1;
  if (port < 1 || port > 65535) return `${shape}: port out of range`;
  const bad = components.find((c) => !PATH_COMPONENT_RE.test(c));
  if (bad !== undefined) return `${shape}: path component '${bad}' must be lower-case letters and digits, separated by '.', '_', '__' or '-' (no tag: kiln names the tags)`;
  return null;
}
