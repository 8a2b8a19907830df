/**
 * The logs of an embedded coordinator's builds, moved into the PostgreSQL log store's tables
 * (`kiln state migrate`, issue 14): for every attempt of every build (active and archived),
 * its log file in the data dir (`LogStore`: the coordinator's header, then the agent's
 * bytes) becomes the attempt's row (the header) and its chunks (the agent's bytes, addressed by
 * their offset, at most MAX_CHUNK_ROW_BYTES each), as `PgLogStore` writes them. Attempts without
 * a file (never started) get no rows. Written by the caller's transaction.
 */
import { readFile } from 'node:fs/promises';
import { errnoCode, KilnError } from '../../shared/index.js';
import type { PgQueryable } from '../state/pg/pg-client.js';
import type { BuildRecord } from '../state/records.js';
import { LogStore } from './log-store.js';
import { MAX_CHUNK_ROW_BYTES } from './pg-log-store.js';

export interface MovedLogs {
  attempts: number;
  bytes: number;
}

/** Writes the log rows of `build` (read from `dataDir`'s files) with `q`; adds to `moved`. */
export async function moveBuildLogs(q: PgQueryable, dataDir: string, build: BuildRecord, moved: MovedLogs): Promise<void> {
  const files = new LogStore(dataDir);
  for (const n of build.nodes) {
    for (const a of n.attempts) {
      const path = files.attemptPath(build.id, n.name, a.number);
      let bytes: Buffer;
      try {
        bytes = await readFile(path);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        throw new KilnError('E_STATE', `log file ${path} cannot be read (${errnoCode(err) ?? 'error'})`, { cause: err });
      }
      const header = Buffer.from(a.log_header ?? '');
      const hasHeader = header.length > 0 && bytes.length >= header.length && bytes.subarray(0, header.length).equals(header);
      const head = hasHeader ? header : Buffer.alloc(0);
      const agent = bytes.subarray(head.length);
      await q.query('INSERT INTO kiln_log_attempt (build_id, node, attempt, header) VALUES ($1, $2, $3, $4)', [build.id, n.name, a.number, head]);
      for (let off = 0; off < agent.length; off += MAX_CHUNK_ROW_BYTES) {
        await q.query('INSERT INTO kiln_log_chunk (build_id, node, attempt, agent_offset, epoch, data) VALUES ($1, $2, $3, $4, 0, $5)', [build.id, n.name, a.number, off, agent.subarray(off, off + MAX_CHUNK_ROW_BYTES)]);
      }
      moved.attempts++;
      moved.bytes += bytes.length;
    }
  }
}
