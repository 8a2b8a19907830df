/**
 * Migration 2: the coordinator's state in PostgreSQL (`pg-state-backend.ts`), the same
 * three parts as the embedded backend's files: snapshots of the whole state (as of a
 * journal seq), the journal (one row per group commit, the same JSON lines as
 * `journal.jsonl`, seqs without gaps), and one row per archived build. The first snapshot,
 * an empty state at seq 0, is written here: a database without one is corrupt, never new.
 * `kiln_state_append` writes one batch (fenced) in one statement: one round trip, one commit.
 */
// Typed where it is listed (index.ts), so this file imports nothing (no import cycle).
export const m002State = {
  version: 2,
  name: 'state',
  sql: `
CREATE TABLE kiln_state_snapshot (
  seq bigint PRIMARY KEY CHECK (seq >= 0),
  epoch bigint NOT NULL,
  body text NOT NULL,
  written_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE kiln_state_journal (
  seq bigint PRIMARY KEY CHECK (seq > 0),
  epoch bigint NOT NULL,
  body text NOT NULL,
  written_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE kiln_archived_build (
  id text PRIMARY KEY,
  body text NOT NULL,
  written_at timestamptz NOT NULL DEFAULT now()
);
-- What every coordinator of the state must agree on (the CAS they share), set by the first.
CREATE TABLE kiln_cluster_setting (
  name text PRIMARY KEY,
  value text NOT NULL,
  set_at timestamptz NOT NULL DEFAULT now()
);
-- One batch in one round trip and one commit: the fencing check, then the row.
CREATE FUNCTION kiln_state_append(p_epoch bigint, p_holder text, p_seq bigint, p_body text) RETURNS void
LANGUAGE plpgsql AS $append$
BEGIN
  PERFORM kiln_fence(p_epoch, p_holder);
  INSERT INTO kiln_state_journal (seq, epoch, body) VALUES (p_seq, p_epoch, p_body);
END
$append$;
INSERT INTO kiln_state_snapshot (seq, epoch, body)
  VALUES (0, 0, '{"format":"kiln-coordinator-state","version":1,"builds":{},"archived":{},"dead_letter":{},"agent_controls":{}}');
`,
} as const;
