/**
 * The CLI's HTTP client for the coordinator API: adds the token, maps failures to exit
 * codes (unreachable = 2, token refused = 4), turns problem+json into readable errors
 * (with the field errors of a rejected spec), and parses responses with the shared
 * schemas. A response that is not the JSON the schema expects is a CliError too (exit 2),
 * never an exception with a stack trace. With a CA file (`--ca-file`) requests go through
 * a fetch that trusts that CA (undici, loaded only then); a certificate the client refuses
 * is an error saying so and naming the CA file.
 */
import type { z } from 'zod';
import { Problem, coerceError, fetchTrusting, tlsRefusalMessage } from '../shared/index.js';
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

export class ApiClient {
  private transport: Promise<typeof fetch> | null = null;

  constructor(
    readonly config: ClientConfig,
    private readonly wait: (ms: number) => Promise<void> = sleep,
  ) {}

  /** The fetch requests go through: global fetch, or one trusting the CA file. */
  private fetchFn(): Promise<typeof fetch> {
    const ca = this.config.ca;
    this.transport ??= ca ? fetchTrusting(ca.pem) : Promise.resolve(fetch);
    return this.transport;
  }

  url(path: string): string {
    return `${this.config.baseUrl}${path}`;
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
      const res = await this.once(path, init);
      if (res.status !== 429 || !replayable || attempt >= RATE_LIMIT_RETRIES) return res;
      await res.body?.cancel().catch(() => {});
      await this.wait(retryAfterMs(res.headers.get('retry-after')));
    }
  }

  private async once(path: string, init: RequestInit): Promise<Response> {
    try {
      const send = await this.fetchFn();
      return await send(this.url(path), { ...init, headers: this.headers((init.headers as Record<string, string>) ?? {}) });
    } catch (err) {
      const refused = tlsRefusalMessage(err, `the coordinator at ${this.config.baseUrl}`, this.config.ca?.file ?? null);
      if (refused !== null) throw new UnreachableError(refused);
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new UnreachableError(`cannot reach the coordinator at ${this.config.baseUrl}: ${cause?.code ?? cause?.message ?? coerceError(err).message}`);
    }
  }

  async failure(res: Response): Promise<CliError> {
    const text = await res.text().catch(() => '');
    let detail = text.trim() || res.statusText;
    let details: string[] = [];
    try {
      const p = Problem.safeParse(JSON.parse(text));
      if (p.success) {
        detail = p.data.detail;
        details = (p.data.errors ?? []).map((e) => e.message);
      }
    } catch {
      /* not JSON */
    }
    if (res.status === 429) return new CliError(`the coordinator is rate limiting this key or address: ${detail} (still refused after ${RATE_LIMIT_RETRIES} retries)`, EXIT.USAGE);
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
