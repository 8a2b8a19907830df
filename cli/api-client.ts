/**
 * The CLI's HTTP client for the coordinator API: adds the token, maps failures to exit
 * codes (unreachable = 2, token refused = 4), turns problem+json into readable errors
 * (with the field errors of a rejected spec), and parses responses with the shared
 * schemas. A response that is not the JSON the schema expects is a CliError too (exit 2),
 * never an exception with a stack trace. With a CA file (`--ca-file`) requests go through
 * a fetch that trusts that CA (undici, loaded only then); a certificate the client refuses
 * is an error saying so and naming the CA file.
 *
 * Several coordinators (issue 14, `--coordinator URL1,URL2`): each request goes to the last
 * one that answered (at first, the first of the list). A request that could not be sent
 * (connection refused, host unreachable or unknown, connect timeout, a refused certificate)
 * goes to the next one, whatever its method; a 503 E_NOT_LEADER problem from a standby (it
 * did nothing) sends it to the leader the problem names when that is in the list, else to
 * the next one; an answer lost after the request was sent is asked again elsewhere only for
 * GET and HEAD, never a submission or any other write (it may have been done). Each
 * coordinator is tried at most once per request. With one URL nothing of this applies.
 */
import type { z } from 'zod';
import { Problem, coerceError, coordinatorKey, fetchTrusting, indexOfCoordinator, readBoundedText, tlsRefusalMessage } from '../shared/index.js';
import type { ClientConfig } from './client-config.js';
import { CliError, EXIT } from './exit-codes.js';

/** The coordinator could not be reached at all (no HTTP response): exit 2. */
export class UnreachableError extends CliError {
  constructor(message: string) {
    super(message, EXIT.USAGE);
    this.name = 'UnreachableError';
  }
}

/** Retries of a request answered 429, and the longest wait honoured per retry (ms). */
export const RATE_LIMIT_RETRIES = 3;
const MAX_RETRY_AFTER_MS = 30_000;

/** Retry-After as ms (delta-seconds or an HTTP date), capped; 1 s when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number {
  const text = header?.trim() ?? '';
  let ms = 1000;
  if (/^\d{1,10}$/.test(text)) ms = Number(text) * 1000;
  else if (text !== '' && Number.isFinite(Date.parse(text))) ms = Date.parse(text) - now;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Connection failures that happen before a byte of the request left (nothing was done). */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);
/** A problem body is small: a 503 longer than this is not read as one. */
const MAX_PROBLEM_BYTES = 64 * 1024;

/** A request that got no HTTP response from one coordinator. */
class SendFailure extends Error {
  constructor(
    /** What to tell the user (the code, or the certificate refusal). */
    readonly brief: string,
    /** A complete sentence for this coordinator alone (the single-URL message). */
    readonly sentence: string,
    /** Nothing was sent: the connection (or TLS handshake) failed. */
    readonly notSent: boolean,
  ) {
    super(sentence);
  }
}

export class ApiClient {
  private transport: Promise<typeof fetch> | null = null;
  /** The coordinator list (one entry for a single URL) and their comparison keys. */
  private readonly bases: readonly string[];
  private readonly keys: readonly string[];
  /** Index in `bases` of the coordinator that answered last. */
  private current = 0;

  constructor(
    readonly config: ClientConfig,
    private readonly wait: (ms: number) => Promise<void> = sleep,
  ) {
    this.bases = config.baseUrls?.length ? config.baseUrls : [config.baseUrl];
    this.keys = this.bases.map((b) => coordinatorKey(b) ?? b);
  }

  /** The coordinator requests go to now: the one that answered last (at first, the first of the list). */
  get baseUrl(): string {
    return this.bases[this.current]!;
  }

  /** How many coordinators the list names (1 for a single URL). */
  get coordinatorCount(): number {
    return this.bases.length;
  }

  /** The API path of `url` when it points at a coordinator of the list (its requests carry the token), else null. */
  ownPath(url: string): string | null {
    for (const base of this.bases) {
      if (url.startsWith(`${base}/`)) return url.slice(base.length);
    }
    return null;
  }

