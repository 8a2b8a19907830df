/**
 * `kiln state migrate --from DATA_DIR --to postgres://…` (issue 14): moves an embedded
 * coordinator's state into an empty PostgreSQL database, so coordinators started with
 * `--state postgres://…` carry on from it.
 *
 * What moves: the state (active builds, archived builds' summaries, dead letters, agent
 * controls) as the database's first snapshot, every archived build's record, and the
 * documents (state/documents.ts): reuse records, the generated legacy tokens, API keys,
 * agent credentials and enrolment tokens, the encrypted secrets, and every build's logs
 * (logs/migrate-logs.ts, into the PostgreSQL log store's tables). What stays: the secrets key
 * (a file each coordinator is given), the local CAS of the data dir (the coordinators of a
 * shared state use S3), the audit log.
 *
 * Safety: the data dir is locked as a coordinator locks it (a running coordinator's dir is
 * refused, E_LOCKED) and read with the coordinator's own code (a corrupt state or store is
 * refused, naming it). Everything is read and checked first, then written in one transaction
 * that locks the lease table and refuses a database where a coordinator holds a live lease or
 * that already holds builds or documents: the database ends up with all of it or none of it.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError, errnoCode } from '../../shared/index.js';
import { AgentCredentialStore } from '../access/agent-credentials.js';
import { ApiKeyStore } from '../access/api-keys.js';
import { SecretStore } from '../secrets/secret-store.js';
import { lockDataDir } from './data-dir.js';
import { DOCUMENTS, FileDocuments } from './documents.js';
import { EmbeddedBackend, STATE_FILE } from './embedded-backend.js';
import { migrate } from './pg/migrate.js';
import { openPg, parsePostgresUrl, type PgQueryable } from './pg/pg-client.js';
import { stateFromFile, stateToFile, type BuildRecord } from './records.js';
import { moveBuildLogs, type MovedLogs } from '../logs/migrate-logs.js';
import { StateStore } from './state-store.js';

export interface MigrateStateOptions {
  /** The embedded coordinator's data dir. */
  from: string;
  /** The PostgreSQL URL (an empty database). */
  to: string;
  /** The secrets key file, when `secrets.json` holds secrets (to check the store opens). @default DATA_DIR/keys/secrets.key */
  secretsKeyFile?: string | undefined;
}

export interface MigrateStateResult {
  /** The database, its password masked. */
  to: string;
  builds: number;
  archived: number;
  deadLetters: number;
  agentControls: number;
  reuseRecords: number;
  apiKeys: number;
  agentCredentials: number;
  enrolTokens: number;
  secrets: number;
  /** Generated legacy tokens moved (tokens/agent, tokens/api). */
  tokens: number;
  /** The secrets key file the coordinators must be given (null when there are no secrets). */
  secretsKeyFile: string | null;
  /** Attempt logs moved into the database, and their bytes. */
  logAttempts: number;
  logBytes: number;
}

/** Rows per INSERT (each row one parameter pair). */
const BATCH = 500;

async function insertRows(q: PgQueryable, sql: string, rows: ReadonlyArray<readonly [string, string]>): Promise<void> {
  for (let i = 0; i < rows.length; i += BATCH) {
    const part = rows.slice(i, i + BATCH);
    await q.query(sql, [part.map((r) => r[0]), part.map((r) => r[1])]);
  }
}

/** Refuses (E_CONFLICT) a database a coordinator leads or that already holds a state. */
async function checkEmpty(q: PgQueryable, location: string): Promise<void> {
  const live = await q.query<{ url: string }>('SELECT url FROM kiln_lease WHERE expires_at > now()');
  if (live[0]) throw new KilnError('E_CONFLICT', `a coordinator (${live[0].url}) holds the lease on ${location}: stop every coordinator of that database before migrating into it`);
  const counts = await q.query<{ journal: number; archived: number; documents: number; snapshots: number }>(
    `SELECT (SELECT count(*)::int FROM kiln_state_journal) AS journal, (SELECT count(*)::int FROM kiln_archived_build) AS archived,
            (SELECT count(*)::int FROM kiln_document) AS documents, (SELECT count(*)::int FROM kiln_state_snapshot WHERE seq > 0) AS snapshots`,
  );
  const c = counts[0]!;
  const snap = await q.query<{ body: string }>('SELECT body FROM kiln_state_snapshot WHERE seq = 0');
  const first = snap[0] ? stateFromFile(JSON.parse(snap[0].body)) : 'missing';
  const held = typeof first === 'string' ? 1 : first.builds.size + first.archived.size + first.deadLetter.size + first.agentControls.size;
  if (c.journal + c.archived + c.documents + c.snapshots + held > 0) {
    throw new KilnError(
      'E_CONFLICT',
      `${location} already holds a kiln state (${c.journal} journal rows, ${c.archived} archived builds, ${c.documents} documents, ${held} builds or records in the first snapshot): migrate into an empty database (CREATE DATABASE …)`,
    );
  }
}

