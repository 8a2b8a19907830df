/**
 * Dashboard sessions: a browser signs in once with an API key (POST /api/v1/session) and
 * then sends an opaque cookie instead of the key. A session id is 32 random bytes
 * (base64url, 43 characters); only its sha256 is kept, in memory (a coordinator restart
 * signs every browser out). The store is bounded (oldest sessions make room), every session
 * expires (its own lifetime, never past its key's expiry), and each use re-checks the key:
 * revoking or expiring a key ends its sessions on their next request.
 *
 * Also the cookie's wire format: parsing a bounded `Cookie` header, and the `Set-Cookie`
 * values that set and clear it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { SESSION_COOKIE } from '../../shared/index.js';
import type { KeyPrincipal } from './api-keys.js';

/** How long a session lives unless its key expires first. */
export const SESSION_TTL_MS = 12 * 3_600_000;
/** Sessions kept at most (the oldest is dropped to make room). */
export const MAX_SESSIONS = 10_000;
/** Sessions of one key kept at most (its oldest is dropped to make room). */
export const MAX_SESSIONS_PER_KEY = 100;
/** A session id as sent in the cookie: 32 bytes, base64url without padding. */
export const SESSION_ID_RE = /^[A-Za-z0-9_-]{43}$/;
/** Longest Cookie header read; a longer one is cut there (the session cookie has to be in it). */
const MAX_COOKIE_HEADER = 8 * 1024;

/** What the store needs from the key store (access/api-keys.ts ApiKeyStore). */
export interface SessionKeys {
  principalById(id: string): KeyPrincipal | null;
  expiresAtMs(id: string): number | null;
}

interface Session {
  readonly keyId: string;
  readonly expiresAt: number;
}

/** A live session: who it acts as and when it ends. */
export interface ResolvedSession {
  readonly principal: KeyPrincipal;
  readonly expiresAt: number;
}

function hashOf(id: string): string {
  return createHash('sha256').update(id).digest('hex');
}

export class SessionStore {
  /** sha256(session id) -> session, in creation order (the first is the oldest). */
  private readonly byHash = new Map<string, Session>();
  private readonly clock: () => number;
  private readonly ttlMs: number;
  private readonly maxSessions: number;
  private readonly maxPerKey: number;

  constructor(
    private readonly keys: SessionKeys,
    opts: { clock?: () => number; ttlMs?: number; maxSessions?: number; maxPerKey?: number } = {},
  ) {
    this.clock = opts.clock ?? Date.now;
    this.ttlMs = opts.ttlMs ?? SESSION_TTL_MS;
    this.maxSessions = opts.maxSessions ?? MAX_SESSIONS;
    this.maxPerKey = opts.maxPerKey ?? MAX_SESSIONS_PER_KEY;
  }

  /** Sessions held (expired ones are dropped as they are met). */
  get size(): number {
    return this.byHash.size;
  }

  /** A new session for a key: its id (for the cookie, never stored), when it ends and the cookie's Max-Age. */
  create(principal: KeyPrincipal): { id: string; expiresAt: number; maxAgeS: number } {
    const now = this.clock();
    this.sweep(now);
    const mine = [...this.byHash].filter(([, s]) => s.keyId === principal.id);
    for (let i = 0; i <= mine.length - this.maxPerKey; i++) this.byHash.delete(mine[i]![0]);
    while (this.byHash.size >= this.maxSessions) this.byHash.delete(this.byHash.keys().next().value!);
    const keyExpiry = this.keys.expiresAtMs(principal.id);
    const expiresAt = Math.min(now + this.ttlMs, keyExpiry ?? Number.POSITIVE_INFINITY);
    const id = randomBytes(32).toString('base64url');
    this.byHash.set(hashOf(id), { keyId: principal.id, expiresAt });
    return { id, expiresAt, maxAgeS: Math.max(0, Math.floor((expiresAt - now) / 1000)) };
  }

  /** The live session of a cookie value, or null (malformed, unknown, expired, or its key revoked or expired). */
  resolve(id: string): ResolvedSession | null {
    if (!SESSION_ID_RE.test(id)) return null;
    const h = hashOf(id);
    const s = this.byHash.get(h);
    if (!s) return null;
    if (s.expiresAt <= this.clock()) {
      this.byHash.delete(h);
      return null;
    }
    const principal = this.keys.principalById(s.keyId);
    if (!principal) {
      this.byHash.delete(h);
      return null;
    }
    return { principal, expiresAt: s.expiresAt };
  }

  /** Ends a session; false when there was none. */
  end(id: string): boolean {
    return SESSION_ID_RE.test(id) && this.byHash.delete(hashOf(id));
  }

  private sweep(now: number): void {
    for (const [h, s] of this.byHash) if (s.expiresAt <= now) this.byHash.delete(h);
  }
}

/**
 * The session cookie's value in a Cookie header: the value, `null` when there is no such
 * cookie, or `'malformed'` when there is one that cannot be a session id (too long, bad
 * characters). Only the first MAX_COOKIE_HEADER characters are read.
 */
export function sessionCookieOf(header: string | undefined | null): string | null | 'malformed' {
  if (!header) return null;
  for (const part of header.slice(0, MAX_COOKIE_HEADER).split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    const value = part.slice(eq + 1).trim();
    return SESSION_ID_RE.test(value) ? value : 'malformed';
  }
  return null;
}

/** The Set-Cookie value that sets a session (HttpOnly, SameSite=Strict, Path=/; Secure over TLS). */
export function setSessionCookie(id: string, maxAgeS: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.max(0, Math.floor(maxAgeS))}${secure ? '; Secure' : ''}`;
}

/** The Set-Cookie value that clears the session cookie. */
export function clearSessionCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0${secure ? '; Secure' : ''}`;
}

/**
 * Whether a cookie-authenticated unsafe request comes from the coordinator's own pages: its
 * Origin header, when present, must name the host the request was sent to.
 */
export function originAllowed(origin: string | undefined | null, host: string | undefined | null): boolean {
  if (origin === undefined || origin === null || origin === '') return true;
  if (!host) return false;
  try {
    return new URL(origin).host === host.toLowerCase();
  } catch {
    return false;
  }
}
