/**
 * The PostgreSQL of the benchmarks that need one (dispatch-pg.ts, takeover.ts): the server
 * (`--postgres URL`, else KILN_TEST_POSTGRES, else the test server's env file written by
 * `scripts/infra/postgres.sh start`), and a fresh database on it per run.
 */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { openPg } from '../../coordinator/state/pg/pg-client.js';

/** The value after `--name` in `args`, or undefined. */
export function argValue(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

/** The server's URL (database `postgres`, a role that may create databases). */
export function benchPostgresUrl(args: readonly string[]): string {
  const given = argValue(args, 'postgres') ?? process.env.KILN_TEST_POSTGRES;
  if (given) return given;
  try {
    const m = /^KILN_TEST_POSTGRES=(\S+)$/m.exec(readFileSync('/run/kiln-infra/postgres/env', 'utf8'));
    if (m) return m[1]!;
  } catch {
    /* below */
  }
  throw new Error('no PostgreSQL: pass --postgres URL or start one with `sudo scripts/infra/postgres.sh start`');
}

/** A new database `<prefix>_<random>` on the server, and its removal. */
export async function benchDatabase(server: string, prefix: string): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = await openPg(server, { applicationName: 'kiln-bench-admin', max: 1 });
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.close();
  }
  const u = new URL(server);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    name,
    drop: async () => {
      const a = await openPg(server, { applicationName: 'kiln-bench-admin', max: 1 });
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.close();
      }
    },
  };
}
