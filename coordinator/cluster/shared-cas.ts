/**
 * The CAS of coordinators sharing one state (issue 14): every coordinator serves every
 * build's artifacts after a takeover, so they must all use the same store, and a local-disk
 * CAS (one machine's data dir) cannot be shared. The first coordinator records its CAS in
 * `kiln_cluster_setting`; a coordinator whose CAS differs is refused while any other was seen
 * within three lease TTLs (alone, it may change the record: a move to S3, say); a local-disk
 * CAS is refused as soon as another coordinator is there, and warned about when alone.
 */
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { KilnError } from '../../shared/index.js';
import type { CasConfig } from '../config.js';
import type { PgQueryable } from '../state/pg/pg-client.js';

/** Where a CAS config puts blobs, comparable between coordinators. */
export function casIdentity(cas: CasConfig, dataDir: string): string {
  if (cas.backend === 's3') return `s3 ${cas.s3.endpoint.replace(/\/+$/, '')} ${cas.s3.bucket} ${cas.s3.prefix}`;
  return `local ${hostname()} ${resolve(dataDir, 'cas')}`;
}

export async function checkSharedCas(pg: PgQueryable, cas: CasConfig, dataDir: string, leaseTtlMs: number, selfUrl: string, logger: Logger): Promise<void> {
  const mine = casIdentity(cas, dataDir);
  // Rows of this URL are this coordinator's earlier runs (a restart after a crash), not another one.
  const seen = await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM kiln_coordinators WHERE last_seen > now() - make_interval(secs => $1) AND url <> $2', [(3 * leaseTtlMs) / 1000, selfUrl]);
  const others = seen[0]?.n ?? 0;
  const rows = await pg.query<{ value: string }>("SELECT value FROM kiln_cluster_setting WHERE name = 'cas'");
  const recorded = rows[0]?.value ?? null;
  if (others > 0 && cas.backend === 'local') {
    throw new KilnError('E_CONFIG', `cas.backend local: ${others} other coordinator(s) share this state, and a local-disk CAS cannot be shared (a standby could not serve the artifacts after a takeover); set cas.backend s3 with the same bucket as the others`);
  }
  if (others > 0 && recorded !== null && recorded !== mine) {
    throw new KilnError('E_CONFIG', `cas: the coordinators on this state keep artifacts in ${recorded}, this one in ${mine}; every coordinator of one state must use the same S3 endpoint, bucket and prefix`);
  }
  if (recorded !== mine) {
    await pg.query("INSERT INTO kiln_cluster_setting (name, value) VALUES ('cas', $1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, set_at = now()", [mine]);
    if (recorded !== null) logger.warn({ was: recorded, now: mine }, 'the CAS of this state changed (no other coordinator was running)');
  }
  if (cas.backend === 'local') logger.warn({ cas: mine }, 'a local-disk CAS with a PostgreSQL state: no standby can join (it could not serve these artifacts); set cas.backend s3 before adding one');
}
