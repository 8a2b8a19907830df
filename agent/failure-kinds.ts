/**
 * Telling the agent's own trouble from a build's: is an error a full disk (ENOSPC,
 * EDQUOT) or a Docker Engine that cannot be reached (connection refused, socket missing,
 * connection reset or hung up, a 5xx from the daemon)? Both make an attempt an
 * infrastructure failure (retryable elsewhere) and feed the agent's health. The checks
 * walk an error's `cause` chain, since the CAS cache and the Docker helpers wrap what
 * they catch in KilnErrors.
 */
import { KilnError, errnoCode } from '../shared/core.js';

/** A write failed because the work dir's file system is full. `needBytes`: what the failed write wanted, when known. */
export class DiskFullError extends KilnError {
  constructor(
    message: string,
    readonly needBytes: number | null,
    cause?: unknown,
  ) {
    super('E_DISK_FULL', message, cause === undefined ? undefined : { cause });
    this.name = 'DiskFullError';
  }
}

function* chain(err: unknown): Generator<unknown> {
  const seen = new Set<unknown>();
  for (let e = err; e !== undefined && e !== null && !seen.has(e); e = (e as { cause?: unknown }).cause) {
    seen.add(e);
    yield e;
  }
}

const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT']);

/** true when `err` (or what caused it) is a full disk or an exhausted quota. */
export function isDiskFull(err: unknown): boolean {
  for (const e of chain(err)) {
    if (e instanceof DiskFullError) return true;
    const code = errnoCode(e);
    if (code && DISK_FULL_CODES.has(code)) return true;
    if (e instanceof Error && /\bENOSPC\b|no space left on device|\bEDQUOT\b|disk quota exceeded/i.test(e.message)) return true;
  }
  return false;
}

/** The message of the DiskFullError in the chain (it says what was being written where), if any. */
export function diskFullMessage(err: unknown): string | null {
  for (const e of chain(err)) if (e instanceof DiskFullError) return e.message;
  return null;
}

/** Bytes the failed write wanted, when a DiskFullError in the chain says so. */
export function diskFullNeed(err: unknown): number | null {
  for (const e of chain(err)) if (e instanceof DiskFullError) return e.needBytes;
  return null;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTCONN', 'EAI_AGAIN', 'ECONNABORTED']);

/**
 * true when a call to the Docker Engine failed because the engine could not be reached
 * or broke the connection (not because it refused the request). ENOENT counts only for
 * `connect` (the socket file is missing), not for files of the agent's own.
 */
export function isEngineUnreachable(err: unknown): boolean {
  for (const e of chain(err)) {
    const code = errnoCode(e);
    const syscall = (e as { syscall?: unknown } | null)?.syscall;
    if (code && CONNECTION_CODES.has(code)) return true;
    if (code === 'ENOENT' && syscall === 'connect') return true;
    if (code === 'UND_ERR_SOCKET' || code === 'ERR_STREAM_PREMATURE_CLOSE') return true;
    if (e instanceof Error && /socket hang up|\bconnect (ECONNREFUSED|ENOENT)\b|\bECONNRESET\b|premature close|\baborted\b/i.test(e.message)) return true;
  }
  return false;
}

/** The daemon answered with a server error (5xx): its trouble, not the request's. */
export function isEngineServerError(err: unknown): boolean {
  for (const e of chain(err)) {
    const status = (e as { statusCode?: unknown } | null)?.statusCode;
    if (typeof status === 'number' && status >= 500) return true;
  }
  return false;
}

/** The daemon refused the request itself (4xx): the node's fault, not the infrastructure's. */
export function isEngineClientError(err: unknown): boolean {
  for (const e of chain(err)) {
    const status = (e as { statusCode?: unknown } | null)?.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) return true;
  }
  return false;
}

/**
 * A blob the coordinator served does not hash to its digest: the stored artifact is bad,
 * so another attempt (here or elsewhere) would get the same bytes; not an infrastructure
 * failure of this agent.
 */
export function isCorruptArtifact(err: unknown): boolean {
  for (const e of chain(err)) if (e instanceof KilnError && e.code === 'E_DIGEST_MISMATCH') return true;
  return false;
}
