/**
 * The agent's configuration. `AGENT_SETTINGS` is its one table of settings: each row
 * gives the config file key, the environment variable, the flag (the row id in kebab
 * case), the default and the description, and `kiln agent --help` and the README's table
 * are made from it. `loadAgentConfig(flags, host)` reads the table with one precedence
 * rule, defaults < config file < environment < flags, validates every value (errors name
 * the setting) and returns a frozen config. Nothing else in the agent reads `process.env`;
 * under systemd the defaults come from $CREDENTIALS_DIRECTORY/token and $STATE_DIRECTORY.
 * `config/agent.example.yaml` shows the file.
 *
 * Enrolment: a token of the form `kiln_enrol_...` is an enrolment token, traded once for
 * the agent's own credential (agent/enrol.ts), kept in `<state dir>/agent-credential`
 * (the state dir: $STATE_DIRECTORY under systemd, else the work dir).
 * Once that file exists it is the agent's token, whatever token is configured.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import {
  AGENT_SOCKET_PATH,
  KilnError,
  LOG_SETTINGS,
  SettingsReader,
  coerceError,
  configError,
  errnoCode,
  fileSchema,
  NAME_RE,
  NAME_RULE,
  platformProblem,
  plaintextProblem,
  readCaFile,
  readConfigFile,
  settingTypes as t,
  type SettingFlags,
  type SettingTable,
  type LogFormat,
  type LogLevel,
  loadTracingConfig,
  tracingSettings,
  type TracingConfig,
  MAX_COORDINATORS,
  splitCoordinatorList,
  isKilnError,
  coordinatorKey,
  type SettingType,
} from '../shared/core.js';

/** The `coordinator` setting: one URL or several, comma-separated text or a list in the file. */
function coordinatorList(): SettingType<string[]> {
  return {
    hint: 'url[,url...]',
    file: z.union([z.string(), z.array(z.string())]),
    parse: (setting, v) => {
      try {
        return splitCoordinatorList(v as string | string[]);
      } catch (err) {
        if (isKilnError(err, 'E_CONFIG')) throw configError(setting, err.message);
        throw err;
      }
    },
  };
}

export const AGENT_SETTINGS = {
  coordinator: {
    type: coordinatorList(),
    key: 'coordinator',
    env: 'KILN_COORDINATOR',
    description: `coordinator URL, http(s):// or ws(s):// (required); several (at most ${MAX_COORDINATORS}, comma-separated, or a list in the file): the agent follows the leader among them`,
  },
  tokenFile: { type: t.text('file'), key: 'token_file', env: 'KILN_AGENT_TOKEN_FILE', defaultText: '$CREDENTIALS_DIRECTORY/token under systemd', description: 'agent token file' },
  token: { type: t.text('token'), key: 'token', env: 'KILN_AGENT_TOKEN', secret: true, description: 'the agent token itself (token_file wins on the same layer)' },
  name: { type: t.text('name'), key: 'name', env: 'KILN_AGENT_NAME', defaultText: 'the host name', description: 'agent name' },
  labels: { type: t.labels(), key: 'labels', env: 'KILN_AGENT_LABELS', description: 'labels nodes can require' },
  maxJobs: { type: t.int(1, 1024), key: 'max_jobs', env: 'KILN_AGENT_MAX_JOBS', default: 2, description: 'builds run at once' },
  platforms: { type: t.list('list'), key: 'platforms', env: 'KILN_AGENT_PLATFORMS', description: 'extra platforms run under qemu emulation, e.g. linux/s390x,linux/arm64' },
  dockerHost: { type: t.text('url'), key: 'docker_host', env: 'DOCKER_HOST', default: 'unix:///var/run/docker.sock', description: 'Docker Engine' },
  workDir: { type: t.text('dir'), key: 'work_dir', env: 'KILN_AGENT_WORK_DIR', defaultText: '$STATE_DIRECTORY, else ~/.cache/kiln-agent', description: 'local CAS cache and scratch space' },
  stateDir: { type: t.text('dir'), key: 'state_dir', env: 'KILN_AGENT_STATE_DIR', defaultText: '$STATE_DIRECTORY, else the work dir', description: "where the agent's own credential is kept (agent-credential, 0600)" },
  cacheMax: { type: t.size(), key: 'cache_max', env: 'KILN_AGENT_CACHE_MAX', default: '20GiB', description: 'local CAS cache size limit (LRU eviction)' },
  minFreeDisk: { type: t.size(), key: 'min_free_disk', env: 'KILN_AGENT_MIN_FREE_DISK', default: '512MiB', description: 'take no work while the work dir has less free space' },
  pushStallTimeout: {
    type: t.duration(),
    key: 'push_stall_timeout',
    env: 'KILN_AGENT_PUSH_STALL_TIMEOUT',
    default: '10m',
    description: 'an image push or index put with no progress this long is abandoned as a registry failure (retried)',
  },
  ...LOG_SETTINGS,
  caFile: {
    type: t.text('file'),
    key: 'ca_file',
    env: 'KILN_CA_FILE',
    defaultText: "Node's built-in CA store",
    description: "PEM CA certificate(s) the coordinator's TLS certificate is verified with (WebSocket and CAS downloads)",
  },
  insecure: { type: t.bool(), key: 'insecure', env: 'KILN_INSECURE', default: false, description: 'allow plain http:// or ws:// to a coordinator that is not on loopback' },
  executor: { type: t.oneOf(['docker', 'noop']), key: 'executor', env: 'KILN_AGENT_EXECUTOR', default: 'docker', hidden: true, description: 'docker, or noop for dispatch benchmarks' },
  ...tracingSettings('kiln-agent'),
} as const satisfies SettingTable;

