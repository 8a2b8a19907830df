/**
 * What the HTTP routes need from the rest of the coordinator, passed in explicitly.
 */
import type { Logger } from 'pino';
import type { AgentRegistry } from '../placement/agent-registry.js';
import type { Engine } from '../builds/engine.js';
import type { Cas } from '../cas/cas.js';
import type { Retention } from '../cas/retention.js';
import type { LogStorage } from '../logs/log-storage.js';
import type { ApiKeyStore, Principal } from '../access/api-keys.js';
import type { AuditLog } from '../access/audit-log.js';
import type { RateLimiter } from '../access/rate-limit.js';
import type { TokenCheck } from './auth.js';
import type { AgentCredentialStore } from '../access/agent-credentials.js';
import type { SecretStore } from '../secrets/secret-store.js';
import type { SessionStore } from '../access/sessions.js';
import type { WebhookQuery } from '../webhooks/webhooks.js';
import type { ClusterViewT, WebhookPolicy } from '../../shared/index.js';
import type { ChangeFeed } from '../events/change-feed.js';

/** Agent enrolment and per-agent credentials (routes-agent-access.ts). */
export interface AgentAccess {
  store: AgentCredentialStore;
  /** The agents' WebSocket endpoint: cuts off a revoked agent, asks one to rotate (agent-hub.ts). */
  hub: { revoke(name: string): Promise<void>; askRotate(name: string): boolean };
}

export interface HttpDeps {
  engine: Engine;
  agents: AgentRegistry;
  logs: LogStorage;
  cas: Cas;
  retention: Retention;
  tokens: TokenCheck;
  /** Agent enrolment; absent: the routes answer 404 (only the shared agent token). */
  agentAccess?: AgentAccess;
  /** API keys (create, list, revoke). */
  keys: ApiKeyStore;
  /** The audit log: mutations and refused calls are recorded here. */
  audit: Pick<AuditLog, 'record' | 'query'>;
  /** Rate limits (null: off); agents are not limited. */
  rateLimits: { perKey: RateLimiter | null; perAddress: RateLimiter | null };
  logger: Logger;
  /** Platform for nodes that name none (linux/<coordinator arch>). */
  defaultPlatform: string;
  /** Largest accepted spec body. */
  maxSpecBytes: number;
  /** Largest blob the CAS takes (config max_blob_bytes). */
  maxBlobBytes: number;
  /** false while starting or shutting down: /readyz answers 503 and writes are refused. */
  isReady: () => boolean;
  /** Build secrets (issue 12); absent: no secret routes, and a spec naming a secret is refused. */
  secrets?: SecretStore;
  /** Webhooks (issue 13); absent when none can exist (no hook configured, no allowed hosts). */
  webhooks?: WebhookQuery;
  /** Hosts a build's own webhooks may call (absent: none; such a spec is refused). */
  webhookPolicy?: WebhookPolicy;
  /** The events stream (`GET /api/v1/events`): the coordinator's change feed (absent: the route makes one) and the ping interval. */
  events?: { feed?: ChangeFeed; pingMs?: number };
  /** The coordinator's clock (ms); default Date.now. Views use it for circuit breakers. */
  clock?: () => number;
  /** Dashboard sessions (access/sessions.ts); default: a store of its own over `keys`. */
  sessions?: SessionStore;
  /** The coordinator serves TLS: session cookies get `Secure`. */
  secureCookies?: boolean;
  /** The built dashboard (`dist/web`); default: next to the coordinator's code; null: API only. */
  webRoot?: string | null;
  /** GET /api/v1/cluster: the leader, its epoch and the coordinators seen (an embedded coordinator: itself at epoch 0). */
  cluster: () => Promise<ClusterViewT>;
}

export function clockOf(deps: HttpDeps): () => number {
  return deps.clock ?? Date.now;
}

/** The dashboard session a request came with (null: none, or it used a bearer token). */
export interface RequestSession {
  readonly id: string;
  readonly expiresAt: number;
}

export type AppEnv = { Variables: { requestId: string; role: 'api' | 'agent'; principal: Principal; session: RequestSession | null } };
