/**
 * The PostgreSQL schema's migrations, oldest first: one file per migration
 * (`mNNN-<name>.ts`), one import line each here. `migrate.ts` applies the missing ones in
 * order; a migration, once released, is never edited (a change is a new migration).
 */
import { m001Cluster } from './m001-cluster.js';
import { m002State } from './m002-state.js';
import { m004Documents } from './m004-documents.js';

export interface Migration {
  /** 1, 2, 3, … without gaps, in array order. */
  readonly version: number;
  /** kebab-case, as in the file name. */
  readonly name: string;
  /** Applied in one transaction (so no CREATE INDEX CONCURRENTLY or VACUUM). */
  readonly sql: string;
}

// Branch h-docs only: version 3 is helper L's m003-logs. Until the branches are merged an empty
// stand-in keeps the list without a gap; the merge replaces it with m003Logs.
const m003Pending: Migration = { version: 3, name: 'logs-pending', sql: 'SELECT 1' };

export const MIGRATIONS: readonly Migration[] = [m001Cluster, m002State, m003Pending, m004Documents];
