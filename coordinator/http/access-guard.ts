/**
 * Pieces of the access middleware (app.ts): the caller's address, the audit target of a
 * request (its build, node, agent or key), and the rate-limit check (per source address,
 * then per key).
 */
import type { Context } from 'hono';
import type { Principal } from '../access/api-keys.js';
import type { RateLimiter, RateSpec } from '../access/rate-limit.js';
import type { RouteMatch } from '../access/route-scopes.js';
import { nodeIncoming } from './openapi-common.js';
import type { AppEnv } from './context.js';

/** The peer's address (`::ffff:` of IPv4-mapped addresses dropped); `unknown` outside a Node server (tests). */
export function remoteOf(c: Context): string {
  const a = nodeIncoming(c)?.socket.remoteAddress;
  if (!a) return 'unknown';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/** A path segment decoded (as sent when it is not valid percent-encoding), bounded; undefined for none. */
export function decodedSegment(seg: string | undefined): string | undefined {
  if (!seg) return undefined;
  try {
    return decodeURIComponent(seg).slice(0, 300);
  } catch {
    return seg.slice(0, 300);
  }
}

/** What a request acts on, from its path parameters: `<build>`, `<build>/<node>`, an agent or key name, a digest. */
export function targetOf(match: RouteMatch | null): { target?: string } {
  if (!match) return {};
  const p = match.params;
  const id = p.get('id');
  const node = p.get('node');
  const target = id !== undefined && node !== undefined ? `${id}/${node}` : (id ?? p.get('name') ?? p.get('digest'));
  return target !== undefined ? { target: target.slice(0, 300) } : {};
}

/** `404 E_NOT_FOUND: build b-… not found` from a problem+json response (read from a clone), or just the status. */
export async function problemSummary(res: Response): Promise<string> {
  if (res.headers.get('content-type') !== 'application/problem+json') return String(res.status);
  try {
    const p = (await res.clone().json()) as { code?: unknown; detail?: unknown };
    return `${res.status} ${String(p.code)}: ${String(p.detail).slice(0, 300)}`;
  } catch {
    return String(res.status);
  }
}

function rate(spec: RateSpec): string {
  return `${spec.perSecond < 1 ? spec.perSecond.toFixed(3) : Math.round(spec.perSecond)}/s, burst ${spec.burst}`;
}

/** Takes a token from the caller's address bucket, then from its key's; the refusal when one is empty. */
export function rateLimited(
  limits: { perKey: RateLimiter | null; perAddress: RateLimiter | null },
  principal: Principal | null,
  remote: string,
): { retryAfterS: number; detail: string } | null {
  if (limits.perAddress) {
    const r = limits.perAddress.take(remote);
    if (!r.ok) return { retryAfterS: r.retryAfterS, detail: `too many requests from ${remote} (rate_limit.per_address ${rate(limits.perAddress.spec)}): retry in ${r.retryAfterS}s` };
  }
  if (limits.perKey && principal?.kind === 'key') {
    const r = limits.perKey.take(principal.id);
    if (!r.ok) return { retryAfterS: r.retryAfterS, detail: `too many requests with the key '${principal.name}' (rate_limit.per_key ${rate(limits.perKey.spec)}): retry in ${r.retryAfterS}s` };
  }
  return null;
}

/**
 * Whether the credential a request came with is still good, for a stream to ask as it goes
 * (the access check ran once, when it opened): its dashboard session (signed out, expired,
 * its key revoked) or else its API key (revoked, expired). Agents' credentials are not
 * re-checked here (a revoked agent is cut off by the hub).
 */
export function credentialCheck(c: Context<AppEnv>, deps: { sessions?: { resolve(id: string): unknown }; keys: { principalById(id: string): unknown } }): () => boolean {
  const p = c.get('principal');
  const session = c.get('session');
  return () => (session ? (deps.sessions?.resolve(session.id) ?? null) !== null : p.kind !== 'key' || deps.keys.principalById(p.id) !== null);
}
