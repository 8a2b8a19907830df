/**
 * Notifications (issue 13), the spec part: `notify: { webhooks: [{ url, events, secret }] }`
 * on a build asks the coordinator to POST the build's state changes to `url`. The spec
 * holds the name of a build secret (`kiln secrets set NAME`) the body is signed with,
 * never a value. Also what the coordinator's own hooks (config `webhooks.hooks`) share
 * with these: the URL rules, the event filter and the host allow-list.
 *
 * URLs: http(s) only, a host, no credentials (user:password@), no fragment, at most 2048
 * characters. Per-build hooks are checked against the coordinator's allow-list
 * (`webhooks.allowed_hosts`) at submit; an empty list refuses every per-build hook.
 * Delivery is coordinator/webhooks/.
 */
import { z } from 'zod';
import type { FieldError } from '../errors.js';
import { SECRET_NAME_RE, SECRET_NAME_RULE } from '../secret-names.js';
import { BUILD_STATES, NODE_STATES, type BuildState, type NodeState } from '../states.js';
import { fieldError } from './spec-fields.js';
import type { SecretVersions } from './secrets-spec.js';

/** What a hook can be sent: build state changes, node state changes. */
export const WEBHOOK_EVENT_TYPES = ['build', 'node'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];
/** Webhooks one build may name. */
export const MAX_BUILD_WEBHOOKS = 4;
export const MAX_WEBHOOK_URL = 2048;

/** One hook as written (the spec's `notify.webhooks[]`; the config's hooks add `name` and `secret_file`). */
export const WebhookFilterFields = {
  /** Event types sent (default: build). */
  events: z.array(z.enum(WEBHOOK_EVENT_TYPES)).min(1).max(WEBHOOK_EVENT_TYPES.length).optional(),
  /** Only these build states (default: all). */
  build_states: z.array(z.enum(BUILD_STATES)).min(1).max(BUILD_STATES.length).optional(),
  /** Only these node states (default: all). */
  node_states: z.array(z.enum(NODE_STATES)).min(1).max(NODE_STATES.length).optional(),
};

export const WebhookSpecSchema = z.strictObject({
  /** http(s) URL the coordinator POSTs to (no credentials in it). */
  url: z.string().min(1).max(MAX_WEBHOOK_URL),
  ...WebhookFilterFields,
  /** Name of a build secret the coordinator holds: the body's HMAC-SHA256 key (absent: unsigned). */
  secret: z.string().optional(),
});

export const NotifySpecSchema = z.strictObject({
  webhooks: z.array(WebhookSpecSchema).max(MAX_BUILD_WEBHOOKS, `at most ${MAX_BUILD_WEBHOOKS} webhooks per build`).optional(),
});

/** Which events a hook is sent. */
export interface WebhookFilter {
  events: WebhookEventType[];
  /** Absent: every state. */
  build_states?: BuildState[];
  node_states?: NodeState[];
}

/** A per-build hook after validation (stored in the build record: names only, never a secret value). */
export interface ResolvedWebhook extends WebhookFilter {
  url: string;
  /** The build secret's name. */
  secret?: string;
}

export interface ResolvedNotify {
  webhooks: ResolvedWebhook[];
}

/** What the coordinator allows per-build hooks to call (absent when the spec is checked without a coordinator). */
export interface WebhookPolicy {
  /** `webhooks.allowed_hosts`: host names or addresses, `*.domain` (subdomains), `*` (any); empty: none. */
  allowedHosts: readonly string[];
}

/** Why `text` is not a webhook URL, or null. */
export function webhookUrlProblem(text: string): string | null {
  if (text.length > MAX_WEBHOOK_URL) return `at most ${MAX_WEBHOOK_URL} characters`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `'${text.slice(0, 200)}' is not a URL (use http://host[:port]/path or https://...)`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `unsupported scheme '${url.protocol}' (use http:// or https://)`;
  if (url.username || url.password) return 'must not hold credentials (user:password@); sign the body with a secret instead';
  if (url.hash) return 'must not have a #fragment';
  if (!url.hostname) return 'has no host';
  return null;
}

/** The URL's host as the allow-list compares it: lower case, IPv6 without brackets. */
export function webhookHost(url: string): string {
  return new URL(url).hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
}

/** The port a webhook URL connects to (its own, else its scheme's: 80 or 443). */
export function webhookPort(url: string): number {
  const u = new URL(url);
  return u.port !== '' ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
}

