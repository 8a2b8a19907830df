/**
 * API keys: scoped, optionally expiring bearer credentials for people and tools. A key is
 * `kiln_key_<43 base64url chars>` (32 random bytes); the coordinator keeps only its
 * sha256 (hex), in the document `access/keys.json` (state/documents.ts: the file
 * `data_dir/access/keys.json`, or a row in a PostgreSQL state), written durably (temp file,
 * fsync, rename; or a fenced commit) before a change is acknowledged. Standbys on a shared
 * state `reload()` it when it changed. A file that cannot be read or parsed refuses
 * the start, naming the file: it is never taken as "no keys", which would lock everyone
 * out or, worse, hide a revocation. The store holds at most MAX_KEYS records; revoked and
 * expired ones are pruned (oldest first) to make room.
 *
 * The legacy API token (data_dir/tokens/api, or auth.api_token_file) is an admin key
 * named `api-token` that lives in its file, not here: it cannot be revoked with
 * `kiln keys revoke` (replace the file and restart instead).
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { KilnError, NAME_RE, NAME_RULE, coerceError, errnoCode, newId } from '../../shared/index.js';
import { DOCUMENTS, FileDocuments, type DocumentStore } from '../state/documents.js';
import { SCOPES, type Scope } from './route-scopes.js';

/** Records kept in the file (live, revoked and expired). */
export const MAX_KEYS = 1000;
/** The longest expiry a key may be given (10 years). */
export const MAX_KEY_LIFETIME_MS = 10 * 365 * 86_400_000;
export const KEY_PREFIX = 'kiln_key_';
/** Id and name of the legacy API token's key. */
export const LEGACY_KEY_ID = 'api-token';

const KeyRecord = z
  .object({
    id: z.string().min(1).max(100),
    name: z.string().regex(NAME_RE),
    /** sha256 of the key, lowercase hex. */
    hash: z.string().regex(/^[0-9a-f]{64}$/),
    scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length),
    created_at: z.string(),
    created_by: z.string().max(300),
    expires_at: z.iso.datetime().nullable(),
    revoked_at: z.string().nullable(),
  })
  .strict();
export type KeyRecord = z.infer<typeof KeyRecord>;

const KeyFile = z.object({ version: z.literal(1), keys: z.array(KeyRecord).max(MAX_KEYS) }).strict();

/** Who a key is, as the rest of the coordinator sees it (never the secret or its hash). */
export interface KeyPrincipal {
  readonly kind: 'key';
  readonly id: string;
  readonly name: string;
  readonly scopes: readonly Scope[];
}

/** Who an agent credential is: `name` null for the legacy shared agent token. */
export interface AgentPrincipal {
  readonly kind: 'agent';
  readonly name: string | null;
}

/** Who a request is from, once its bearer credential is checked. */
export type Principal = KeyPrincipal | AgentPrincipal;

/** The actor of an audit line: `key:<id>/<name>` (`key:<id>` when they are the same), `agent:<name>`, `agent`. Never a secret. */
export function actorOf(p: Principal | null): string {
  if (p === null) return 'anonymous';
  if (p.kind === 'agent') return p.name === null ? 'agent' : `agent:${p.name}`;
  return p.id === p.name ? `key:${p.id}` : `key:${p.id}/${p.name}`;
}

