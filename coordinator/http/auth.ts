/**
 * Bearer-credential checks for the HTTP API and the agent WebSocket upgrade: who a
 * request is from (a `Principal`). The legacy shared tokens (tokens/agent, tokens/api)
 * are compared in constant time (over their sha256, so lengths do not leak either); the
 * legacy API token is the admin key `api-token`. API keys (`kiln_key_…`) are looked up
 * by their sha256 in the key store (access/api-keys.ts).
 *
 * What a principal may do is not decided here: the route table (access/route-scopes.ts)
 * and the middleware in app.ts do that.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { LEGACY_KEY_ID, type KeyPrincipal, type Principal } from '../access/api-keys.js';

export type { Principal } from '../access/api-keys.js';

/** `api` for any API key, `agent` for an agent credential. */
export type Role = 'api' | 'agent';

/** Checks per-agent credentials (`kiln_agent_...`, access/agent-credentials.ts): the agent name, or null. */
export interface AgentCredentialCheck {
  agentOf(token: string): string | null;
}

/** Looks API keys up by their secret (access/api-keys.ts ApiKeyStore). */
export interface KeyLookup {
  authenticate(secret: string): KeyPrincipal | null;
}

const LEGACY_ADMIN: KeyPrincipal = Object.freeze({ kind: 'key', id: LEGACY_KEY_ID, name: LEGACY_KEY_ID, scopes: Object.freeze(['admin'] as const) });
const LEGACY_AGENT: Principal = Object.freeze({ kind: 'agent', name: null });

function h(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(authorization: string | undefined | null): string | null {
  if (!authorization) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return m ? m[1]! : null;
}

export class TokenCheck {
  private readonly api: Buffer;
  private readonly agent: Buffer;

  constructor(
    tokens: { apiToken: string; agentToken: string },
    private readonly keys: KeyLookup | null = null,
    /** Per-agent credentials (`kiln_agent_...`): the agent principal of that name. */
    private readonly credentials?: AgentCredentialCheck,
  ) {
    this.api = h(tokens.apiToken);
    this.agent = h(tokens.agentToken);
  }

  /** Who the Authorization header is from, or null (none, malformed, unknown, expired or revoked). */
  authenticate(authorization: string | undefined | null): Principal | null {
    const token = bearerToken(authorization);
    if (token === null) return null;
    const given = h(token);
    // The agent credential: the legacy shared token.
    if (timingSafeEqual(given, this.agent)) return LEGACY_AGENT;
    if (timingSafeEqual(given, this.api)) return LEGACY_ADMIN;
    const agent = this.credentials?.agentOf(token);
    if (agent) return { kind: 'agent', name: agent };
    return this.keys?.authenticate(token) ?? null;
  }

  /** The role the Authorization header grants, or null (the agents' WebSocket upgrade asks this). */
  role(authorization: string | undefined | null): Role | null {
    const p = this.authenticate(authorization);
    return p === null ? null : p.kind === 'agent' ? 'agent' : 'api';
  }
}
