/**
 * PostgreSQL connection URLs: `parsePostgresUrl` checks one (the `state` setting, `kiln state
 * migrate --to`) and `redactPostgresUrl` masks its password for every message and log line.
 * Kept apart from pg-client.ts so the settings can check a URL without loading the driver
 * (an embedded coordinator never loads it). pg-client.ts re-exports both.
 */
import { KilnError } from '../../../shared/index.js';

/** Longest URL accepted (a long password and a few parameters fit easily). */
export const MAX_POSTGRES_URL_CHARS = 2048;

/** Query parameters kiln passes on to the driver; any other is refused by name. */
const PARAMS = new Map<string, (v: string) => string | null>([
  ['sslmode', (v) => (['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'].includes(v) ? null : 'must be disable, prefer, require, verify-ca, verify-full or no-verify')],
  ['sslrootcert', (v) => (v.length > 0 && v.length <= 1024 ? null : 'must be a file path of at most 1024 characters')],
  ['sslcert', (v) => (v.length > 0 && v.length <= 1024 ? null : 'must be a file path of at most 1024 characters')],
  ['sslkey', (v) => (v.length > 0 && v.length <= 1024 ? null : 'must be a file path of at most 1024 characters')],
  ['application_name', (v) => (/^[\x20-\x7e]{1,63}$/.test(v) ? null : 'must be 1-63 printable ASCII characters')],
  ['connect_timeout', (v) => (/^[0-9]{1,4}$/.test(v) ? null : 'must be a number of seconds (0-9999)')],
]);

/**
 * The URL with its password (and a `password` parameter) replaced by `***`. Works on text
 * that is not a valid URL too (the part between `//user:` and `@` is masked).
 */
export function redactPostgresUrl(url: string): string {
  let u: URL | null = null;
  try {
    u = new URL(url);
  } catch {
    u = null;
  }
  if (u && u.protocol !== 'file:') {
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString().replace('%2A%2A%2A', '***');
  }
  // Not a URL: everything between `//user:` and the last `@` (a password may hold `/` or `@`).
  return url.replace(/(\/\/[^/@:]*:).*@/s, '$1***@').replace(/([?&]password=)[^&]*/gi, '$1***');
}

function bad(text: string, why: string): KilnError {
  // Redacted first, cut after: a cut URL could end inside its password.
  const shown = redactPostgresUrl(text);
  return new KilnError('E_CONFIG', `'${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown}' is not a PostgreSQL URL: ${why}`);
}

/**
 * Checks a PostgreSQL URL: `postgres://` or `postgresql://`, a host, an optional port
 * (1-65535), user and password, at most one path segment (the database), only the query
 * parameters in PARAMS, no fragment, at most MAX_POSTGRES_URL_CHARS characters. Returns the
 * URL (trimmed); throws `E_CONFIG` naming what is wrong, never the password.
 */
export function parsePostgresUrl(text: string): string {
  const t = text.trim();
  if (t.length === 0) throw new KilnError('E_CONFIG', 'the PostgreSQL URL is empty (write postgres://user:password@host:port/database)');
  if (t.length > MAX_POSTGRES_URL_CHARS) throw new KilnError('E_CONFIG', `the PostgreSQL URL is longer than ${MAX_POSTGRES_URL_CHARS} characters`);
  if (/[\x00-\x20\x7f]/.test(t)) throw bad(t, 'it holds a space or a control character (percent-encode them)');
  let u: URL;
  try {
    u = new URL(t);
  } catch {
    throw bad(t, 'it cannot be parsed (write postgres://user:password@host:port/database)');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw bad(t, `the scheme is '${u.protocol.slice(0, 20)}' (use postgres:// or postgresql://)`);
  if (!u.hostname) throw bad(t, 'it names no host');
  if (u.port !== '' && (Number(u.port) < 1 || Number(u.port) > 65535)) throw bad(t, `port ${u.port} is out of range`);
  if (u.hash) throw bad(t, 'it has a #fragment');
  const path = u.pathname.replace(/^\//, '');
  if (path.includes('/')) throw bad(t, 'the path must be one database name');
  let db: string;
  try {
    db = decodeURIComponent(path);
    decodeURIComponent(u.username);
    decodeURIComponent(u.password);
  } catch {
    throw bad(t, 'it has a malformed %-escape');
  }
  if (db.length > 63) throw bad(t, 'the database name is longer than 63 characters');
  if (u.username.length > 200) throw bad(t, 'the user name is too long');
  let count = 0;
  for (const [key, value] of u.searchParams) {
    if (++count > PARAMS.size) throw bad(t, 'it repeats query parameters');
    const check = PARAMS.get(key);
    if (!check) throw bad(t, `unknown parameter '${key.slice(0, 40)}' (known: ${[...PARAMS.keys()].join(', ')})`);
    const problem = check(value);
    if (problem) throw bad(t, `parameter ${key} ${problem}`);
  }
  return t;
}