/** A key as listed: state derived from the clock. */
export interface KeyInfo {
  id: string;
  name: string;
  scopes: Scope[];
  state: 'active' | 'expired' | 'revoked';
  created_at: string;
  created_by: string;
  expires_at: string | null;
  revoked_at: string | null;
  /** true for the legacy API token (data_dir/tokens/api): revoked by replacing its file. */
  legacy: boolean;
}

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** A new API key: `kiln_key_` + 43 base64url characters of 32 random bytes. */
export function newKeySecret(): string {
  return `${KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** Normalises a scope list (`read,submit`): known scopes, no duplicates, in table order. */
export function parseScopes(input: readonly string[]): Scope[] {
  const wanted = new Set<string>();
  for (const part of input.flatMap((s) => s.split(','))) {
    const s = part.trim();
    if (s === '') continue;
    if (!(SCOPES as readonly string[]).includes(s)) throw new KilnError('E_INVALID', `unknown scope '${s.slice(0, 40)}' (scopes: ${SCOPES.join(', ')})`);
    wanted.add(s);
  }
  if (wanted.size === 0) throw new KilnError('E_INVALID', `give at least one scope (${SCOPES.join(', ')})`);
  return SCOPES.filter((s) => wanted.has(s));
}

export interface CreateKeyInput {
  scopes: readonly Scope[];
  name?: string;
  /** Lifetime in ms from now; undefined = never expires. */
  expiresInMs?: number;
  /** The actor creating it (audit form, e.g. `key:api-token`). */
  createdBy: string;
}

export class ApiKeyStore {
  private records: KeyRecord[] = [];
  private byHash = new Map<string, KeyRecord>();
  private legacy: { createdAt: string } | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** The document's version when it was last read or written (reload() skips an unchanged one). */
  private version: number | undefined;
  readonly path: string;

  private constructor(
    private readonly docs: DocumentStore,
    private readonly clock: () => number,
    private readonly maxKeys: number,
  ) {
    this.path = docs.where(DOCUMENTS.apiKeys);
  }

  /**
   * Opens the document `access/keys.json` of `docs` (a data dir: its files); none yet = no
   * keys. A corrupt one is an E_STATE error naming it. `legacyApiToken`: list the legacy API
   * token as the admin key `api-token`. `maxKeys` (tests): the bound, at most MAX_KEYS.
   */
  static async open(docs: DocumentStore | string, opts: { legacyApiToken?: boolean; clock?: () => number; maxKeys?: number } = {}): Promise<ApiKeyStore> {
    const store = new ApiKeyStore(typeof docs === 'string' ? new FileDocuments(docs) : docs, opts.clock ?? Date.now, opts.maxKeys ?? MAX_KEYS);
    await store.load();
    if (opts.legacyApiToken) store.legacy = { createdAt: new Date(store.clock()).toISOString() };
    return store;
  }

  /** Reads the document again when it changed since it was last read or written (a standby following the leader). */
  reload(): Promise<boolean> {
    return this.serial(async () => {
      const v = (await this.docs.versions([DOCUMENTS.apiKeys])).get(DOCUMENTS.apiKeys);
      if (v === undefined || v === this.version) return false;
      await this.load();
      return true;
    });
  }

  private async load(): Promise<void> {
    const version = (await this.docs.versions([DOCUMENTS.apiKeys]).catch(() => new Map<string, number>())).get(DOCUMENTS.apiKeys);
    let text: string | null = null;
    try {
      text = await this.docs.read(DOCUMENTS.apiKeys);
    } catch (err) {
      throw new KilnError('E_STATE', `the API key file ${this.path} cannot be read (${errnoCode(err) ?? coerceError(err).message}); fix or restore it`, { cause: err });
    }
    if (text !== null) {
      let parsed: z.infer<typeof KeyFile>;
      try {
        const r = KeyFile.safeParse(JSON.parse(text));
        if (!r.success) throw new Error(`${r.error.issues[0]?.path.join('.') || 'file'}: ${r.error.issues[0]?.message ?? 'invalid'}`);
        parsed = r.data;
      } catch (err) {
        throw new KilnError('E_STATE', `the API key file ${this.path} is corrupt (${coerceError(err).message}); fix or restore it (it is never taken as empty)`, { cause: err });
      }
      this.install(parsed.keys);
    }
    this.version = version;
  }

  /**
   * The key a presented bearer secret is, when it is live; null when unknown, expired or
   * revoked. (The legacy API token is checked by http/auth.ts, in constant time.)
   */
  authenticate(secret: string): KeyPrincipal | null {
    if (!secret.startsWith(KEY_PREFIX)) return null;
    const r = this.byHash.get(sha256Hex(secret));
    if (!r || this.stateOf(r) !== 'active') return null;
    return { kind: 'key', id: r.id, name: r.name, scopes: r.scopes };
  }

  /**
   * The key with this id while it is live (the legacy API token's id included when it is
   * listed), or null once unknown, expired or revoked: dashboard sessions (sessions.ts)
   * re-check their key with it on every request.
   */
  principalById(id: string): KeyPrincipal | null {
    if (id === LEGACY_KEY_ID) return this.legacy ? { kind: 'key', id, name: id, scopes: ['admin'] } : null;
    const r = this.records.find((x) => x.id === id);
    if (!r || this.stateOf(r) !== 'active') return null;
    return { kind: 'key', id: r.id, name: r.name, scopes: r.scopes };
  }

  /** When a live key expires (ms since the epoch), null for never or for an unknown key. */
  expiresAtMs(id: string): number | null {
    const r = this.records.find((x) => x.id === id);
    return r?.expires_at ? Date.parse(r.expires_at) : null;
  }

  /** Every key, newest first; the legacy token last. Never a secret or a hash. */
  list(): KeyInfo[] {
    const out = this.records.map((r) => this.info(r)).reverse();
    if (this.legacy) {
      out.push({ id: LEGACY_KEY_ID, name: LEGACY_KEY_ID, scopes: ['admin'], state: 'active', created_at: this.legacy.createdAt, created_by: 'zero-config start', expires_at: null, revoked_at: null, legacy: true });
    }
    return out;
  }

  /** Creates a key; resolves once it is durable, with the secret (shown once, never stored). */
  create(input: CreateKeyInput): Promise<{ key: KeyInfo; secret: string }> {
    return this.serial(async () => {
      const now = this.clock();
      if (input.name !== undefined && !NAME_RE.test(input.name)) throw new KilnError('E_INVALID', `key name '${input.name.slice(0, 80)}' is not valid (${NAME_RULE})`);
      if (input.expiresInMs !== undefined && (!Number.isFinite(input.expiresInMs) || input.expiresInMs < 1000 || input.expiresInMs > MAX_KEY_LIFETIME_MS)) {
        throw new KilnError('E_INVALID', 'expires must be between 1s and 3650d');
      }
      const id = newId('k', now);
      const name = input.name ?? id;
      if (name === LEGACY_KEY_ID || this.records.some((r) => r.name === name && this.stateOf(r) === 'active')) {
        throw new KilnError('E_CONFLICT', `an active key is already named '${name}' (revoke it or choose another name)`);
      }
      const kept = this.prunedFor(1);
      if (kept.length >= this.maxKeys) throw new KilnError('E_CONFLICT', `there are ${this.maxKeys} active keys already; revoke some first`);
      const secret = newKeySecret();
      const record: KeyRecord = {
        id,
        name,
        hash: sha256Hex(secret),
        scopes: [...input.scopes],
        created_at: new Date(now).toISOString(),
        created_by: input.createdBy.slice(0, 300),
        expires_at: input.expiresInMs !== undefined ? new Date(now + input.expiresInMs).toISOString() : null,
        revoked_at: null,
      };
      await this.persist([...kept, record]);
      return { key: this.info(record), secret };
    });
  }

  /** Revokes a key by id or name (an active key's name first); resolves once durable. */
  revoke(idOrName: string): Promise<KeyInfo> {
    return this.serial(async () => {
      if (idOrName === LEGACY_KEY_ID && this.legacy) {
        throw new KilnError('E_CONFLICT', `'${LEGACY_KEY_ID}' is the legacy API token (tokens/api or auth.api_token_file): replace that file and restart to revoke it`);
      }
      const target =
        this.records.find((r) => r.id === idOrName) ??
        this.records.find((r) => r.name === idOrName && this.stateOf(r) === 'active') ??
        this.records.findLast((r) => r.name === idOrName);
      if (!target) throw new KilnError('E_NOT_FOUND', `no API key with id or name '${idOrName.slice(0, 100)}'`);
      if (target.revoked_at !== null) return this.info(target);
      const revoked = { ...target, revoked_at: new Date(this.clock()).toISOString() };
      await this.persist(this.records.map((r) => (r === target ? revoked : r)));
      return this.info(revoked);
    });
  }

  private stateOf(r: KeyRecord): KeyInfo['state'] {
    if (r.revoked_at !== null) return 'revoked';
    if (r.expires_at !== null && Date.parse(r.expires_at) <= this.clock()) return 'expired';
    return 'active';
  }

  private info(r: KeyRecord): KeyInfo {
    return { id: r.id, name: r.name, scopes: [...r.scopes], state: this.stateOf(r), created_at: r.created_at, created_by: r.created_by, expires_at: r.expires_at, revoked_at: r.revoked_at, legacy: false };
  }

  /** The records with the oldest revoked or expired ones dropped so `room` more fit. */
  private prunedFor(room: number): KeyRecord[] {
    const out = [...this.records];
    while (out.length + room > this.maxKeys) {
      const i = out.findIndex((r) => this.stateOf(r) !== 'active');
      if (i < 0) break;
      out.splice(i, 1);
    }
    return out;
  }

  private async persist(records: KeyRecord[]): Promise<void> {
    await this.docs.write(DOCUMENTS.apiKeys, `${JSON.stringify({ version: 1, keys: records }, null, 1)}\n`);
    this.install(records);
    this.version = undefined; // the next reload reads it again (cheap, and right after a takeover)
  }

  private install(records: KeyRecord[]): void {
    this.records = records;
    this.byHash = new Map(records.map((r) => [r.hash, r]));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }
}
