/**
 * Where the CLI's client commands find the coordinator and their API token:
 * `--coordinator` > KILN_COORDINATOR > http://127.0.0.1:8080, and `--token-file` >
 * KILN_TOKEN_FILE > KILN_TOKEN > the zero-config token of a local coordinator
 * (`~/.local/state/kiln/coordinator/tokens/api`), when it is readable. TLS: `--ca-file` >
 * KILN_CA_FILE (else Node's built-in CA store), and plain http:// only to loopback unless
 * `--insecure` or KILN_INSECURE=1.
 *
 * `--coordinator` may be a list (issue 14): `URL1,URL2,…`, at most 16, each checked as a
 * single URL is (errors name the entry), the same coordinator twice refused. The client
 * follows the leader among them (api-client.ts); one URL behaves as it always did.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { coerceError, coordinatorKey, errnoCode, isKilnError, plaintextProblem, readCaFile, splitCoordinatorList } from '../shared/index.js';
import { CliError, EXIT } from './exit-codes.js';

export interface ClientFlags {
  coordinator?: string;
  tokenFile?: string;
  caFile?: string;
  insecure?: boolean;
}

export interface ClientConfig {
  /** The first coordinator of the list (the only one, for a single URL). */
  baseUrl: string;
  /** Every coordinator of the list, in order; absent: `baseUrl` alone. */
  baseUrls?: readonly string[];
  token: string | null;
  tokenSource: string;
  /** The CA file the coordinator's certificate is verified with, and its PEM; null or absent: Node's built-in store. */
  ca?: { file: string; pem: string } | null;
}

export function loadClientConfig(flags: ClientFlags, env: Record<string, string | undefined>, readFile?: (p: string) => string): ClientConfig {
  const read = readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  const raw = flags.coordinator ?? env.KILN_COORDINATOR ?? 'http://127.0.0.1:8080';
  const insecure = flags.insecure === true || /^(1|true|yes|on)$/i.test(env.KILN_INSECURE ?? '');
  const baseUrls = coordinatorBases(raw, insecure);
  const baseUrl = baseUrls[0]!;
  const caFile = flags.caFile ?? env.KILN_CA_FILE;
  let ca: ClientConfig['ca'] = null;
  if (caFile) {
    try {
      ca = { file: resolve(caFile), pem: readCaFile(resolve(caFile), readFile) };
    } catch (err) {
      if (isKilnError(err)) throw new CliError(`--ca-file: ${err.message}`, EXIT.USAGE);
      throw err;
    }
  }

  const fromFile = (path: string, explicit: boolean): string | null => {
    try {
      const t = read(path).trim();
      if (!t) throw new CliError(`token file ${path} is empty`, EXIT.USAGE);
      return t;
    } catch (err) {
      if (err instanceof CliError) throw err;
      if (!explicit && (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'EACCES')) return null;
      throw new CliError(`token file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, EXIT.USAGE);
    }
  };
  const tokenFile = flags.tokenFile ?? env.KILN_TOKEN_FILE;
  if (tokenFile) return { baseUrl, baseUrls, token: fromFile(tokenFile, true), tokenSource: tokenFile, ca };
  if (env.KILN_TOKEN) return { baseUrl, baseUrls, token: env.KILN_TOKEN.trim(), tokenSource: 'KILN_TOKEN', ca };
  const state = env.XDG_STATE_HOME || resolve(env.HOME || homedir(), '.local', 'state');
  const local = resolve(state, 'kiln', 'coordinator', 'tokens', 'api');
  return { baseUrl, baseUrls, token: fromFile(local, false), tokenSource: local, ca };
}

/** The base URL (http(s)://host:port[/prefix]) of each coordinator of `raw`, in order. */
function coordinatorBases(raw: string, insecure: boolean): string[] {
  let entries: string[];
  try {
    entries = splitCoordinatorList(raw);
  } catch (err) {
    if (isKilnError(err, 'E_CONFIG')) throw new CliError(`--coordinator: ${err.message}`, EXIT.USAGE);
    throw err;
  }
  const several = entries.length > 1;
  const seen = new Map<string, string>();
  const out: string[] = [];
  for (const entry of entries) {
    const what = several ? `--coordinator entry '${entry}'` : '--coordinator';
    let u: URL;
    try {
      u = new URL(/^[a-z]+:\/\//i.test(entry) ? entry : `http://${entry}`);
    } catch {
      throw new CliError(`--coordinator: '${entry}' is not a URL (use http://host:port)`, EXIT.USAGE);
    }
    if (u.protocol === 'ws:') u.protocol = 'http:';
    if (u.protocol === 'wss:') u.protocol = 'https:';
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CliError(`${what}: unsupported scheme ${u.protocol}`, EXIT.USAGE);
    const base = `${u.protocol}//${u.host}${u.pathname.replace(/\/(api\/v1\/agent)?\/*$/, '')}`;
    const plaintext = plaintextProblem(u, insecure, what);
    if (plaintext !== null) throw new CliError(plaintext, EXIT.USAGE);
    const key = coordinatorKey(base) ?? base;
    const twice = seen.get(key);
    if (twice !== undefined) throw new CliError(`--coordinator: '${entry}' names the same coordinator as '${twice}' (each coordinator once)`, EXIT.USAGE);
    seen.set(key, entry);
    out.push(base);
  }
  return out;
}
