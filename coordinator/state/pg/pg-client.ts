/**
 * The PostgreSQL client: the only module that imports the driver (`pg`, node-postgres; chosen by
 * scripts/bench/pg-driver.ts, see the README). Everything else sees `PgClient`: `query` (rows),
 * `tx` (BEGIN … COMMIT, ROLLBACK on a throw) and `close`, over a pool whose connections use
 * pg's pipelining (queries a transaction issues without awaiting each other leave in one
 * flush; BEGIN goes with the first of them).
 *
 * Errors are mapped once, here: the server unreachable or the connection lost → `E_UNAVAILABLE`
 * naming the redacted URL; SQLSTATE KL001 (kiln_fence: the lease moved on) → `E_NOT_LEADER`;
 * authentication refused or no such database → `E_CONFIG`; any other server error → `E_STATE`
 * with the SQLSTATE and the server's message. A `PgError` keeps the SQLSTATE. The password
 * never appears in a message (it is also scrubbed from the server's text, should it echo it).
 * int8 values (epochs, sequence numbers, counts) come back as numbers when they are safe
 * integers, as strings otherwise.
 *
 * `listenPg` keeps one dedicated connection LISTENing on a few channels (NOTIFY wake-ups, e.g.
 * "new journal rows"), reconnecting with backoff; a notification sent while it was away is
 * lost, so `onState('up')` tells the caller to catch up by reading.
 */
import pg from 'pg';
import { Backoff, coerceError, errnoCode, KilnError, type ErrorCode } from '../../../shared/index.js';
import { parsePostgresUrl, redactPostgresUrl } from './pg-url.js';

export { parsePostgresUrl, redactPostgresUrl } from './pg-url.js';

export interface PgQueryable {
  query<R extends object = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<R[]>;
}

export interface PgClient extends PgQueryable {
  /** BEGIN … COMMIT around `fn`; ROLLBACK (and the error rethrown) when it throws. */
  tx<T>(fn: (q: PgQueryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
  /** The URL with the password masked. */
  readonly location: string;
}

export interface PgOpenOptions {
  /** Shown in pg_stat_activity (`kiln-coordinator`, `kiln-migrate`). */
  applicationName: string;
  /** Pool size (default 10). */
  max?: number;
  /** Time to open a connection (default 10 s). */
  connectTimeoutMs?: number;
  /** The server cancels a statement running longer (default 60 s; 0: no limit). */
  statementTimeoutMs?: number;
  /**
   * The server ends a session that sits inside an open transaction longer than this (default:
   * no limit). A coordinator's write transactions take the lease row FOR SHARE (kiln_fence),
   * which a takeover waits for: a leader paused between two statements of one (a stopped
   * process, a frozen VM) would otherwise hold every standby off for as long as it is paused.
   */
  idleInTransactionTimeoutMs?: number;
  /** A statement waiting longer than this for a lock fails (55P03) instead of waiting on (default: no limit). */
  lockTimeoutMs?: number;
}

/** A mapped driver error: a KilnError with the SQLSTATE when the server sent one. */
export class PgError extends KilnError {
  readonly sqlstate: string | null;
  constructor(code: ErrorCode, message: string, sqlstate: string | null, cause: unknown) {
    super(code, message, { cause });
    this.name = 'PgError';
    this.sqlstate = sqlstate;
  }
}

/** SQLSTATE raised by kiln_fence (migration m001) when the caller no longer holds the lease. */
export const SQLSTATE_NOT_LEADER = 'KL001';

const NETWORK_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ECONNABORTED']);
/** pg's own messages for a connection that is gone or never came (it throws plain Errors for them). */
const LOST_CONNECTION_RE = /Connection terminated|connection timeout|timeout exceeded when trying to connect|not queryable|Client was closed|Connection ended/i;

function sqlstateOf(err: unknown): string | null {
  const e = err as { code?: unknown; severity?: unknown } | null;
  // a server error (pg's DatabaseError) has a severity and a five-character SQLSTATE
  return e && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && typeof e.severity === 'string' ? e.code : null;
}

/** Maps anything the driver throws to a PgError (see the header). Exported for tests. */
export function mapPgError(err: unknown, location: string, password: string): KilnError {
  if (err instanceof KilnError) return err;
  const e = coerceError(err);
  const scrub = (text: string): string => (password ? text.split(password).join('***') : text);
  const message = scrub(e.message.split('\n')[0] ?? '').slice(0, 500);
  const state = sqlstateOf(err);
  if (state === null) {
    const errno = errnoCode(err);
    if ((errno && NETWORK_ERRNOS.has(errno)) || LOST_CONNECTION_RE.test(e.message)) {
      return new PgError('E_UNAVAILABLE', `PostgreSQL at ${location} is unreachable (${message || errno})`, null, err);
    }
    return new PgError('E_STATE', `PostgreSQL at ${location}: ${message}`, null, err);
  }
  if (state === SQLSTATE_NOT_LEADER) return new PgError('E_NOT_LEADER', `this coordinator no longer holds the leader lease (${message})`, state, err);
  // 08 connection exception, 57P01-57P03 shutdown / cannot connect now, 53300 too many connections, 57014 statement
  // timeout, 55P03 lock timeout, 25P03 the session ended by idle_in_transaction_session_timeout
  if (state.startsWith('08') || /^57P0[1-3]$/.test(state) || state === '53300' || state === '57014' || state === '55P03' || state === '25P03') {
    return new PgError('E_UNAVAILABLE', `PostgreSQL at ${location} is unavailable (${state}: ${message})`, state, err);
  }
  // 28 invalid authorization (a wrong password), 3D000 no such database: the setting is wrong
  if (state.startsWith('28') || state === '3D000') return new PgError('E_CONFIG', `PostgreSQL at ${location} refused the connection (${state}: ${message})`, state, err);
  return new PgError('E_STATE', `PostgreSQL error ${state}: ${message}`, state, err);
}

const INT8_OID = 20;
function parseInt8(text: string): number | string {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : text;
}
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseInt8 : pg.types.getTypeParser(oid, format ?? 'text')) as typeof pg.types.getTypeParser,
};

