/**
 * Typed errors with stable codes, shared by coordinator, agent and CLI.
 *
 * Every failure kiln reports to a user or a peer carries a `code` from `ERROR_CODES`, so
 * callers branch on the code, never on the message. HTTP handlers throw `KilnError`s and
 * the coordinator's single error funnel renders them as RFC 9457 problem+json with the
 * status from `httpStatus`.
 */

export const ERROR_CODES = {
  /** A request, spec, frame or config failed validation. */
  E_INVALID: 400,
  /** The spec failed validation (nodes, fields, graph). */
  E_SPEC_INVALID: 400,
  /** Missing or wrong token. */
  E_UNAUTHORIZED: 401,
  /** The token may not use this route. */
  E_FORBIDDEN: 403,
  /** The API key lacks the scope the route needs (the detail names it). */
  E_SCOPE: 403,
  /** Too many requests from this key or address (Retry-After says when to come back). */
  E_RATE_LIMITED: 429,
  /** Something named in the request does not exist. */
  E_NOT_FOUND: 404,
  /** The request conflicts with the current state (e.g. cancelling a finished build). */
  E_CONFLICT: 409,
  /** The uploaded bytes do not hash to the digest in the URL. */
  E_DIGEST_MISMATCH: 400,
  /** A tar archive is malformed, exceeds its extraction budget, or holds an entry that would escape its target directory. */
  E_ARCHIVE: 400,
  /** The request body is larger than allowed. */
  E_TOO_LARGE: 413,
  /** The request body has a media type the route does not take. */
  E_MEDIA_TYPE: 415,
  /** The method is not one the path supports (`Allow` lists those). */
  E_METHOD: 405,
  /** The path is a WebSocket endpoint: upgrade the connection. */
  E_UPGRADE: 426,
  /** The coordinator is starting up or shutting down. */
  E_UNAVAILABLE: 503,
  /** This coordinator is a standby (or lost its lease): the write goes to the leader, which the problem names (`leader`). */
  E_NOT_LEADER: 503,
  /** The state file is missing, unreadable or corrupt. */
  E_STATE: 500,
  /** Another process holds the data dir lock. */
  E_LOCKED: 500,
  /** Agent and coordinator share no protocol version. */
  E_PROTOCOL_VERSION: 400,
  /** A WebSocket frame could not be decoded or validated. */
  E_PROTOCOL: 400,
  /** Configuration is invalid. */
  E_CONFIG: 400,
  /** Talking to the Docker Engine failed. */
  E_DOCKER: 502,
  /** The coordinator could not be reached. */
  E_CONNECTION: 502,
  /** Pushing an image or an index to a registry failed. */
  E_PUSH: 502,
  /** A disk is full (the write was undone; nothing partial was kept). */
  E_DISK_FULL: 507,
  /** An unexpected internal error. */
  E_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** One field-level problem: `path` is dotted (`nodes.compile.platform`). */
export interface FieldError {
  path: string;
  message: string;
}

export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly errors: FieldError[];
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; errors?: FieldError[]; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KilnError';
    this.code = code;
    this.errors = options?.errors ?? [];
    this.status = options?.status ?? ERROR_CODES[code];
  }
}

/** E_NOT_LEADER: this coordinator is not the leader; `leader` is the one that is (null: an election is under way). */
export class NotLeaderError extends KilnError {
  constructor(
    readonly leader: string | null,
    message = leader ? `this coordinator is a standby: send the request to the leader, ${leader}` : 'no coordinator leads right now (an election is under way): retry in a few seconds',
  ) {
    super('E_NOT_LEADER', message);
  }
}

/** Turns anything thrown into an Error (catch sites receive `unknown`). */
export function coerceError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new Error(typeof err === 'string' ? err : JSON.stringify(err));
}

export function isKilnError(err: unknown, code?: ErrorCode): err is KilnError {
  return err instanceof KilnError && (code === undefined || err.code === code);
}

/** Node's errno code of a system error (`ENOENT`, ...), or undefined. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