/** An allow-list entry as a host pattern and a port (null: the default ports 80 and 443 only). */
function allowEntry(raw: string): { host: string; port: number | null } {
  const entry = raw.trim().toLowerCase();
  // [v6]:port, [v6], host:port; a bare IPv6 address (several colons) has no port.
  const bracketed = /^\[([^\]]*)\](?::(\d{1,5}))?$/.exec(entry);
  if (bracketed) return { host: bracketed[1]!, port: bracketed[2] !== undefined ? Number(bracketed[2]) : null };
  const m = /^([^:]+):(\d{1,5})$/.exec(entry);
  if (m) return { host: m[1]!, port: Number(m[2]) };
  return { host: entry, port: null };
}

/**
 * true when `host` (from webhookHost) on `port` (webhookPort) matches an entry of the
 * allow-list: `name`, `address`, `*.domain` or `*` for the host, each with `:port` for
 * that port only; an entry without a port allows the default ports 80 and 443 only, so
 * a build cannot aim its webhook at another service on an allowed host (a Docker API on
 * 2375, an admin port).
 */
export function hostAllowed(host: string, allowed: readonly string[], port = 443): boolean {
  for (const raw of allowed) {
    const entry = allowEntry(raw);
    const portOk = entry.port === null ? port === 80 || port === 443 : entry.port === port;
    if (!portOk) continue;
    if (entry.host === '*') return true;
    if (entry.host.startsWith('*.')) {
      if (host.endsWith(entry.host.slice(1)) && host.length > entry.host.length - 1) return true;
    } else if (entry.host === host) {
      return true;
    }
  }
  return false;
}

/** true when a hook with `filter` is sent an event of `type` in `state`. */
export function wantsEvent(filter: WebhookFilter, type: WebhookEventType, state: string): boolean {
  if (!filter.events.includes(type)) return false;
  const states: readonly string[] | undefined = type === 'build' ? filter.build_states : filter.node_states;
  return states === undefined || states.includes(state);
}

/** The filter part of a hook as written, with the defaults (events: build). */
export function resolveFilter(raw: { events?: WebhookEventType[] | undefined; build_states?: BuildState[] | undefined; node_states?: NodeState[] | undefined }): WebhookFilter {
  const out: WebhookFilter = { events: [...new Set<WebhookEventType>(raw.events ?? ['build'])] };
  if (raw.build_states) out.build_states = [...new Set(raw.build_states)];
  if (raw.node_states) out.node_states = [...new Set(raw.node_states)];
  return out;
}

/**
 * Validates the build's `notify` field. `policy` (the coordinator's, at submit): every
 * hook's host must be allowed. `held` (the coordinator's secrets): a named secret must be
 * held. Problems go to `errors`, each naming the field (`notify.webhooks.0.url`).
 */
export function resolveNotify(
  raw: z.output<typeof NotifySpecSchema> | undefined,
  policy: WebhookPolicy | undefined,
  held: SecretVersions | undefined,
  errors: FieldError[],
): ResolvedNotify | undefined {
  if (raw?.webhooks === undefined || raw.webhooks.length === 0) return undefined;
  const webhooks: ResolvedWebhook[] = [];
  raw.webhooks.forEach((h, i) => {
    const at = (field: string) => ['notify', 'webhooks', String(i), field];
    const problem = webhookUrlProblem(h.url);
    if (problem) {
      errors.push(fieldError(at('url'), problem));
    } else if (policy !== undefined) {
      const host = webhookHost(h.url);
      const port = webhookPort(h.url);
      if (policy.allowedHosts.length === 0) {
        errors.push(fieldError(at('url'), 'this coordinator takes no per-build webhooks (its webhooks.allowed_hosts is empty; an admin sets the hosts builds may call)'));
      } else if (!hostAllowed(host, policy.allowedHosts, port)) {
        const where = port === 80 || port === 443 ? `host '${host.slice(0, 200)}'` : `host '${host.slice(0, 200)}' on port ${port}`;
        errors.push(fieldError(at('url'), `${where} is not in the coordinator's webhooks.allowed_hosts (${policy.allowedHosts.slice(0, 10).join(', ')}; an entry without :port allows ports 80 and 443 only)`));
      }
    }
    const hook: ResolvedWebhook = { url: h.url, ...resolveFilter(h) };
    if (h.secret !== undefined) {
      if (!SECRET_NAME_RE.test(h.secret)) errors.push(fieldError(at('secret'), `invalid secret name '${h.secret.slice(0, 80)}' (use ${SECRET_NAME_RULE}; the spec names a secret, never holds one)`));
      else if (held && held.version(h.secret) === undefined) errors.push(fieldError(at('secret'), `secret '${h.secret}' is not held by the coordinator (an admin sets it with: kiln secrets set ${h.secret})`));
      hook.secret = h.secret;
    }
    webhooks.push(hook);
  });
  return { webhooks };
}