/** The URL checked (parsePostgresUrl), its redacted form for messages, and its password (kept out of every message). */
function checkedUrl(url: string): { checked: string; location: string; password: string } {
  const checked = parsePostgresUrl(url);
  let password = '';
  try {
    password = decodeURIComponent(new URL(checked).password);
  } catch {
    password = '';
  }
  return { checked, location: redactPostgresUrl(checked), password };
}

/**
 * Opens a pool on `url` (checked with parsePostgresUrl) and proves it answers (`SELECT 1`), so
 * an unreachable server or a refused password fails here, mapped as above.
 */
export async function openPg(url: string, opts: PgOpenOptions): Promise<PgClient> {
  const { checked, location, password } = checkedUrl(url);
  const statementTimeout = opts.statementTimeoutMs ?? 60_000;
  const pool = new pg.Pool({
    connectionString: checked,
    application_name: opts.applicationName,
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    pipeline: true,
    types: TYPES,
    ...(statementTimeout > 0 ? { statement_timeout: statementTimeout } : {}),
    ...(opts.idleInTransactionTimeoutMs ? { idle_in_transaction_session_timeout: opts.idleInTransactionTimeoutMs } : {}),
    ...(opts.lockTimeoutMs ? { lock_timeout: opts.lockTimeoutMs } : {}),
  });
  // An idle connection the server closes (a restart) emits 'error' on the pool: without a
  // listener that would end the process. The next query opens a new connection, or fails mapped.
  pool.on('error', () => {});
  const mapped = (err: unknown): KilnError => mapPgError(err, location, password);

  const run = async <R extends object>(q: pg.Pool | pg.PoolClient, text: string, params?: readonly unknown[]): Promise<R[]> => {
    try {
      const res = await q.query<R>(text, params as unknown[] | undefined);
      return res.rows;
    } catch (err) {
      throw mapped(err);
    }
  };

  const client: PgClient = {
    location,
    query: (text, params) => run(pool, text, params),
    async tx<T>(fn: (q: PgQueryable) => Promise<T>): Promise<T> {
      let c: pg.PoolClient;
      try {
        c = await pool.connect();
      } catch (err) {
        throw mapped(err);
      }
      let broken: Error | undefined;
      // A connection lost between two statements of fn makes the checked-out client emit
      // 'error' (no query to fail): without a listener that would end the process. The next
      // statement fails instead, mapped, and the client is dropped at release.
      const onLost = (err: Error): void => {
        broken = err;
      };
      c.on('error', onLost);
      try {
        // Pipelined: BEGIN leaves with the first query of fn; its own error (if any) surfaces
        // as that query's failure too, and is rethrown below.
        const begin = c.query('BEGIN');
        begin.catch(() => {});
        const result = await fn({ query: (text, params) => run(c, text, params) });
        await begin.catch((err: unknown) => {
          throw mapped(err);
        });
        let commit: pg.QueryResult;
        try {
          commit = await c.query('COMMIT');
        } catch (err) {
          throw mapped(err);
        }
        // COMMIT of a transaction a failed statement aborted (fn caught that error) answers
        // ROLLBACK without an error: nothing landed, and the caller must not think it did.
        if (commit.command === 'ROLLBACK') throw new PgError('E_STATE', 'the transaction was rolled back: a statement in it failed', null, undefined);
        return result;
      } catch (err) {
        try {
          await c.query('ROLLBACK');
        } catch (rollbackErr) {
          broken = coerceError(rollbackErr); // the connection is unusable: the pool drops it
        }
        throw mapped(err);
      } finally {
        c.off('error', onLost);
        c.release(broken);
      }
    },
    async close() {
      await pool.end();
    },
  };
  try {
    await client.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  return client;
}

/** Channel names kiln listens on: plain identifiers, so they need no quoting. */
const CHANNEL_RE = /^[a-z_][a-z0-9_]{0,62}$/;

export interface PgListenOptions {
  applicationName: string;
  channels: readonly string[];
  onNotify: (channel: string, payload: string) => void;
  /** 'up' after each (re)connection (catch up: notifications while away are lost); 'down' when it is lost. */
  onState?: (state: 'up' | 'down', err?: KilnError) => void;
  /** Reconnect delays (default 100 ms doubling to 5 s, with jitter). */
  backoff?: { baseMs: number; capMs: number };
  connectTimeoutMs?: number;
}

export interface PgListener {
  /** true while LISTENing. */
  readonly connected: boolean;
  close(): Promise<void>;
}

/**
 * LISTENs on `channels` over a connection of its own (not from a pool: a pooled connection
 * would carry the LISTEN to other users). Resolves once listening (an unreachable server
 * rejects, mapped as above); after that a lost connection is reopened with backoff.
 */
export async function listenPg(url: string, opts: PgListenOptions): Promise<PgListener> {
  const { checked, location, password } = checkedUrl(url);
  for (const ch of opts.channels) if (!CHANNEL_RE.test(ch)) throw new KilnError('E_INTERNAL', `bad LISTEN channel name '${ch.slice(0, 80)}'`);
  const backoff = new Backoff({ baseMs: opts.backoff?.baseMs ?? 100, capMs: opts.backoff?.capMs ?? 5000 });
  let client: pg.Client | null = null;
  let closed = false;
  let retry: NodeJS.Timeout | null = null;

  const connect = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: checked, application_name: opts.applicationName, connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000, keepAlive: true });
    let lost = false;
    const onLost = (err: unknown): void => {
      if (lost) return;
      lost = true;
      if (client === c) client = null;
      c.end().catch(() => {});
      if (closed) return;
      opts.onState?.('down', mapPgError(err ?? new Error('Connection terminated'), location, password));
      schedule();
    };
    c.on('error', onLost);
    c.on('end', () => onLost(new Error('Connection ended')));
    c.on('notification', (n) => {
      if (!closed) opts.onNotify(n.channel, n.payload ?? '');
    });
    try {
      await c.connect();
      for (const ch of opts.channels) await c.query(`LISTEN ${ch}`);
    } catch (err) {
      lost = true;
      c.end().catch(() => {});
      throw mapPgError(err, location, password);
    }
    if (closed) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
    backoff.reset();
    opts.onState?.('up');
  };

  const schedule = (): void => {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = null;
      connect().catch((err: unknown) => {
        opts.onState?.('down', mapPgError(err, location, password));
        schedule();
      });
    }, backoff.next());
    retry.unref();
  };

  await connect();
  return {
    get connected() {
      return client !== null;
    },
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      retry = null;
      const c = client;
      client = null;
      await c?.end().catch(() => {});
    },
  };
}
