/**
 * A real PostgreSQL for tests (issue 14), never a mock. The shared test server is the one
 * `scripts/infra/postgres.sh start` runs (scripts/test.sh starts it): its URL comes from
 * KILN_TEST_POSTGRES or the env file it writes. `freshDatabase()` gives a test file a database
 * of its own (`kiln_t_<random>`), dropped by `drop()`. A failover test that stops and starts the
 * server takes `privatePostgres()`: the same script on a temp directory, a server of its own
 * on another free port, so the other test files running meanwhile are not disturbed.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { KilnError } from '../../shared/index.js';
import type { LeaderLease, LeaseRole } from '../../coordinator/cluster/leader-lease.js';

const run = promisify(execFile);
const SCRIPT = resolve(import.meta.dirname, '..', '..', 'scripts', 'infra', 'postgres.sh');
const DEFAULT_ENV_FILE = '/run/kiln-infra/postgres/env';

function urlFromEnvLine(text: string, where: string): string {
  const m = /^KILN_TEST_POSTGRES=(postgres:\/\/\S+)$/m.exec(text);
  if (!m) throw new Error(`${where} holds no KILN_TEST_POSTGRES=postgres://… line`);
  return m[1]!;
}

/** The shared test server's URL (database `postgres`, role kiln). */
export function testPostgresUrl(): string {
  const fromEnv = process.env.KILN_TEST_POSTGRES;
  if (fromEnv) return fromEnv;
  let text: string;
  try {
    text = readFileSync(DEFAULT_ENV_FILE, 'utf8');
  } catch {
    throw new Error(
      `no test PostgreSQL: KILN_TEST_POSTGRES is not set and ${DEFAULT_ENV_FILE} cannot be read. Start one (as root) with ` +
        '`scripts/infra/postgres.sh start` (scripts/test.sh does), then run the tests again',
    );
  }
  return urlFromEnvLine(text, DEFAULT_ENV_FILE);
}

/** `url` with its database replaced by `db`. */
export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

async function admin(serverUrl: string): Promise<PgClient> {
  return openPg(serverUrl, { applicationName: 'kiln-test-admin', max: 1 });
}

export interface TestDatabase {
  /** postgres://kiln:…@127.0.0.1:<port>/kiln_t_<random> */
  url: string;
  name: string;
  /** Drops the database (closing whatever is still connected to it). */
  drop(): Promise<void>;
}

/** A new empty database on the shared test server (or on `serverUrl`), for one test file. */
export async function freshDatabase(serverUrl: string = testPostgresUrl()): Promise<TestDatabase> {
  const name = `kiln_t_${randomBytes(6).toString('hex')}`;
  const a = await admin(serverUrl);
  try {
    await a.query(`CREATE DATABASE ${name}`);
  } finally {
    await a.close();
  }
  return {
    url: withDatabase(serverUrl, name),
    name,
    drop: async () => {
      const b = await admin(serverUrl);
      try {
        await b.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await b.close();
      }
    },
  };
}

export interface PrivatePostgres {
  /** The server's URL (database postgres); the port stays the same across stop()/start(). */
  url: string;
  /** pg_ctl stop -m fast: connected clients see their connections end. */
  stop(): Promise<void>;
  start(): Promise<void>;
  restart(): Promise<void>;
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
}

async function script(dir: string, cmd: 'start' | 'stop' | 'restart'): Promise<string> {
  try {
    const { stdout } = await run('bash', [SCRIPT, cmd], { env: { ...process.env, KILN_PG_DIR: dir }, maxBuffer: 1 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`scripts/infra/postgres.sh ${cmd} (KILN_PG_DIR=${dir}) failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-5).join(' | ')}`);
  }
}

/** A PostgreSQL server of the test's own (root needed: it runs as the postgres user). */
export async function privatePostgres(): Promise<PrivatePostgres> {
  const parent = await mkdtemp(join(tmpdir(), 'kiln-pg-'));
  await chmod(parent, 0o755); // the server runs as the postgres user, which must reach pg/ inside
  const dir = join(parent, 'pg');
  let url: string;
  try {
    url = urlFromEnvLine(await script(dir, 'start'), 'postgres.sh start');
  } catch (err) {
    await rm(parent, { recursive: true, force: true });
    throw err;
  }
  return {
    url,
    stop: async () => {
      await script(dir, 'stop');
    },
    start: async () => {
      const again = urlFromEnvLine(await script(dir, 'start'), 'postgres.sh start');
      if (again !== url) throw new Error(`the private PostgreSQL came back on another URL (its port was taken): ${again}`);
    },
    restart: async () => {
      await script(dir, 'restart');
    },
    destroy: async () => {
      try {
        await script(dir, 'stop');
      } finally {
        await rm(parent, { recursive: true, force: true });
      }
    },
  };
}

/** The KilnError `p` rejects with (a test of a refusal); fails when it resolves or rejects with anything else. */
export async function caught(p: Promise<unknown>): Promise<KilnError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KilnError) return err;
    throw err;
  }
  throw new Error('expected a KilnError, got success');
}

/** Resolves at the next 'role' event of `l` with `role` (no time limit: vitest's timeout catches a hang). */
export function nextRole(l: LeaderLease, role: LeaseRole): Promise<number> {
  return new Promise((resolve) => {
    const on = (r: LeaseRole, epoch: number): void => {
      if (r !== role) return;
      l.off('role', on);
      resolve(epoch);
    };
    l.on('role', on);
  });
}
