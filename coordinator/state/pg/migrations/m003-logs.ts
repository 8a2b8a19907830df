/**
 * Migration 3: build logs in PostgreSQL (`coordinator/logs/pg-log-store.ts`), so a standby
 * that takes over serves every build's logs. `kiln_log_attempt` has a row per attempt log (its
 * header: the coordinator's note on why it was re-queued, often empty); `kiln_log_chunk` has
 * the agent's bytes in rows addressed by the agent's offset of their first byte. Chunks of an
 * attempt are contiguous and never overlap (the leader writes them in order, fenced by
 * `kiln_fence`), each at most 256 KiB, so an attempt's size is its last chunk's end and a read
 * of [from, to) takes the rows starting in (from - 256 KiB, to). Chunks are compressed with lz4
 * (PostgreSQL 14 or later, built with lz4 as Debian's is): cheaper than the default pglz at
 * the rates logs come in (scripts/bench/log-store.ts).
 */
// Typed where it is listed (index.ts), so this file imports nothing (no import cycle).
export const m003Logs = {
  version: 3,
  name: 'logs',
  sql: `
CREATE TABLE kiln_log_attempt (
  build_id text NOT NULL,
  node text NOT NULL,
  attempt integer NOT NULL CHECK (attempt > 0),
  header bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (build_id, node, attempt)
);
CREATE TABLE kiln_log_chunk (
  build_id text NOT NULL,
  node text NOT NULL,
  attempt integer NOT NULL,
  agent_offset bigint NOT NULL CHECK (agent_offset >= 0),
  epoch bigint NOT NULL,
  data bytea COMPRESSION lz4 NOT NULL CHECK (octet_length(data) BETWEEN 1 AND 262144),
  PRIMARY KEY (build_id, node, attempt, agent_offset)
);
`,
} as const;
