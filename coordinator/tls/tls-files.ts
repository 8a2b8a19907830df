/**
 * The coordinator's certificate and key: read and checked as a pair (`loadTlsPair`), and
 * served by an HTTPS server that reloads them without a restart (`TlsReloader`): on
 * SIGHUP, and when either file changes (a stat poll of both every few seconds, debounced
 * so that a cert and key replaced one after the other load as one pair). A reload swaps
 * the server's secure context (`server.setSecureContext`): connections already open,
 * agents' WebSockets among them, keep their session; new ones get the new certificate.
 * A bad new pair (unreadable, not PEM, key not matching the certificate) is refused with
 * a log line naming the file, and the old pair keeps serving.
 *
 * Loaded only when TLS is configured (coordinator.ts imports it dynamically).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { createServer, type Server as HttpsServer } from 'node:https';
import type { Logger } from 'pino';
import { KilnError, coerceError, errnoCode } from '../../shared/index.js';

/** A certificate chain or key file larger than this is refused. */
export const MAX_TLS_FILE_BYTES = 1024 * 1024;

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export interface TlsPair {
  cert: string;
  key: string;
  /** Of the leaf certificate, for logs and tests. */
  serial: string;
  fingerprint256: string;
  subject: string;
  validTo: string;
}

function readPem(path: string, what: string, read: (p: string) => string): string {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > MAX_TLS_FILE_BYTES) throw new KilnError('E_CONFIG', `TLS ${what} file ${path} is too large (${size} bytes; at most ${MAX_TLS_FILE_BYTES})`);
    text = read(path);
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new KilnError('E_CONFIG', `TLS ${what} file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
  }
  if (!/-----BEGIN [A-Z0-9 ]+-----/.test(text)) throw new KilnError('E_CONFIG', `TLS ${what} file ${path} is not PEM (no -----BEGIN ...----- line)`);
  return text;
}

/**
 * Reads and checks a certificate and key: both PEM, the first certificate of the chain
 * parses, the key parses and is the certificate's. Throws E_CONFIG naming the file at fault.
 */
export function loadTlsPair(files: TlsFiles, read: (p: string) => string = (p) => readFileSync(p, 'utf8')): TlsPair {
  const cert = readPem(files.certFile, 'certificate', read);
  const key = readPem(files.keyFile, 'key', read);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new KilnError('E_CONFIG', `TLS certificate file ${files.certFile} holds no valid certificate (${coerceError(err).message})`, { cause: err });
  }
  let keyObject;
  try {
    keyObject = createPrivateKey(key);
  } catch (err) {
    throw new KilnError('E_CONFIG', `TLS key file ${files.keyFile} holds no valid private key (${coerceError(err).message})`, { cause: err });
  }
  if (!x509.checkPrivateKey(keyObject)) throw new KilnError('E_CONFIG', `TLS key file ${files.keyFile} does not match the certificate in ${files.certFile}`);
  return { cert, key, serial: x509.serialNumber, fingerprint256: x509.fingerprint256, subject: x509.subject.replace(/\n/g, ', '), validTo: x509.validTo };
}

/** node:https's createServer, for the coordinator's server (the API and the agents' WebSocket upgrade both use it). */
export const createHttpsServer = createServer;

export interface TlsReloaderOptions {
  /** How often both files are stat'ed. @default 2000 */
  pollMs?: number;
  /** Quiet time after the last change before the pair is loaded. @default 1000 */
  debounceMs?: number;
  read?: (p: string) => string;
}

/** Reloads the server's certificate and key on request (SIGHUP) and when their files change. */
export class TlsReloader {
  private timer: NodeJS.Timeout | null = null;
  private readonly listener = (curr: Stats, prev: Stats) => {
    if (curr.mtimeMs !== prev.mtimeMs || curr.ino !== prev.ino || curr.size !== prev.size) this.schedule();
  };
  private watching = false;

  constructor(
    private readonly server: Pick<HttpsServer, 'setSecureContext'>,
    private readonly files: TlsFiles,
    private current: TlsPair,
    private readonly logger: Logger,
    private readonly opts: TlsReloaderOptions = {},
  ) {}

  /** The pair being served now. */
  get serving(): TlsPair {
    return this.current;
  }

  /** Starts watching both files (stat poll; follows symlinks, so a swapped link counts). */
  watch(): void {
    if (this.watching) return;
    this.watching = true;
    for (const f of [this.files.certFile, this.files.keyFile]) watchFile(f, { interval: this.opts.pollMs ?? 2000, persistent: false }, this.listener);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.watching) return;
    this.watching = false;
    for (const f of [this.files.certFile, this.files.keyFile]) unwatchFile(f, this.listener);
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reload('files changed');
    }, this.opts.debounceMs ?? 1000);
    this.timer.unref();
  }

  /**
   * Loads the pair and serves it from now on; returns whether it did. A pair that does
   * not load is logged (naming the file) and the old one keeps serving.
   */
  reload(reason: string): boolean {
    let pair: TlsPair;
    try {
      pair = loadTlsPair(this.files, this.opts.read);
    } catch (err) {
      this.logger.error({ reason, cert_file: this.files.certFile, key_file: this.files.keyFile, err: coerceError(err).message, serial: this.current.serial }, `TLS reload refused: ${coerceError(err).message}; still serving the previous certificate`);
      return false;
    }
    if (pair.cert === this.current.cert && pair.key === this.current.key) {
      this.logger.info({ reason, serial: pair.serial }, 'TLS certificate unchanged');
      return true;
    }
    try {
      this.server.setSecureContext({ cert: pair.cert, key: pair.key });
    } catch (err) {
      this.logger.error({ reason, cert_file: this.files.certFile, key_file: this.files.keyFile, err: coerceError(err).message }, `TLS reload refused: ${coerceError(err).message}; still serving the previous certificate`);
      return false;
    }
    const old = this.current;
    this.current = pair;
    this.logger.info({ reason, serial: pair.serial, fingerprint256: pair.fingerprint256, subject: pair.subject, valid_to: pair.validTo, previous_serial: old.serial }, 'TLS certificate reloaded');
    return true;
  }
}
