/**
 * The PostgreSQL schema's migrations, oldest first: one file per migration
 * (`mNNN-<name>.ts`), one import line each here. `migrate.ts` applies the missing ones in
 * order; a migration, once released, is never edited (a change is a new migration).
 */
import { m001Cluster } from './m001-cluster.js';
import { m002State } from './m002-state.js';
import { m003Logs } from './m003-logs.js';
import { m004Documents } from './m004-documents.js';

export interface Migration {
  /** 1, 2, 3, … without gaps, in array order. */
  readonly version: number;
  /** kebab-case, as in the file name. */
  readonly name: string;
  /** Applied in one transaction (so no CREATE INDEX CONCURRENTLY or VACUUM). */
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [m001Cluster, m002State, m003Logs, m004Documents];
