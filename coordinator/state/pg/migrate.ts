/**
 * Versioned schema migrations of the PostgreSQL state backend, applied at start. `migrate(pg)`
 * applies the migrations of migrations/index.ts the database lacks, oldest first, each in its
 * own transaction under `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)` (two coordinators starting
 * together apply each once: the second waits, then finds it applied), and records each in
 * `kiln_schema(version, name, applied_at)`. A database whose schema is newer than the newest
 * migration this kiln knows is refused before anything is changed (`E_STATE`: upgrade kiln).
 */
import { KilnError } from '../../../shared/index.js';
import { MIGRATIONS, type Migration } from './migrations/index.js';
import type { PgClient, PgQueryable } from './pg-client.js';

/** The advisory lock key every kiln migration takes ('kiln' in ASCII). */
export const MIGRATION_LOCK_KEY = 0x6b696c6e;

export interface MigrateResult {
  /** Versions this call applied (empty when the schema was up to date). */
  applied: number[];
  /** The schema version now. */
  version: number;
}

const SCHEMA_TABLE = `CREATE TABLE IF NOT EXISTS kiln_schema (
  version integer PRIMARY KEY,
  name text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)`;

/** Checks that the list is 1, 2, 3, … with names in kebab case (a programming error otherwise). */
function checkList(list: readonly Migration[]): void {
  list.forEach((m, i) => {
    if (m.version !== i + 1) throw new KilnError('E_INTERNAL', `migration list out of order: entry ${i} has version ${m.version}`);
    if (!/^[a-z0-9]+(?:-[a-z0-9]+)*$/.test(m.name)) throw new KilnError('E_INTERNAL', `migration ${m.version} has a bad name '${m.name}'`);
  });
}

/** Under the lock: the version recorded (0 for a new database); refuses a newer one. */
async function lockedVersion(q: PgQueryable, newest: number): Promise<number> {
  await q.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
  const exists = await q.query<{ t: string | null }>("SELECT to_regclass('kiln_schema')::text AS t");
  if (exists[0]?.t == null) return 0;
  const rows = await q.query<{ v: number | null }>('SELECT max(version) AS v FROM kiln_schema');
  const version = rows[0]?.v ?? 0;
  if (version > newest) {
    throw new KilnError('E_STATE', `the database schema is version ${version}, newer than this kiln knows (${newest}): upgrade kiln`);
  }
  return version;
}

export async function migrate(pg: PgClient, migrations: readonly Migration[] = MIGRATIONS): Promise<MigrateResult> {
  checkList(migrations);
  const newest = migrations.length;
  // First, under the lock: refuse a newer schema before anything is done; make kiln_schema.
  let version = await pg.tx(async (q) => {
    const v = await lockedVersion(q, newest);
    if (v === 0) await q.query(SCHEMA_TABLE);
    return v;
  });
  const applied: number[] = [];
  for (const m of migrations) {
    if (m.version <= version) continue;
    // Each in its own transaction, the lock taken again: another coordinator may have applied it meanwhile.
    version = await pg.tx(async (q) => {
      const now = await lockedVersion(q, newest);
      if (now >= m.version) return now;
      await q.query(m.sql);
      await q.query('INSERT INTO kiln_schema (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m.version);
      return m.version;
    });
  }
  return { applied, version };
}

/** The schema version recorded in the database (0: none), without changing anything. */
export async function schemaVersion(pg: PgQueryable): Promise<number> {
  const exists = await pg.query<{ t: string | null }>("SELECT to_regclass('kiln_schema')::text AS t");
  if (exists[0]?.t == null) return 0;
  const rows = await pg.query<{ v: number | null }>('SELECT max(version) AS v FROM kiln_schema');
  return rows[0]?.v ?? 0;
}
