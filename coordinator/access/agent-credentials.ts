/**
 * Per-agent credentials: the enrolment tokens an admin creates and the agent credentials
 * agents trade them for, kept in the document `access/agents.json` (state/documents.ts: the
 * file `<data dir>/access/agents.json`, mode 0600, or a row in a PostgreSQL state, where
 * standbys `reload()` it when it changed).
 *
 * Only sha256 hashes (hex) of the secrets are stored; a secret is shown once, when it is
 * made. Every change is written durably (temp file, fsync, rename, fsync of the dir)
 * before it is acknowledged; a file that cannot be read or is not this kind of file stops
 * the coordinator with an error naming it (it is never taken for empty). A missing file
 * is a fleet with no enrolled agent yet.
 *
 * An enrolment token has an expiry, a number of uses and optionally the agent name it
 * binds. Trading it (`enrol`) makes the agent's credential; a name that already has a
 * live credential cannot be enrolled again until that one is revoked. Rotation: an agent
 * asks for a new credential with its current one (`rotate`); the old one stays valid
 * until the new one is first used (so an agent that crashes before storing the new one
 * still gets in), then it is retired. Checking a credential (`verify`) is synchronous:
 * it runs for every upgrade and CAS request.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { KilnError, NAME_RE, coerceError, errnoCode, newId, randomToken } from '../../shared/index.js';
import { DOCUMENTS, FileDocuments, type DocumentStore } from '../state/documents.js';
import { NO_AUDIT, type AuditSink } from './agent-audit.js';

export const ENROL_PREFIX = 'kiln_enrol_';
export const AGENT_PREFIX = 'kiln_agent_';
const SECRET_BODY = '[A-Za-z0-9_-]{43}';
const ENROL_RE = new RegExp(`^${ENROL_PREFIX}${SECRET_BODY}$`);
const AGENT_RE = new RegExp(`^${AGENT_PREFIX}${SECRET_BODY}$`);

/** Whether a bearer token has the form of an agent credential (`kiln_agent_...`). */
export function isAgentCredential(token: string): boolean {
  return token.startsWith(AGENT_PREFIX);
}