  /** The fetch requests go through: global fetch, or one trusting the CA file. */
  private fetchFn(): Promise<typeof fetch> {
    const ca = this.config.ca;
    this.transport ??= ca ? fetchTrusting(ca.pem) : Promise.resolve(fetch);
    return this.transport;
  }

  url(path: string): string {
    return `${this.baseUrl}${path}`;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.config.token ? { authorization: `Bearer ${this.config.token}` } : {}), ...extra };
  }

  /**
   * fetch with connection errors turned into UnreachableError (exit 2). A 429 (rate limit)
   * is waited out (Retry-After, at most 30 s) and the request sent again, up to
   * RATE_LIMIT_RETRIES times: every method, since the coordinator answers 429 before a
   * route runs (nothing was done), except a request whose body is a stream (it cannot be
   * sent twice). The last 429 is returned as is.
   */
  async raw(path: string, init: RequestInit = {}): Promise<Response> {
    const replayable = init.body === undefined || init.body === null || typeof init.body === 'string' || init.body instanceof Uint8Array || init.body instanceof ArrayBuffer;
    for (let attempt = 0; ; attempt++) {
      const res = await this.routed(path, init, replayable);
      if (res.status !== 429 || !replayable || attempt >= RATE_LIMIT_RETRIES) return res;
      await res.body?.cancel().catch(() => {});
      await this.wait(retryAfterMs(res.headers.get('retry-after')));
    }
  }

  /** One request, sent to the coordinators of the list as the module comment says. */
  private async routed(path: string, init: RequestInit, replayable: boolean): Promise<Response> {
    if (this.bases.length === 1) {
      try {
        return await this.once(this.bases[0]!, path, init);
      } catch (err) {
        if (err instanceof SendFailure) throw new UnreachableError(err.sentence);
        throw err;
      }
    }
    const method = (init.method ?? 'GET').toUpperCase();
    const readOnly = method === 'GET' || method === 'HEAD';
    const tried = new Set<number>();
    const failures: string[] = [];
    /** The last E_NOT_LEADER refusal: what is reported when no coordinator of the list takes the request. */
    let refusal: { index: number; response: Response } | null = null;
    for (let i = this.current; ; ) {
      tried.add(i);
      const base = this.bases[i]!;
      let res: Response;
      try {
        res = await this.once(base, path, init);
      } catch (err) {
        if (!(err instanceof SendFailure)) throw err;
        failures.push(`${base}: ${err.brief}`);
        const next = this.untried(i, tried);
        if (init.signal?.aborted) throw new UnreachableError(err.sentence);
        if (!err.notSent && !readOnly) {
          throw new UnreachableError(`${err.sentence} after the ${method} request was sent; it was not sent again to another coordinator (it may have been done: check before trying again)`);
        }
        if (next < 0 && refusal !== null) {
          this.current = refusal.index;
          return refusal.response;
        }
        if (!replayable || next < 0) throw new UnreachableError(failures.length === 1 ? err.sentence : `cannot reach any coordinator of the list (${failures.join('; ')})`);
        i = next;
        continue;
      }
      if (res.status === 503 && replayable) {
        const answer = await notLeader(res);
        res = answer.response;
        if (answer.notLeader) {
          failures.push(`${base}: not the leader`);
          refusal = { index: i, response: res };
          const named = indexOfCoordinator(this.keys, answer.leader);
          const next = named >= 0 && !tried.has(named) ? named : this.untried(i, tried);
          if (next >= 0) {
            i = next;
            continue;
          }
        }
      }
      this.current = i;
      return res;
    }
  }

  /** The next coordinator after `i` (in list order, wrapping) not tried yet for this request; -1 when none. */
  private untried(i: number, tried: ReadonlySet<number>): number {
    for (let k = 1; k < this.bases.length; k++) {
      const j = (i + k) % this.bases.length;
      if (!tried.has(j)) return j;
    }
    return -1;
  }

  private async once(base: string, path: string, init: RequestInit): Promise<Response> {
    try {
      const send = await this.fetchFn();
      return await send(`${base}${path}`, { ...init, headers: this.headers((init.headers as Record<string, string>) ?? {}) });
    } catch (err) {
      const refused = tlsRefusalMessage(err, `the coordinator at ${base}`, this.config.ca?.file ?? null);
      if (refused !== null) throw new SendFailure(refused, refused, true);
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const brief = cause?.code ?? cause?.message ?? coerceError(err).message;
      // fetch refuses some ports itself ("bad port", e.g. 9): nothing was sent either.
      const notSent = (cause?.code !== undefined && NOT_SENT_CODES.has(cause.code)) || cause?.message === 'bad port';
      throw new SendFailure(brief, `cannot reach the coordinator at ${base}: ${brief}`, notSent);
    }
  }

  async failure(res: Response): Promise<CliError> {
    const text = await res.text().catch(() => '');
    let detail = text.trim() || res.statusText;
    let details: string[] = [];
    let code: string | null = null;
    let leader: string | null = null;
    try {
      const body = JSON.parse(text) as unknown;
      const p = Problem.safeParse(body);
      if (p.success) {
        detail = p.data.detail;
        details = (p.data.errors ?? []).map((e) => e.message);
        code = p.data.code;
        const named = (body as { leader?: unknown }).leader;
        leader = typeof named === 'string' ? named.slice(0, 2048) : null;
      }
    } catch {
      /* not JSON */
    }
    if (res.status === 429) return new CliError(`the coordinator is rate limiting this key or address: ${detail} (still refused after ${RATE_LIMIT_RETRIES} retries)`, EXIT.USAGE);
    if (res.status === 503 && code === 'E_NOT_LEADER') {
      return new CliError(`${detail} (${leader ? `the leader is ${leader}, which is not in the coordinator list (--coordinator or KILN_COORDINATOR); add it` : 'no leader is known yet; try again shortly'})`, EXIT.USAGE);
    }
    if (res.status === 401 || res.status === 403) {
      const hint = this.config.token ? `(token from ${this.config.tokenSource})` : '(no token: use --token-file, KILN_TOKEN_FILE or KILN_TOKEN)';
      return new CliError(`the coordinator refused the request: ${detail} ${hint}`, EXIT.AUTH);
    }
    return new CliError(detail, res.status === 409 ? EXIT.BUILD_FAILED : EXIT.USAGE, details.length > 1 ? details : []);
  }

  async json<T extends z.ZodType>(path: string, schema: T, init: RequestInit = {}): Promise<z.infer<T>> {
    const res = await this.raw(path, init);
    if (!res.ok) throw await this.failure(res);
    let body: unknown;
    try {
      body = JSON.parse(await res.text());
    } catch (err) {
      if (err instanceof SyntaxError) throw new CliError(`unexpected response from ${path}: not JSON (${res.headers.get('content-type') ?? 'no content type'})`, EXIT.USAGE);
      throw err;
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) throw new CliError(`unexpected response from ${path}: ${parsed.error.issues[0]?.message ?? 'invalid'}`, EXIT.USAGE);
    return parsed.data;
  }
}

/**
 * Whether a 503 is an E_NOT_LEADER problem, and the leader it names (null: none known).
 * `response` is the one to use from then on: rebuilt from the bytes read when the body was
 * read (a JSON body of at most MAX_PROBLEM_BYTES), else the 503 itself, unread.
 */
async function notLeader(res: Response): Promise<{ notLeader: boolean; leader: string | null; response: Response }> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (!/json/i.test(res.headers.get('content-type') ?? '') || declared > MAX_PROBLEM_BYTES) return { notLeader: false, leader: null, response: res };
  const { text, truncated } = await readBoundedText(res, MAX_PROBLEM_BYTES);
  const response = new Response(text, { status: res.status, statusText: res.statusText, headers: res.headers });
  const body = truncated ? null : jsonObject(text);
  if (body === null || body.code !== 'E_NOT_LEADER') return { notLeader: false, leader: null, response };
  return { notLeader: true, leader: typeof body.leader === 'string' ? body.leader : null, response };
}

function jsonObject(text: string): { code?: unknown; leader?: unknown } | null {
  try {
    const v = JSON.parse(text) as unknown;
    return v !== null && typeof v === 'object' ? (v as { code?: unknown; leader?: unknown }) : null;
  } catch {
    return null;
  }
}
