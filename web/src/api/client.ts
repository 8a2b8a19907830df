/**
 * The dashboard's API client: same-origin fetch with the session cookie; a problem+json
 * answer becomes an ApiError carrying its status, code and detail.
 *
 * Written by the logview helper with exactly the signatures of the dashboard contract so
 * its components compile before the merge; the web helper owns this file and its version
 * replaces this one.
 */

export class ApiError extends Error {
  readonly status: number;
  readonly code: string | null;

  constructor(status: number, code: string | null, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

async function answer<T>(res: Response): Promise<T> {
  if (res.ok) {
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }
  let code: string | null = null;
  let detail = `${res.status} ${res.statusText}`;
  try {
    const p = (await res.json()) as { code?: unknown; detail?: unknown };
    if (typeof p.code === 'string') code = p.code;
    if (typeof p.detail === 'string') detail = p.detail;
  } catch {
    /* not JSON: the status line says it */
  }
  throw new ApiError(res.status, code, detail);
}

export async function apiGet<T>(path: string, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path, { credentials: 'same-origin', headers: { accept: 'application/json' }, ...(signal ? { signal } : {}) });
  return answer<T>(res);
}

export async function apiSend<T>(method: 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return answer<T>(res);
}
