/**
 * A list of coordinator URLs (issue 14): agents and the CLI take `--coordinator URL1,URL2`
 * (or the same in KILN_COORDINATOR, or a list in the agent's config file) and follow the
 * leader among them. This module splits and bounds the list, and compares coordinator URLs
 * by their normalised HTTP origin and path (`ws://h:80/api/v1/agent` and `http://H/` are one
 * coordinator), so a leader named by a standby (a NOT_LEADER close reason, the `leader`
 * member of an E_NOT_LEADER problem) can be matched against the list. Each entry's own
 * rules (scheme, TLS, IPv6 brackets) stay with its reader (agent/config.ts, cli/client-config.ts).
 */
import { KilnError } from './errors.js';

/** The most coordinators a list may name. */
export const MAX_COORDINATORS = 16;
/** The longest single URL accepted (characters). */
export const MAX_COORDINATOR_URL_CHARS = 2048;

/**
 * The entries of a coordinator list: `a,b,c` as text (spaces around entries ignored), or a
 * list from a config file. Throws E_CONFIG (message without a setting prefix: the caller
 * names the setting) for an empty entry, too many entries or an over-long one.
 */
export function splitCoordinatorList(raw: string | readonly string[]): string[] {
  const parts = typeof raw === 'string' ? raw.split(',') : [...raw];
  if (parts.length > MAX_COORDINATORS) throw new KilnError('E_CONFIG', `${parts.length} coordinators given; at most ${MAX_COORDINATORS}`);
  const out: string[] = [];
  for (const [i, part] of parts.entries()) {
    if (typeof part !== 'string') throw new KilnError('E_CONFIG', `entry ${i + 1} is not text`);
    const entry = part.trim();
    if (entry === '') throw new KilnError('E_CONFIG', parts.length === 1 ? 'no coordinator URL given' : `entry ${i + 1} of '${String(raw)}' is empty`);
    if (entry.length > MAX_COORDINATOR_URL_CHARS) throw new KilnError('E_CONFIG', `entry ${i + 1} is longer than ${MAX_COORDINATOR_URL_CHARS} characters`);
    out.push(entry);
  }
  return out;
}

/**
 * The coordinator a URL names, as `http(s)://host[:port][/prefix]` (ws maps to http, wss to
 * https; host lower-cased, default port dropped, trailing slashes and the agent socket path
 * removed); null when it is not an http(s)/ws(s) URL. Two URLs name one coordinator when
 * their keys are equal.
 */
export function coordinatorKey(text: string, agentSocketPath = '/api/v1/agent'): string | null {
  if (text.length > MAX_COORDINATOR_URL_CHARS) return null;
  let u: URL;
  try {
    u = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    return null;
  }
  const scheme = u.protocol === 'http:' || u.protocol === 'ws:' ? 'http' : u.protocol === 'https:' || u.protocol === 'wss:' ? 'https' : null;
  if (scheme === null || u.host === '') return null;
  // The default port of the *mapped* scheme is dropped too (ws://h:80 is http://h).
  const port = u.port === '' || (scheme === 'http' && u.port === '80') || (scheme === 'https' && u.port === '443') ? '' : `:${u.port}`;
  let path = u.pathname.replace(/\/+$/, '');
  if (path.endsWith(agentSocketPath)) path = path.slice(0, -agentSocketPath.length);
  return `${scheme}://${u.hostname}${port}${path}`;
}

/** The index in `keys` (coordinator keys of a list) of the coordinator `url` names, or -1. */
export function indexOfCoordinator(keys: readonly string[], url: string | null | undefined): number {
  if (typeof url !== 'string') return -1;
  const key = coordinatorKey(url);
  return key === null ? -1 : keys.indexOf(key);
}
