/**
 * The client side of TLS, shared by the CLI and the agent: the loopback rule (plain
 * `http://` or `ws://` only to 127.0.0.0/8, ::1 or localhost, anything else needs
 * `--insecure`), reading a CA file (`--ca-file`, KILN_CA_FILE: PEM certificates, bounded,
 * errors naming the file), a `fetch` that trusts that CA, and a readable message for a
 * certificate the client refused.
 *
 * Node's global fetch cannot be given a CA (its undici is internal, and
 * NODE_EXTRA_CA_CERTS is read only at process start), so a CA file uses the `undici`
 * package: its own `fetch` with an `Agent` whose connections verify against that CA.
 * It is imported only when a CA file is configured: an agent or CLI without one (plain
 * loopback, or https verified by Node's built-in store) never loads it.
 */
import { readFileSync, statSync } from 'node:fs';
import { KilnError, coerceError, errnoCode } from './errors.js';

/** A CA file larger than this is refused (a bundle of a few hundred certificates fits). */
export const MAX_CA_FILE_BYTES = 1024 * 1024;

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/;

/** Whether a URL's host name is loopback: 127.0.0.0/8, ::1 or localhost (brackets allowed). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  // Only the name itself: `localhost.` and `x.localhost` go to DNS, which may answer anything.
  if (h === 'localhost') return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  // IPv4-mapped loopback, as written and as the URL parser rewrites it (::ffff:7f00:1)
  if (/^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(h)) return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m !== null && m.slice(1).every((o) => Number(o) <= 255);
}

/**
 * Why `url` may not be used as it is, or null: plain http:// or ws:// to a host that is
 * not loopback, unless `insecure`. `what` names the setting in the message.
 */
export function plaintextProblem(url: URL, insecure: boolean, what: string): string | null {
  if (insecure || (url.protocol !== 'http:' && url.protocol !== 'ws:')) return null;
  if (isLoopbackHost(url.hostname)) return null;
  const secure = url.protocol === 'ws:' ? 'wss' : 'https';
  return (
    `${what}: plain ${url.protocol}// to ${url.host} is refused: tokens and logs would cross the network in clear text. ` +
    `Use ${secure}:// (the coordinator's --tls-cert and --tls-key), or --insecure (KILN_INSECURE=1) to allow it`
  );
}

/** Reads a CA file: at most MAX_CA_FILE_BYTES of PEM holding at least one certificate. Throws E_CONFIG naming the file. */
export function readCaFile(path: string, read?: (p: string) => string): string {
  let text: string;
  try {
    if (read === undefined) {
      const size = statSync(path).size;
      if (size > MAX_CA_FILE_BYTES) throw new KilnError('E_CONFIG', `CA file ${path} is too large (${size} bytes; at most ${MAX_CA_FILE_BYTES})`);
    }
    text = (read ?? ((p: string) => readFileSync(p, 'utf8')))(path);
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new KilnError('E_CONFIG', `CA file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
  }
  if (text.length > MAX_CA_FILE_BYTES) throw new KilnError('E_CONFIG', `CA file ${path} is too large (at most ${MAX_CA_FILE_BYTES} bytes)`);
  if (!PEM_CERT_RE.test(text)) throw new KilnError('E_CONFIG', `CA file ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return text;
}

/** A fetch whose https connections verify the server against `ca` (PEM) instead of Node's built-in store. Loads undici. */
export async function fetchTrusting(ca: string): Promise<typeof fetch> {
  const undici = await import('undici');
  const dispatcher = new undici.Agent({ connect: { ca } });
  // undici's fetch is the one Node bundles, as a package: its Request and Response are
  // the WHATWG ones the callers use.
  return ((input: string | URL | Request, init?: RequestInit) => undici.fetch(input as string, { ...(init as object), dispatcher } as never)) as unknown as typeof fetch;
}

/** Error codes of a certificate the client refused (OpenSSL's and Node's). */
const TLS_REFUSAL_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

/** The code of an error (or of its cause, e.g. fetch's TypeError) when it is a refused server certificate; else null. */
export function tlsRefusalCode(err: unknown): string | null {
  for (let e: unknown = err, depth = 0; e !== null && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && TLS_REFUSAL_CODES.has(code)) return code;
  }
  return null;
}

/**
 * A readable line for a refused server certificate: what was refused, by which trust
 * (the CA file, or Node's built-in store) and how to fix it; null when `err` is not one.
 */
export function tlsRefusalMessage(err: unknown, server: string, caFile: string | null): string | null {
  const code = tlsRefusalCode(err);
  if (code === null) return null;
  let detail = '';
  for (let e: unknown = err, depth = 0; e !== null && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { code?: unknown }).code === code) detail = coerceError(e).message;
  }
  const trust = caFile !== null ? `the CA file ${caFile}` : 'the system store (give the CA with --ca-file or KILN_CA_FILE)';
  return `TLS: the certificate of ${server} is not trusted by ${trust}: ${code}${detail && detail !== code ? ` (${detail})` : ''}`;
}