function hashOf(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

const Hash = z.string().regex(/^[0-9a-f]{64}$/);
const Time = z.number().int().nonnegative();
const TokenRecord = z.object({
  id: z.string().min(1).max(100),
  hash: Hash,
  name: z.string().regex(NAME_RE).nullable(),
  expires_at: Time,
  uses: z.number().int().min(1),
  used: z.number().int().nonnegative(),
  created_by: z.string().max(200),
  created_at: Time,
  revoked_at: Time.nullable(),
});
const CredentialRecord = z.object({
  id: z.string().min(1).max(100),
  name: z.string().regex(NAME_RE),
  hash: Hash,
  created_at: Time,
  last_used_at: Time.nullable(),
  revoked_at: Time.nullable(),
  revoke_reason: z.string().max(200).nullable(),
  /** The credential this one replaces (rotation): retired when this one is first used. */
  replaces: z.string().nullable(),
  rotate_requested: z.boolean(),
});
const StoreFile = z.object({
  kind: z.literal('kiln-agent-credentials'),
  version: z.literal(1),
  tokens: z.array(TokenRecord),
  credentials: z.array(CredentialRecord),
});
type TokenRecordT = z.infer<typeof TokenRecord>;
type CredentialRecordT = z.infer<typeof CredentialRecord>;

export type TokenState = 'active' | 'expired' | 'used' | 'revoked';

/** An enrolment token as listed (never its secret). */
export interface EnrolTokenView {
  id: string;
  name: string | null;
  state: TokenState;
  expires_at: string;
  uses: number;
  used: number;
  created_by: string;
  created_at: string;
  revoked_at: string | null;
}

/** A refusal names the agent when the credential is known (revoked or replaced). */
export type VerifyResult = { ok: true; name: string; id: string; rotateRequested: boolean } | { ok: false; reason: string; name?: string };

export interface AgentCredentialOptions {
  /** Enrolment tokens kept (unusable ones are dropped first when full). @default 1000 */
  maxTokens?: number;
  /** Agent credentials kept (revoked ones are dropped first when full). @default 10000 */
  maxCredentials?: number;
  audit?: AuditSink;
  now?: () => number;
}

const iso = (ms: number) => new Date(ms).toISOString();
/** A use of a credential is written at most this often (last_used_at is informational). */
const LAST_USED_WRITE_MS = 60_000;

export class AgentCredentialStore {
  private readonly tokens = new Map<string, TokenRecordT>();
  private readonly tokenByHash = new Map<string, TokenRecordT>();
  private readonly creds = new Map<string, CredentialRecordT>();
  /** Agents revoked in memory whose write failed: a retried revoke writes it (and reports success). */
  private readonly unsaved = new Set<string>();
  private readonly credByHash = new Map<string, CredentialRecordT>();
  private writing: Promise<void> = Promise.resolve();
  private lastWriteAt = 0;
  private readonly now: () => number;
  private readonly audit: AuditSink;
  private readonly maxTokens: number;
  private readonly maxCredentials: number;
  /** The document's version when it was last read (reload() skips an unchanged one). */
  private version: number | undefined;
  readonly path: string;

  private constructor(
    private readonly docs: DocumentStore,
    opts: AgentCredentialOptions,
  ) {
    this.path = docs.where(DOCUMENTS.agentCredentials);
    this.now = opts.now ?? Date.now;
    this.audit = opts.audit ?? NO_AUDIT;
    this.maxTokens = opts.maxTokens ?? 1000;
    this.maxCredentials = opts.maxCredentials ?? 10_000;
  }

  /** Loads the document `access/agents.json` of `docs` (a data dir: its file); a missing one is an empty store, an unreadable or corrupt one an E_STATE error naming it. */
  static async open(docs: DocumentStore | string, opts: AgentCredentialOptions = {}): Promise<AgentCredentialStore> {
    const store = new AgentCredentialStore(typeof docs === 'string' ? new FileDocuments(docs) : docs, opts);
    await store.load();
    return store;
  }

  /**
   * Reads the document again when it changed since it was last read (a standby following the
   * leader): the records in memory are replaced by the leader's.
   */
  async reload(): Promise<boolean> {
    await this.writing;
    const v = (await this.docs.versions([DOCUMENTS.agentCredentials])).get(DOCUMENTS.agentCredentials);
    if (v === undefined || v === this.version) return false;
    const before = { tokens: new Map(this.tokens), creds: new Map(this.creds) };
    this.tokens.clear();
    this.tokenByHash.clear();
    this.creds.clear();
    this.credByHash.clear();
    try {
      await this.load();
    } catch (err) {
      // Keep what was there (a corrupt document is reported, never taken for empty).
      for (const t of before.tokens.values()) this.addToken(t);
      for (const c of before.creds.values()) this.addCred(c);
      throw err;
    }
    return true;
  }

  private async load(): Promise<void> {
    const hint = 'Restore it from a backup, or move it away to start with no enrolled agents (every agent must then enrol again).';
    const version = (await this.docs.versions([DOCUMENTS.agentCredentials]).catch(() => new Map<string, number>())).get(DOCUMENTS.agentCredentials);
    let text: string | null;
    try {
      text = await this.docs.read(DOCUMENTS.agentCredentials);
    } catch (err) {
      throw new KilnError('E_STATE', `agent credentials file ${this.path} cannot be read (${errnoCode(err) ?? coerceError(err).message}). ${hint}`, { cause: err });
    }
    if (text === null) {
      this.version = version;
      return;
    }
    let parsed: z.infer<typeof StoreFile>;
    try {
      const r = StoreFile.safeParse(JSON.parse(text));
      if (!r.success) {
        const i = r.error.issues[0]!;
        throw new Error(`${i.path.join('.') || 'the file'}: ${i.message}`);
      }
      parsed = r.data;
    } catch (err) {
      throw new KilnError('E_STATE', `agent credentials file ${this.path} is corrupt (${coerceError(err).message}); it was left as it is for inspection. ${hint}`, { cause: err });
    }
    for (const t of parsed.tokens) this.addToken(t);
    for (const c of parsed.credentials) this.addCred(c);
    this.version = version;
  }

  private addToken(t: TokenRecordT): void {
    this.tokens.set(t.id, t);
    this.tokenByHash.set(t.hash, t);
  }

  private addCred(c: CredentialRecordT): void {
    this.creds.set(c.id, c);
    this.credByHash.set(c.hash, c);
  }

  private dropCred(c: CredentialRecordT): void {
    this.creds.delete(c.id);
    this.credByHash.delete(c.hash);
  }

  /** Writes the whole store durably (one write at a time, each of the latest state). */
  private persist(): Promise<void> {
    const run = async () => {
      this.lastWriteAt = this.now();
      const body = JSON.stringify({ kind: 'kiln-agent-credentials', version: 1, tokens: [...this.tokens.values()], credentials: [...this.creds.values()] });
      await this.docs.write(DOCUMENTS.agentCredentials, body);
      this.version = undefined; // a later reload reads it again
    };
    const p = this.writing.then(run, run);
    this.writing = p.catch(() => {});
    return p;
  }

  /** Resolves when every write started so far is on disk. */
  async idle(): Promise<void> {
    await this.writing;
  }

  private tokenState(t: TokenRecordT, now: number): TokenState {
    if (t.revoked_at !== null) return 'revoked';
    if (t.used >= t.uses) return 'used';
    if (now >= t.expires_at) return 'expired';
    return 'active';
  }

  private tokenView(t: TokenRecordT, now: number): EnrolTokenView {
    return {
      id: t.id,
      name: t.name,
      state: this.tokenState(t, now),
      expires_at: iso(t.expires_at),
      uses: t.uses,
      used: t.used,
      created_by: t.created_by,
      created_at: iso(t.created_at),
      revoked_at: t.revoked_at === null ? null : iso(t.revoked_at),
    };
  }

  /** Makes an enrolment token; resolves with its secret (shown once) once it is durable. */
  async createToken(o: { name: string | null; expiresMs: number; uses: number; createdBy: string }): Promise<{ token: string; view: EnrolTokenView }> {
    const now = this.now();
    if (this.tokens.size >= this.maxTokens) {
      // Tokens that can no longer be used make room first, oldest first.
      for (const t of [...this.tokens.values()].sort((a, b) => a.created_at - b.created_at)) {
        if (this.tokens.size < this.maxTokens) break;
        if (this.tokenState(t, now) !== 'active') {
          this.tokens.delete(t.id);
          this.tokenByHash.delete(t.hash);
        }
      }
      if (this.tokens.size >= this.maxTokens) throw new KilnError('E_CONFLICT', `there are ${this.tokens.size} usable enrolment tokens, the most kept; revoke some (kiln tokens revoke ID) first`);
    }
    const token = `${ENROL_PREFIX}${randomToken()}`;
    const rec: TokenRecordT = {
      id: newId('et'),
      hash: hashOf(token),
      name: o.name,
      expires_at: now + o.expiresMs,
      uses: o.uses,
      used: 0,
      created_by: o.createdBy,
      created_at: now,
      revoked_at: null,
    };
    this.addToken(rec);
    await this.persist();
    this.audit.record({ actor: o.createdBy, action: 'token.create', target: `enrol-token:${rec.id}`, outcome: 'ok', detail: `${o.name ? `for agent ${o.name}, ` : ''}${o.uses} use(s), expires ${iso(rec.expires_at)}` });
    return { token, view: this.tokenView(rec, now) };
  }

  /** Agent credentials kept (live, replaced and revoked). */
  credentialCount(): number {
    return this.creds.size;
  }

  listTokens(): EnrolTokenView[] {
    const now = this.now();
    return [...this.tokens.values()].sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1)).map((t) => this.tokenView(t, now));
  }

  /** Revokes an enrolment token (durable when resolved); credentials already made with it stay. */
  async revokeToken(id: string, actor: string): Promise<EnrolTokenView> {
    const t = this.tokens.get(id);
    if (!t) throw new KilnError('E_NOT_FOUND', `no enrolment token with id '${id}' (kiln tokens list shows them)`);
    t.revoked_at ??= this.now();
    await this.persist();
    this.audit.record({ actor, action: 'token.revoke', target: `enrol-token:${id}`, outcome: 'ok' });
    return this.tokenView(t, this.now());
  }

  private liveCreds(name: string): CredentialRecordT[] {
    return [...this.creds.values()].filter((c) => c.name === name && c.revoked_at === null);
  }

  private refuse(code: 'E_UNAUTHORIZED' | 'E_FORBIDDEN' | 'E_CONFLICT', detail: string, audit: { actor: string; target: string; remote?: string }): KilnError {
    this.audit.record({ actor: audit.actor, action: 'agent.enrol', target: audit.target, outcome: 'refused', detail, ...(audit.remote ? { remote: audit.remote } : {}) });
    return new KilnError(code, detail);
  }

  private makeCredential(name: string, replaces: string | null, now: number): { credential: string; rec: CredentialRecordT } {
    if (this.creds.size >= this.maxCredentials) {
      for (const c of [...this.creds.values()]) if (c.revoked_at !== null && this.creds.size >= this.maxCredentials) this.dropCred(c);
      if (this.creds.size >= this.maxCredentials) throw new KilnError('E_CONFLICT', `there are ${this.creds.size} live agent credentials, the most kept; revoke agents that are gone (kiln agents revoke NAME)`);
    }
    const credential = `${AGENT_PREFIX}${randomToken()}`;
    const rec: CredentialRecordT = { id: newId('ac'), name, hash: hashOf(credential), created_at: now, last_used_at: null, revoked_at: null, revoke_reason: null, replaces, rotate_requested: false };
    this.addCred(rec);
    return { credential, rec };
  }

  /**
   * Trades an enrolment token for an agent credential for `name`. Refusals are KilnErrors:
   * 401 for a token that is not one, 403 for one revoked, expired, used up or bound to
   * another name, 409 for a name that already has a live credential.
   */
  async enrol(token: string, name: string, remote?: string): Promise<{ credential: string; name: string }> {
    const now = this.now();
    const who = { actor: 'enrol-token:unknown', target: `agent:${name}`, ...(remote ? { remote } : {}) };
    if (token === '') throw this.refuse('E_UNAUTHORIZED', 'no enrolment token (send Authorization: Bearer kiln_enrol_...)', who);
    if (!ENROL_RE.test(token)) throw this.refuse('E_UNAUTHORIZED', `not an enrolment token (kiln_enrol_...): create one with kiln tokens create --agent`, who);
    const t = this.tokenByHash.get(hashOf(token));
    if (!t) throw this.refuse('E_UNAUTHORIZED', 'unknown enrolment token (it was never issued here, or it was removed)', who);
    who.actor = `enrol-token:${t.id}`;
    const state = this.tokenState(t, now);
    if (state === 'revoked') throw this.refuse('E_FORBIDDEN', `enrolment token ${t.id} was revoked at ${iso(t.revoked_at!)}`, who);
    if (state === 'used') throw this.refuse('E_FORBIDDEN', `enrolment token ${t.id} was already used (${t.used} of ${t.uses} use${t.uses === 1 ? '' : 's'}); create a new one`, who);
    if (state === 'expired') throw this.refuse('E_FORBIDDEN', `enrolment token ${t.id} expired at ${iso(t.expires_at)}; create a new one`, who);
    if (t.name !== null && t.name !== name) throw this.refuse('E_FORBIDDEN', `enrolment token ${t.id} is for agent '${t.name}', not '${name}'`, who);
    const live = this.liveCreds(name);
    if (live.length > 0) {
      throw this.refuse('E_CONFLICT', `agent name '${name}' is already enrolled (credential made ${iso(live[0]!.created_at)}); revoke it first (kiln agents revoke ${name}) to enrol a host under this name again`, who);
    }
    const { credential, rec } = this.makeCredential(name, null, now);
    t.used++;
    try {
      await this.persist();
    } catch (err) {
      // Not on disk: as if it had not happened (the token keeps its use, the name stays free).
      t.used--;
      this.dropCred(rec);
      throw err;
    }
    this.audit.record({ actor: who.actor, action: 'agent.enrol', target: who.target, outcome: 'ok', ...(remote ? { remote } : {}) });
    return { credential, name };
  }

  /**
   * Checks an agent credential. A credential issued by a rotation retires the one it
   * replaces the first time it is used.
   */
  verify(credential: string): VerifyResult {
    if (!AGENT_RE.test(credential)) return { ok: false, reason: 'not an agent credential' };
    const c = this.credByHash.get(hashOf(credential));
    if (!c) return { ok: false, reason: 'unknown agent credential' };
    if (c.revoked_at !== null) return { ok: false, name: c.name, reason: `the credential of agent '${c.name}' was ${c.revoke_reason === 'rotated' ? 'replaced by a newer one (rotation)' : 'revoked'} at ${iso(c.revoked_at)}` };
    const now = this.now();
    c.last_used_at = now;
    let write = now - this.lastWriteAt >= LAST_USED_WRITE_MS;
    if (c.replaces !== null) {
      const old = this.creds.get(c.replaces);
      if (old && old.revoked_at === null) {
        old.revoked_at = now;
        old.revoke_reason = 'rotated';
      }
      c.replaces = null;
      write = true;
    }
    // The write is only a record; the check above already took effect in memory.
    if (write) this.persist().catch(() => {});
    return { ok: true, name: c.name, id: c.id, rotateRequested: c.rotate_requested };
  }

  /** The agent a valid credential belongs to, else null (http/auth.ts AgentCredentialCheck). */
  agentOf(token: string): string | null {
    if (!isAgentCredential(token)) return null;
    const v = this.verify(token);
    return v.ok ? v.name : null;
  }

  /** Revokes every live credential of `name` (durable when resolved); returns how many. */
  async revokeAgent(name: string, actor: string): Promise<number> {
    const live = this.liveCreds(name);
    if (live.length === 0) {
      // A revocation whose write failed is refused in memory already: write it now (a retry after E_STATE).
      if (this.unsaved.has(name)) {
        await this.persist();
        this.unsaved.delete(name);
        this.audit.record({ actor, action: 'agent.revoke', target: `agent:${name}`, outcome: 'ok', detail: 'written on retry' });
        return 0;
      }
      this.audit.record({ actor, action: 'agent.revoke', target: `agent:${name}`, outcome: 'refused', detail: 'no live credential' });
      throw new KilnError('E_NOT_FOUND', `agent '${name}' has no live credential (it never enrolled, or it was revoked already)`);
    }
    const now = this.now();
    for (const c of live) {
      c.revoked_at = now;
      c.revoke_reason = 'revoked';
    }
    this.unsaved.add(name);
    await this.persist();
    this.unsaved.delete(name);
    this.audit.record({ actor, action: 'agent.revoke', target: `agent:${name}`, outcome: 'ok', detail: `${live.length} credential(s)` });
    return live.length;
  }

  /** Marks `name`'s credential for rotation (durable when resolved): its next connection is told to rotate. */
  async requestRotation(name: string, actor: string): Promise<void> {
    const live = this.liveCreds(name);
    if (live.length === 0) throw new KilnError('E_NOT_FOUND', `agent '${name}' has no live credential (it never enrolled, or it was revoked)`);
    for (const c of live) c.rotate_requested = c.replaces === null;
    await this.persist();
    this.audit.record({ actor, action: 'agent.rotate.request', target: `agent:${name}`, outcome: 'ok' });
  }

  /**
   * An agent's own rotation: a new credential for the agent `credential` belongs to. The
   * old one stays valid until the new one is first used; asking again replaces a new one
   * not used yet.
   */
  async rotate(credential: string, remote?: string): Promise<{ credential: string; name: string }> {
    const v = this.verify(credential);
    if (!v.ok) {
      this.audit.record({ actor: `agent:${v.name ?? 'unknown'}`, action: 'agent.rotate', outcome: 'refused', detail: v.reason, ...(remote ? { remote } : {}) });
      throw new KilnError('E_UNAUTHORIZED', v.reason);
    }
    const current = this.creds.get(v.id)!;
    for (const c of [...this.creds.values()]) if (c.replaces === current.id) this.dropCred(c);
    current.rotate_requested = false;
    const made = this.makeCredential(current.name, current.id, this.now());
    await this.persist();
    this.audit.record({ actor: `agent:${current.name}`, action: 'agent.rotate', target: `agent:${current.name}`, outcome: 'ok', ...(remote ? { remote } : {}) });
    return { credential: made.credential, name: current.name };
  }
}
