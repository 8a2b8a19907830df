/**
 * Bearer-token checks for the HTTP API and the agent WebSocket upgrade. Tokens are
 * compared in constant time (over their sha256, so lengths do not leak either).
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export type Role = 'api' | 'agent';

/** Checks per-agent credentials (`kiln_agent_...`, access/agent-credentials.ts): the agent name, or null. */
export interface AgentCredentialCheck {
  agentOf(token: string): string | null;
}

function h(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class TokenCheck {
  private readonly api: Buffer;
  private readonly agent: Buffer;

  constructor(
    tokens: { apiToken: string; agentToken: string },
    /** Per-agent credentials, which grant the `agent` role as the shared agent token does. */
    private readonly credentials?: AgentCredentialCheck,
  ) {
    this.api = h(tokens.apiToken);
    this.agent = h(tokens.agentToken);
  }

  /** The role the Authorization header grants, or null. */
  role(authorization: string | undefined | null): Role | null {
    if (!authorization) return null;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!m) return null;
    const given = h(m[1]!);
    if (timingSafeEqual(given, this.api)) return 'api';
    if (timingSafeEqual(given, this.agent)) return 'agent';
    if (this.credentials?.agentOf(m[1]!)) return 'agent';
    return null;
  }
}