export async function migrateState(opts: MigrateStateOptions): Promise<MigrateStateResult> {
  const url = parsePostgresUrl(opts.to);
  const dir = opts.from;
  try {
    if (!(await stat(dir)).isDirectory()) throw new KilnError('E_CONFIG', `--from ${dir} is not a directory`);
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new KilnError('E_CONFIG', `--from ${dir} cannot be read (${errnoCode(err) ?? 'error'}): give the embedded coordinator's data dir`, { cause: err });
  }
  try {
    await stat(join(dir, STATE_FILE));
  } catch {
    throw new KilnError('E_CONFIG', `--from ${dir} holds no coordinator state (${STATE_FILE} is missing): give the embedded coordinator's data dir`);
  }

  // Checked before anything is read: the database answers, its schema is current, it is empty.
  const pg = await openPg(url, { applicationName: 'kiln-migrate', max: 2, statementTimeoutMs: 0 });
  try {
    await migrate(pg);
    await checkEmpty(pg, pg.location);

    const release = await lockDataDir(dir);
    try {
      // The state, read (and its journal recovered) as the coordinator reads it.
      const backend = new EmbeddedBackend({ dataDir: dir, minCompactBytes: 32 * 1024 * 1024, unsyncedJournal: false });
      const store = await StateStore.open({ dataDir: dir, persist: true, init: false, backend });
      const data = store.data;
      const snapshot = JSON.stringify(stateToFile(data));
      const archives: Array<[string, string]> = [];
      for (const id of data.archived.keys()) archives.push([id, await backend.readArchive(id)]);
      const builds: BuildRecord[] = [...data.builds.values(), ...archives.map(([, json]) => JSON.parse(json) as BuildRecord)];
      await store.drain();

      // The documents, each checked by the store that reads it.
      const files = new FileDocuments(dir);
      const keys = await ApiKeyStore.open(files);
      const credentials = await AgentCredentialStore.open(files);
      const documents: Array<[string, string]> = [];
      const take = async (name: string): Promise<boolean> => {
        const body = await files.read(name);
        if (body === null) return false;
        documents.push([name, body]);
        return true;
      };
      await take(DOCUMENTS.apiKeys);
      await take(DOCUMENTS.agentCredentials);
      let secretsKeyFile: string | null = null;
      let secrets = 0;
      if (await take(DOCUMENTS.secrets)) {
        const s = await SecretStore.open({ dataDir: dir, keyFile: opts.secretsKeyFile });
        secrets = s.size;
        secretsKeyFile = s.keyFile;
      }
      let tokens = 0;
      for (const name of [DOCUMENTS.agentToken, DOCUMENTS.apiToken]) {
        const body = await files.read(name);
        if (body === null) continue;
        if (body.trim().length < 16) throw new KilnError('E_CONFIG', `token file ${files.where(name)} holds no usable token (need at least 16 characters)`);
        documents.push([name, body]);
        tokens++;
      }
      let reuseRecords = 0;
      for (const name of await files.list(DOCUMENTS.reuseFolder)) {
        const body = (await files.read(name)) ?? '';
        let ok = false;
        try {
          const v = JSON.parse(body) as { key?: unknown };
          ok = typeof v.key === 'string';
        } catch {
          ok = false;
        }
        if (!ok) throw new KilnError('E_STATE', `reuse record ${files.where(name)} is unreadable (not a reuse record); move it away to leave it out`);
        documents.push([name, body]);
        reuseRecords++;
      }

      const logs: MovedLogs = { attempts: 0, bytes: 0 };
      // One transaction: all of it lands or none. The lease table is locked so no coordinator
      // takes the lead (and reads the empty state) meanwhile.
      await pg.tx(async (q) => {
        await q.query('LOCK TABLE kiln_lease IN EXCLUSIVE MODE');
        await checkEmpty(q, pg.location);
        await q.query('UPDATE kiln_state_snapshot SET body = $1, written_at = now() WHERE seq = 0', [snapshot]);
        await insertRows(q, 'INSERT INTO kiln_archived_build (id, body) SELECT * FROM unnest($1::text[], $2::text[])', archives);
        await insertRows(q, 'INSERT INTO kiln_document (name, body, version) SELECT n, b, 1 FROM unnest($1::text[], $2::text[]) AS d(n, b)', documents);
        // every build's logs, so the coordinators on the database serve them
        for (const b of builds) await moveBuildLogs(q, dir, b, logs);
      });

      const tokenList = credentials.listTokens();
      return {
        to: pg.location,
        builds: data.builds.size,
        archived: data.archived.size,
        deadLetters: data.deadLetter.size,
        agentControls: data.agentControls.size,
        reuseRecords,
        apiKeys: keys.list().length,
        agentCredentials: credentials.credentialCount(),
        enrolTokens: tokenList.length,
        secrets,
        tokens,
        secretsKeyFile,
        logAttempts: logs.attempts,
        logBytes: logs.bytes,
      };
    } finally {
      await release();
    }
  } finally {
    await pg.close();
  }
}

/** What `kiln state migrate` prints. */
export function migrateStateText(r: MigrateStateResult): string {
  const lines = [
    `migrated into ${r.to}:`,
    `  builds:            ${r.builds} active, ${r.archived} archived`,
    `  dead letters:      ${r.deadLetters}`,
    `  agent controls:    ${r.agentControls}`,
    `  reuse records:     ${r.reuseRecords}`,
    `  API keys:          ${r.apiKeys}`,
    `  agent credentials: ${r.agentCredentials} (and ${r.enrolTokens} enrolment tokens)`,
    `  secrets:           ${r.secrets}`,
    `  generated tokens:  ${r.tokens}`,
    `  build logs:        ${r.logAttempts} attempts, ${r.logBytes} bytes`,
    `start the coordinators with --state ${r.to.replace(/:\*\*\*@/, ':<password>@')} (each with a data dir of its own)`,
  ];
  if (r.secretsKeyFile) lines.push(`the secrets key stays a file: give every coordinator a copy of ${r.secretsKeyFile} (secrets.key_file)`);
  return `${lines.join('\n')}\n`;
}
