/**
 * The coordinator's build secrets (issue 12), encrypted at rest.
 *
 * Store: the document `secrets.json` (state/documents.ts: the file `data_dir/secrets.json`,
 * or a row in a PostgreSQL state), one JSON document written durably (temp file, fsync,
 * rename; mode 0600; or a fenced commit). Each secret is AES-256-GCM with a random 12-byte nonce per value and
 * its name bound as additional data (a value moved to another name does not decrypt), with
 * its size, version and time of the last `set`. A key check (a fixed text encrypted the
 * same way) lets a start tell a wrong key even when the store holds no secret.
 *
 * Key: 32 random bytes, base64, in a file outside the state (`secrets.key_file`; default
 * `data_dir/keys/secrets.key`, created 0600 on the first `set`). Under systemd it comes
 * from a credential (`LoadCredential=`, `$CREDENTIALS_DIRECTORY/secrets.key`). A start with
 * a store the key does not open is refused, naming both files. On a PostgreSQL state the
 * key is not made on the first `set` (`createKey: false`): every coordinator sharing the
 * state must be given the same key file, like a TLS key, or a new leader could not open it.
 *
 * Versions: a store-wide counter, bumped by every `set` and never reused (also not after a
 * removal), so a name's version says which value a build used; builds' reuse keys hold
 * names and versions, never values or their hashes.
 *
 * Plaintext values exist only while a frame is being sent (`values`); memory holds the
 * ciphertext. Bounds: MAX_SECRET_BYTES per value, MAX_SECRETS secrets.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errnoCode, KilnError, MAX_SECRET_BYTES, MAX_SECRETS, SECRET_NAME_RE, SECRET_NAME_RULE } from '../../shared/index.js';
import { writeFileDurable } from '../../shared/index.js';
import { DOCUMENTS, FileDocuments, type DocumentStore } from '../state/documents.js';

const STORE_FORMAT = 1;
const KEY_CHECK_AAD = 'kiln-secrets-key-check';
const KEY_CHECK_TEXT = 'kiln secrets key v1';

interface Sealed {
  /** base64 of nonce (12) || ciphertext || tag (16). */
  box: string;
}

interface StoredSecret extends Sealed {
  name: string;
  version: number;
  size: number;
  updated_at: number;
}

interface StoreFile {
  format: number;
  generation: number;
  key_check: string;
  secrets: StoredSecret[];
}

/** What `kiln secrets list` shows: never a value. */
export interface SecretInfo {
  name: string;
  size: number;
  version: number;
  updated_at: number;
}

export interface SecretStoreOptions {
  dataDir: string;
  /** The key file; default data_dir/keys/secrets.key (created on the first set). */
  keyFile?: string | undefined;
  /** Where the store document is kept. @default the files of dataDir */
  docs?: DocumentStore;
  /** Make the key file on the first set when it does not exist. @default true */
  createKey?: boolean;
  now?: () => number;
}

function seal(key: Buffer, plain: Uint8Array, aad: string): string {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64');
}

function open(key: Buffer, box: string, aad: string): Buffer {
  const raw = Buffer.from(box, 'base64');
  if (raw.length < 28) throw new Error('sealed value too short');
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(raw.subarray(raw.length - 16));
  return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
}

const aadOf = (name: string) => `kiln-secret:${name}`;

export function secretNameProblem(name: string): string | null {
  return SECRET_NAME_RE.test(name) ? null : `invalid secret name '${name.slice(0, 80)}' (use ${SECRET_NAME_RULE})`;
}

export class SecretStore {
  readonly path: string;
  readonly keyFile: string;
  private key: Buffer | null = null;
  private keyCheck = '';
  private generation = 0;
  private readonly secrets = new Map<string, StoredSecret>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly now: () => number;
  private readonly docs: DocumentStore;
  private readonly createKey: boolean;

  private constructor(opts: SecretStoreOptions) {
    this.docs = opts.docs ?? new FileDocuments(opts.dataDir);
    this.path = this.docs.where(DOCUMENTS.secrets);
    this.keyFile = opts.keyFile ?? join(opts.dataDir, 'keys', 'secrets.key');
    this.createKey = opts.createKey ?? true;
    this.now = opts.now ?? Date.now;
  }

  /** Opens the store; refuses (E_CONFIG) a store its key does not open, or a malformed one. */
  static async open(opts: SecretStoreOptions): Promise<SecretStore> {
    const s = new SecretStore(opts);
    await s.load();
    return s;
  }

