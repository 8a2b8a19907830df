/**
 * The coordinator's single HTTP error funnel: every error leaves as RFC 9457
 * `application/problem+json` with a stable `code` (shared/errors.ts), the request id in
 * `instance`, and `errors: [{path, message}]` for validation failures.
 */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { Logger } from 'pino';
import { KilnError, NotLeaderError, type ErrorCode, type FieldError, type ProblemT } from '../../shared/index.js';

const TITLES: Partial<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  426: 'Upgrade Required',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  507: 'Insufficient Storage',
};

export function problemBody(status: number, code: ErrorCode | string, detail: string, instance?: string, errors?: FieldError[], extra?: { leader: string | null }): ProblemT {
  return {
    type: `urn:kiln:error:${code}`,
    title: TITLES[status] ?? 'Error',
    status,
    detail,
    ...(instance ? { instance } : {}),
    code,
    ...(errors && errors.length > 0 ? { errors } : {}),
    ...extra,
  };
}

export function problemResponse(c: Context, status: number, code: ErrorCode | string, detail: string, errors?: FieldError[], headers?: Record<string, string>, extra?: { leader: string | null }): Response {
  const instance = (c.get('requestId' as never) as string | undefined) ?? undefined;
  return new Response(JSON.stringify(problemBody(status, code, detail, instance ? `urn:kiln:request:${instance}` : undefined, errors, extra)), {
    status,
    headers: { ...headers, 'content-type': 'application/problem+json' },
  });
}

const STATUS_CODES: Partial<Record<number, ErrorCode>> = {
  400: 'E_INVALID',
  401: 'E_UNAUTHORIZED',
  403: 'E_FORBIDDEN',
  404: 'E_NOT_FOUND',
  405: 'E_METHOD',
  409: 'E_CONFLICT',
  413: 'E_TOO_LARGE',
  415: 'E_MEDIA_TYPE',
  503: 'E_UNAVAILABLE',
};

const INTERNAL_CODES = new Set<ErrorCode>(['E_STATE', 'E_INTERNAL', 'E_LOCKED']);

export function makeErrorHandler(logger: Logger) {
  return function onError(err: Error, c: Context): Response {
    if (err instanceof KilnError) {
      if (err.status >= 500) logger.error({ err, path: c.req.path }, 'request failed');
      // Internal failures name files of the server: the log gets them, the client a summary.
      if (INTERNAL_CODES.has(err.code)) return problemResponse(c, 500, err.code, 'internal error (see the coordinator log)');
      if (err instanceof NotLeaderError) return problemResponse(c, err.status, err.code, err.message, err.errors, { 'retry-after': '1' }, { leader: err.leader });
      return problemResponse(c, err.status, err.code, err.message, err.errors);
    }
    if (err instanceof HTTPException) {
      return problemResponse(c, err.status, STATUS_CODES[err.status] ?? 'E_INVALID', err.message || TITLES[err.status] || 'error');
    }
    logger.error({ err, path: c.req.path }, 'unhandled error');
    return problemResponse(c, 500, 'E_INTERNAL', 'internal error (see the coordinator log)');
  };
}
