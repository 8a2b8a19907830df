/**
 * Migration 1: the leader lease and its fencing check (issue 14). `kiln_lease` has at most one
 * row: the fencing `epoch` (one more at every takeover), the `holder` (a random id per
 * coordinator process) and its advertised `url`, and `expires_at` in the database's clock (no
 * skew between coordinators). `kiln_coordinators` has a row per coordinator process seen on
 * the database. `kiln_fence(epoch, holder)` starts every write transaction of the leader: it
 * takes the lease row FOR SHARE and raises SQLSTATE KL001 unless the row still has that epoch
 * and holder, so a takeover's UPDATE and a leader's write serialise and a write from a
 * coordinator that lost the lease fails instead of landing.
 */
// Typed where it is listed (index.ts), so this file imports nothing (no import cycle).
export const m001Cluster = {
  version: 1,
  name: 'cluster',
  sql: `
CREATE TABLE kiln_lease (
  id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  epoch bigint NOT NULL CHECK (epoch > 0),
  holder text NOT NULL,
  url text NOT NULL,
  expires_at timestamptz NOT NULL
);

CREATE TABLE kiln_coordinators (
  holder text PRIMARY KEY,
  url text NOT NULL,
  role text NOT NULL CHECK (role IN ('leader', 'standby')),
  last_seen timestamptz NOT NULL
);
CREATE INDEX kiln_coordinators_last_seen ON kiln_coordinators (last_seen);

CREATE FUNCTION kiln_fence(p_epoch bigint, p_holder text) RETURNS void
LANGUAGE plpgsql AS $fence$
BEGIN
  PERFORM 1 FROM kiln_lease WHERE id = 1 AND epoch = p_epoch AND holder = p_holder FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'not the leader: the lease is no longer held at epoch % by %', p_epoch, p_holder
      USING ERRCODE = 'KL001';
  END IF;
END
$fence$;
`,
} as const;
