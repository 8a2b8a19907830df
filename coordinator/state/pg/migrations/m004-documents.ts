/**
 * Migration 4: the coordinator's documents in PostgreSQL (`pg/pg-documents.ts`): API keys,
 * agent credentials, the encrypted secrets, reuse records and the generated tokens, one row
 * per document, read and written whole. `version` grows by one at each write (standbys
 * reload a store when it moved). `kiln_document_put` writes one document fenced by the
 * leader lease (`kiln_fence`) in one statement, and returns the new version.
 */
// Typed where it is listed (index.ts), so this file imports nothing (no import cycle).
export const m004Documents = {
  version: 4,
  name: 'documents',
  sql: `
CREATE TABLE kiln_document (
  name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 300),
  body text NOT NULL,
  version bigint NOT NULL CHECK (version > 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION kiln_document_put(p_epoch bigint, p_holder text, p_name text, p_body text) RETURNS bigint
LANGUAGE plpgsql AS $put$
DECLARE
  v bigint;
BEGIN
  PERFORM kiln_fence(p_epoch, p_holder);
  INSERT INTO kiln_document (name, body, version) VALUES (p_name, p_body, 1)
    ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, version = kiln_document.version + 1, updated_at = now()
    RETURNING version INTO v;
  RETURN v;
END
$put$;
`,
} as const;
