/**
 * The document store (issue 14): the coordinator's small stores — API keys, agent
 * credentials and enrolment tokens, the encrypted build secrets, the reuse index records and
 * the generated legacy tokens — are named JSON (or text) documents, read whole and written
 * whole, durably. Two implementations behave the same:
 *
 * - `FileDocuments` (the embedded coordinator, the default): document `a/b.json` is the file
 *   `<data dir>/a/b.json`, written as the stores always wrote them (temp file, fsync, rename,
 *   fsync of the directory; mode 0600; a directory made on the way is made durable in its
 *   parent), so an existing data dir reads unchanged;
 * - `PgDocuments` (`pg/pg-documents.ts`): rows of `kiln_document(name, body, version,
 *   updated_at)`, each write fenced by the leader lease's epoch, so every coordinator on one
 *   database reads the same keys and credentials, and a new leader has all of them.
 *
 * A write resolves once the document is durable. A missing document reads as null; a
 * document that cannot be read is an error (the stores name it: `where(name)`), never taken
 * as missing. Names are bounded relative paths of lowercase segments (`access/keys.json`,
 * `reuse/<hex>.json`, `tokens/api`): never input from a request.
 */
import { chmod, mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { KilnError, errnoCode, fsyncDir, writeFileDurable } from '../../shared/index.js';

export interface DocumentStore {
  readonly kind: 'files' | 'postgres';
  /** The data dir, or the database URL without its password. */
  readonly location: string;
  /** Where document `name` is, for messages (a path, or the name in the database). */
  where(name: string): string;
  /** The document, or null when there is none. */
  read(name: string): Promise<string | null>;
  /** Replaces (or creates) the document; resolves once it is durable. */
  write(name: string, body: string): Promise<void>;
  /**
   * Writes `body` unless the document exists, and returns what the store holds after
   * (`body`, or the document already there): coordinators starting together agree on one.
   */
  create(name: string, body: string): Promise<string>;
  /**
   * A number that changes whenever the document does, per existing document of `names`
   * (standbys reload a store when its number moved).
   */
  versions(names: readonly string[]): Promise<Map<string, number>>;
  /** Names of the documents under a folder (`reuse`), for `kiln state migrate`. */
  list(folder: string): Promise<string[]>;
}

const SEGMENT = '[a-z0-9][a-z0-9._-]{0,99}';
const NAME_RE = new RegExp(`^${SEGMENT}(?:/${SEGMENT}){0,3}$`);

/** Throws E_INTERNAL unless `name` is a document name (a programming error otherwise). */
export function checkDocumentName(name: string): string {
  if (name.length > 300 || !NAME_RE.test(name) || name.split('/').some((s) => s === '.' || s === '..' || s.includes('..'))) {
    throw new KilnError('E_INTERNAL', `'${name.slice(0, 80)}' is not a document name`);
  }
  return name;
}

/** Document names the coordinator uses (the reuse records are `reuse/<hex>.json`). */
export const DOCUMENTS = {
  apiKeys: 'access/keys.json',
  agentCredentials: 'access/agents.json',
  secrets: 'secrets.json',
  agentToken: 'tokens/agent',
  apiToken: 'tokens/api',
  reuseFolder: 'reuse',
} as const;

/** The documents as files in the data dir, exactly where and how the stores kept them before. */
export class FileDocuments implements DocumentStore {
  readonly kind = 'files';

  constructor(readonly location: string) {}

  where(name: string): string {
    return join(this.location, checkDocumentName(name));
  }

  async read(name: string): Promise<string | null> {
    try {
      return await readFile(this.where(name), 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      throw err;
    }
  }

  async write(name: string, body: string): Promise<void> {
    const path = this.where(name);
    // A directory made here is made durable in its parent before the first file in it is acknowledged.
    const made = await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    if (made) await fsyncDir(dirname(made));
    await writeFileDurable(path, body, 0o600);
    await chmod(path, 0o600);
  }

  async create(name: string, body: string): Promise<string> {
    const existing = await this.read(name);
    if (existing !== null) return existing;
    await this.write(name, body);
    return body;
  }

  async versions(names: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const name of names) {
      try {
        const s = await stat(this.where(name), { bigint: true });
        // the file is replaced by a rename at each write: a new inode (or a new mtime)
        out.set(name, Number((s.ino % 1_000_000n) * 1_000_000n + (s.mtimeNs % 1_000_000n)));
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
    }
    return out;
  }

  async list(folder: string): Promise<string[]> {
    const dir = this.where(folder);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
    // temp files of an interrupted write (`.name.tmp-…`) are not documents
    return names.filter((n) => NAME_RE.test(n) && !n.startsWith('.')).map((n) => `${folder}/${n}`).sort();
  }
}