export interface AgentConfig {
  /** ws(s)://host:port/api/v1/agent (the first coordinator of the list) */
  wsUrl: string;
  /** http(s)://host:port, for CAS downloads (the first coordinator of the list) */
  httpUrl: string;
  /** Every coordinator of the list, in order (one entry for a single URL); the agent follows the leader among them. */
  coordinators: readonly CoordinatorEndpoint[];
  token: string;
  tokenSource: string;
  /** Where the agent's own credential is kept: `<state dir>/agent-credential` (0600). */
  credentialFile: string;
  /** The enrolment token to trade for a credential (no credential stored yet), else null. */
  enrolToken: string | null;
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
  /** A push (or an index put) with no progress this long fails as the registry's (infrastructure) failure. */
  pushStallTimeoutMs: number;
  executor: 'docker' | 'noop';
  /** The CA file the coordinator's certificate is verified with, and its PEM; null: Node's built-in store. */
  ca: { file: string; pem: string } | null;
  log: { level: LogLevel; format: LogFormat };
  /** OpenTelemetry traces of each job's phases (issue 12); null: off. */
  tracing: TracingConfig | null;
}

/** `kiln agent`'s flags: one per setting (the token itself is a secret: no flag), plus --config. */
export interface AgentFlags extends SettingFlags<typeof AGENT_SETTINGS> {
  /** The config file (also KILN_AGENT_CONFIG). */
  config?: string;
}

/** `kiln agent`'s options that are not settings (commander form). */
export const AGENT_OPTIONS = [{ flags: '--config <file>', description: 'YAML config file [env KILN_AGENT_CONFIG]', hidden: false }] as const;

const FileSchema = fileSchema(AGENT_SETTINGS);

export interface AgentHost {
  env: Record<string, string | undefined>;
  hostname: string;
  isTTY: boolean;
  readFile?: (path: string) => string;
}

/** One coordinator of the agent's list, in both URL forms. */
export interface CoordinatorEndpoint {
  /** ws(s)://host:port/api/v1/agent */
  wsUrl: string;
  /** http(s)://host:port */
  httpUrl: string;
}

/** Accepts http(s)://, ws(s):// or host:port and returns both URL forms. */
export function coordinatorUrls(text: string): CoordinatorEndpoint {
  let u: URL;
  try {
    u = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw configError('coordinator', `'${text}' is not a URL (use http://host:port or ws://host:port)`);
  }
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw configError('coordinator', `unsupported scheme '${u.protocol}' in '${text}'`);
  // `host` keeps the brackets of an IPv6 address (hostname has them too: never add a second pair).
  const base = u.host;
  const path = u.pathname.replace(/\/+$/, '');
  const prefix = path.endsWith(AGENT_SOCKET_PATH) ? path.slice(0, -AGENT_SOCKET_PATH.length) : path;
  return { wsUrl: `${secure ? 'wss' : 'ws'}://${base}${prefix}${AGENT_SOCKET_PATH}`, httpUrl: `${secure ? 'https' : 'http'}://${base}${prefix}` };
}

/**
 * Each entry of the coordinator list checked as a single URL is (scheme, plain-text rule),
 * errors naming the entry when there are several; the same coordinator twice is refused.
 */