  private async load(): Promise<void> {
    let text: string | null;
    try {
      text = await this.docs.read(DOCUMENTS.secrets);
    } catch (err) {
      throw new KilnError('E_CONFIG', `the secret store ${this.path} cannot be read (${errnoCode(err) ?? (err instanceof KilnError ? err.message : 'error')})`, { cause: err });
    }
    if (text === null) return; // no store yet: the key is read or made on the first set
    let doc: StoreFile;
    try {
      doc = JSON.parse(text) as StoreFile;
      if (doc.format !== STORE_FORMAT || !Array.isArray(doc.secrets) || typeof doc.key_check !== 'string' || !Number.isSafeInteger(doc.generation)) throw new Error('not a kiln secret store');
    } catch (err) {
      throw new KilnError('E_CONFIG', `the secret store ${this.path} is not a kiln secret store (format ${STORE_FORMAT})`, { cause: err });
    }
    const key = await this.readKey(false);
    if (key === null) throw new KilnError('E_CONFIG', `the secret store ${this.path} exists but its key file ${this.keyFile} does not; restore the key file (or move the store away to start without secrets)`);
    try {
      if (open(key, doc.key_check, KEY_CHECK_AAD).toString('utf8') !== KEY_CHECK_TEXT) throw new Error('key check differs');
      for (const x of doc.secrets) open(key, x.box, aadOf(x.name));
    } catch (err) {
      throw new KilnError('E_CONFIG', `the key file ${this.keyFile} does not decrypt the secret store ${this.path} (a different key?); restore the key the store was written with`, { cause: err });
    }
    this.key = key;
    this.keyCheck = doc.key_check;
    this.generation = doc.generation;
    for (const x of doc.secrets) {
      if (secretNameProblem(x.name) !== null || this.secrets.has(x.name)) throw new KilnError('E_CONFIG', `the secret store ${this.path} holds a bad or repeated name '${String(x.name).slice(0, 80)}'`);
      this.secrets.set(x.name, { name: x.name, version: x.version, size: x.size, updated_at: x.updated_at, box: x.box });
    }
  }

  /** The key from its file; when absent and `create`, a new one (0600, directory 0700). */
  private async readKey(create: boolean): Promise<Buffer | null> {
    let text: string | null = null;
    try {
      text = await readFile(this.keyFile, 'utf8');
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new KilnError('E_CONFIG', `the secrets key file ${this.keyFile} cannot be read (${errnoCode(err) ?? 'error'})`, { cause: err });
    }
    if (text !== null) {
      const key = Buffer.from(text.trim(), 'base64');
      if (key.length !== 32) throw new KilnError('E_CONFIG', `the secrets key file ${this.keyFile} must hold 32 bytes in base64 (it holds ${key.length})`);
      return key;
    }
    if (!create) return null;
    if (!this.createKey) {
      throw new KilnError(
        'E_CONFIG',
        `the secrets key file ${this.keyFile} does not exist: on a shared (PostgreSQL) state every coordinator needs the same key file; make one (head -c 32 /dev/urandom | base64 > FILE, mode 0600), give it to each coordinator (secrets.key_file) and restart them`,
      );
    }
    const key = randomBytes(32);
    await mkdir(dirname(this.keyFile), { recursive: true, mode: 0o700 });
    await writeFileDurable(this.keyFile, `${key.toString('base64')}\n`, 0o600);
    await chmod(this.keyFile, 0o600);
    return key;
  }

  /** The current version of `name`, or undefined when the store has none of that name. */
  version(name: string): number | undefined {
    return this.secrets.get(name)?.version;
  }

  get size(): number {
    return this.secrets.size;
  }

  list(): SecretInfo[] {
    return [...this.secrets.values()].map((x) => ({ name: x.name, size: x.size, version: x.version, updated_at: x.updated_at })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The values of `names` the store holds (decrypted now; names it does not hold are left out). */
  values(names: readonly string[]): Array<{ name: string; value: Uint8Array }> {
    const key = this.key;
    if (key === null) return [];
    const out: Array<{ name: string; value: Uint8Array }> = [];
    for (const name of names) {
      const x = this.secrets.get(name);
      if (x) out.push({ name, value: open(key, x.box, aadOf(name)) });
    }
    return out;
  }

  /** Sets `name` to `value`; resolves once the store file is durable. */
  set(name: string, value: Uint8Array): Promise<SecretInfo & { created: boolean }> {
    const problem = secretNameProblem(name);
    if (problem) return Promise.reject(new KilnError('E_INVALID', problem));
    if (value.length === 0) return Promise.reject(new KilnError('E_INVALID', `secret '${name}': the value is empty`));
    if (value.length > MAX_SECRET_BYTES) return Promise.reject(new KilnError('E_TOO_LARGE', `secret '${name}': the value is ${value.length} bytes; at most ${MAX_SECRET_BYTES}`));
    return this.serial(async () => {
      const created = !this.secrets.has(name);
      if (created && this.secrets.size >= MAX_SECRETS) throw new KilnError('E_CONFLICT', `the coordinator holds ${MAX_SECRETS} secrets already (the most it keeps); remove one first`);
      if (this.key === null) {
        this.key = await this.readKey(true);
        this.keyCheck = seal(this.key!, Buffer.from(KEY_CHECK_TEXT, 'utf8'), KEY_CHECK_AAD);
      }
      const entry: StoredSecret = { name, version: this.generation + 1, size: value.length, updated_at: this.now(), box: seal(this.key!, value, aadOf(name)) };
      const next = new Map(this.secrets);
      next.set(name, entry);
      await this.write(this.generation + 1, next);
      this.generation += 1;
      this.secrets.set(name, entry);
      return { name, size: entry.size, version: entry.version, updated_at: entry.updated_at, created };
    });
  }

  /** Removes `name`; false when there was none. Resolves once durable. */
  remove(name: string): Promise<boolean> {
    return this.serial(async () => {
      if (!this.secrets.has(name)) return false;
      const next = new Map(this.secrets);
      next.delete(name);
      await this.write(this.generation, next);
      this.secrets.delete(name);
      return true;
    });
  }

  private async write(generation: number, secrets: ReadonlyMap<string, StoredSecret>): Promise<void> {
    const doc: StoreFile = { format: STORE_FORMAT, generation, key_check: this.keyCheck, secrets: [...secrets.values()] };
    await this.docs.write(DOCUMENTS.secrets, `${JSON.stringify(doc)}\n`);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }
}