function coordinatorEndpoints(list: readonly string[], insecure: boolean): CoordinatorEndpoint[] {
  const out: CoordinatorEndpoint[] = [];
  const seen = new Map<string, string>();
  for (const entry of list) {
    const named = (message: string) => (list.length > 1 ? `entry '${entry}': ${message.replace(/^config coordinator: /, '')}` : message);
    let urls: CoordinatorEndpoint;
    try {
      urls = coordinatorUrls(entry);
    } catch (err) {
      if (isKilnError(err, 'E_CONFIG') && list.length > 1) throw configError('coordinator', named(err.message));
      throw err;
    }
    // Named by the scheme the user gave (host:port alone is http://).
    const plaintext = plaintextProblem(new URL(/^[a-z]+:\/\//i.test(entry) ? entry : urls.httpUrl), insecure, 'coordinator');
    if (plaintext !== null) throw new KilnError('E_CONFIG', list.length > 1 ? `coordinator entry '${entry}': ${plaintext.replace(/^coordinator: /, '')}` : plaintext);
    const key = coordinatorKey(urls.httpUrl) ?? urls.httpUrl;
    const twice = seen.get(key);
    if (twice !== undefined) throw configError('coordinator', `'${entry}' names the same coordinator as '${twice}' (each coordinator once)`);
    seen.set(key, entry);
    out.push(urls);
  }
  return out;
}

function readTokenFile(path: string, read: (p: string) => string): string {
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    throw new KilnError('E_CONFIG', `agent token file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
  }
  const token = text.trim();
  if (!token) throw new KilnError('E_CONFIG', `agent token file ${path} is empty`);
  return token;
}

export const CREDENTIAL_FILE = 'agent-credential';
const STORED_CREDENTIAL_RE = /^kiln_agent_[A-Za-z0-9_-]{43}$/;

/** The credential stored by an earlier enrolment, or null when there is none. */
function readStoredCredential(path: string, read: (p: string) => string): string | null {
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new KilnError('E_CONFIG', `agent credential file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
  }
  const token = text.trim();
  if (!STORED_CREDENTIAL_RE.test(token)) throw new KilnError('E_CONFIG', `agent credential file ${path} holds no agent credential (kiln_agent_...); delete it and start the agent with a new enrolment token`);
  return token;
}

export function loadAgentConfig(flags: AgentFlags, host: AgentHost): Readonly<AgentConfig> {
  const env = host.env;
  const read = host.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  const configPath = flags.config ?? env.KILN_AGENT_CONFIG;
  const file = configPath ? readConfigFile(configPath, FileSchema, read) : {};
  const s = new SettingsReader(AGENT_SETTINGS, { flags: flags as Record<string, unknown>, env, file });

  const coordinatorList = s.get('coordinator');
  if (!coordinatorList || coordinatorList.length === 0) throw configError('coordinator', 'no coordinator given (use --coordinator http://host:port or KILN_COORDINATOR)');
  const coordinators = coordinatorEndpoints(coordinatorList, s.need('insecure'));
  const caFile = s.get('caFile');
  const ca = caFile ? { file: resolve(caFile), pem: readCaFile(resolve(caFile), host.readFile) } : null;

  // The token file and the token are one choice: the higher layer wins, the file on a tie.
  const tokenText = s.rank('token') > s.rank('tokenFile') ? s.get('token') : undefined;
  const tokenFile = tokenText === undefined ? (s.get('tokenFile') ?? (env.CREDENTIALS_DIRECTORY ? join(env.CREDENTIALS_DIRECTORY, 'token') : undefined)) : undefined;
  const workDir = resolve(s.get('workDir') ?? env.STATE_DIRECTORY ?? join(env.HOME || homedir(), '.cache', 'kiln-agent'));
  // The credential is state, not cache: under systemd the work dir may be the cache dir.
  const credentialFile = join(resolve(s.get('stateDir') ?? env.STATE_DIRECTORY ?? workDir), CREDENTIAL_FILE);
  const stored = readStoredCredential(credentialFile, read);
  let token: string;
  let tokenSource: string;
  if (stored !== null) {
    // Enrolled before: the stored credential is the token (the enrolment token is not needed again).
    token = stored;
    tokenSource = credentialFile;
  } else if (tokenFile) {
    token = readTokenFile(tokenFile, read);
    tokenSource = tokenFile;
  } else if (tokenText?.trim()) {
    token = tokenText.trim();
    tokenSource = s.pick('token')!.layer === 'env' ? 'KILN_AGENT_TOKEN' : 'token (config file)';
  } else {
    throw configError('token_file', 'no agent token (use --token-file FILE, KILN_AGENT_TOKEN_FILE or KILN_AGENT_TOKEN; the coordinator prints where its agent token is)');
  }

  const name = s.get('name') ?? host.hostname;
  if (!NAME_RE.test(name)) throw configError('name', `'${name}' is not a valid agent name (${NAME_RULE})`);

  const extraPlatforms = s.get('platforms') ?? [];
  for (const p of extraPlatforms) {
    const problem = platformProblem(p);
    if (problem) throw configError('platforms', problem);
  }

  const dockerHost = s.need('dockerHost');
  if (!/^(unix|tcp|http):\/\//.test(dockerHost)) throw configError('docker_host', `'${dockerHost}' must be unix:///path or tcp://host:port`);

  return Object.freeze({
    ...coordinators[0]!,
    coordinators,
    token,
    tokenSource,
    name,
    labels: s.get('labels') ?? {},
    maxJobs: s.need('maxJobs'),
    extraPlatforms,
    dockerHost,
    credentialFile,
    enrolToken: stored === null && token.startsWith('kiln_enrol_') ? token : null,
    workDir,
    cacheMaxBytes: s.need('cacheMax'),
    minFreeDiskBytes: s.need('minFreeDisk'),
    pushStallTimeoutMs: s.need('pushStallTimeout'),
    executor: s.need('executor'),
    ca,
    log: { level: s.need('logLevel'), format: s.get('logFormat') ?? (host.isTTY ? 'text' : 'json') },
    tracing: loadTracingConfig(s, env),
  });
}
