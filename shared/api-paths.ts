/**
 * The coordinator's HTTP route paths, from one table: the server declares its routes and
 * OpenAPI paths with the templates (`API_ROUTES.build.template` is
 * `/api/v1/builds/{id}`), and every client (the CLI, the agent's CAS client, the tests,
 * the benchmarks) builds request paths with `apiPath` (`apiPath.build(id)`), which
 * encodes each parameter. A route changes here or nowhere.
 *
 * Parameters are encoded with encodeURIComponent, except that `:` is left as it is (it is
 * a plain path character, RFC 3986 `pchar`), so a CAS path reads
 * `/api/v1/cas/sha256:<hex>` on the wire as it always did.
 */

/** The prefix of every API route (auth applies below it). */
export const API_PREFIX = '/api/v1';

/** One string argument per `{param}` of the template, in order. */
export type PathArgs<T extends string> = T extends `${string}{${string}}${infer Rest}` ? [string, ...PathArgs<Rest>] : [];

export interface ApiRoute<T extends string> {
  /** The OpenAPI path (`{param}` placeholders), as the server declares it. */
  readonly template: T;
  /** The request path with each `{param}` replaced, in order, by its encoded argument. */
  readonly path: (...args: PathArgs<T>) => string;
  /** The same with the arguments as given, not encoded (tests that send hostile or pre-encoded segments). */
  readonly rawPath: (...args: PathArgs<T>) => string;
}

/** A path segment value, encoded (`:` kept; `/`, `?`, `#`, `%` and the rest escaped). */
export function encodePathSegment(value: string): string {
  return encodeURIComponent(value).replace(/%3A/gi, ':');
}

function route<const T extends string>(template: T): ApiRoute<T> {
  const parts = template.split(/\{[^}]+\}/);
  const fill = (values: readonly string[], encode: (v: string) => string): string => {
    if (values.length !== parts.length - 1) throw new TypeError(`${template} takes ${parts.length - 1} parameters, got ${values.length}`);
    let out = parts[0]!;
    for (let i = 0; i < values.length; i++) out += encode(values[i]!) + parts[i + 1]!;
    return out;
  };
  return {
    template,
    path: (...args) => fill(args as readonly string[], encodePathSegment),
    rawPath: (...args) => fill(args as readonly string[], (v) => v),
  };
}

/** Operator controls of an agent (`POST /api/v1/agents/{name}/<action>`). */
export const AGENT_CONTROL_ACTIONS = ['pause', 'resume', 'drain'] as const;
export type AgentControlAction = (typeof AGENT_CONTROL_ACTIONS)[number];

/** Every API route under `/api/v1` (the agents' WebSocket path is AGENT_SOCKET_PATH, shared/protocol). */
export const API_ROUTES = {
  /** GET: list builds; POST: submit one. */
  builds: route('/api/v1/builds'),
  build: route('/api/v1/builds/{id}'),
  buildCancel: route('/api/v1/builds/{id}/cancel'),
  buildLogs: route('/api/v1/builds/{id}/logs'),
  buildArtifacts: route('/api/v1/builds/{id}/artifacts'),
  buildImages: route('/api/v1/builds/{id}/images'),
  buildPin: route('/api/v1/builds/{id}/pin'),
  buildError: route('/api/v1/builds/{id}/error'),
  nodeLogs: route('/api/v1/builds/{id}/nodes/{node}/logs'),
  nodeRetry: route('/api/v1/builds/{id}/nodes/{node}/retry'),
  agents: route('/api/v1/agents'),
  agent: route('/api/v1/agents/{name}'),
  agentPause: route('/api/v1/agents/{name}/pause'),
  agentResume: route('/api/v1/agents/{name}/resume'),
  agentDrain: route('/api/v1/agents/{name}/drain'),
  /** Agent enrolment (agent-credentials): POST with an enrolment token; revoke and rotate (admin); an agent's own rotation. */
  agentEnrol: route('/api/v1/agent-enrolment'),
  agentRevoke: route('/api/v1/agents/{name}/revoke'),
  agentRotate: route('/api/v1/agents/{name}/rotate'),
  agentCredential: route('/api/v1/agent-credential'),
  /** GET: enrolment tokens (no secrets); POST: create one. */
  tokens: route('/api/v1/tokens'),
  token: route('/api/v1/tokens/{id}'),
  pools: route('/api/v1/pools'),
  /** Server-Sent Events of every state change (builds, nodes, agents, pools). */
  events: route('/api/v1/events'),
  deadLetter: route('/api/v1/dead-letter'),
  gc: route('/api/v1/gc'),
  /** Build secrets (admin): GET lists them; PUT sets one, DELETE removes it. */
  secrets: route('/api/v1/secrets'),
  secret: route('/api/v1/secrets/{name}'),
  /** PUT, HEAD, GET one blob. */
  casBlob: route('/api/v1/cas/{digest}'),
  casFindMissing: route('/api/v1/cas/find-missing'),
  /** GET: list API keys; POST: create one. */
  keys: route('/api/v1/keys'),
  key: route('/api/v1/keys/{id}'),
  audit: route('/api/v1/audit'),
  /** The dashboard's session (a cookie): POST signs in with a key, GET says who, DELETE signs out. */
  session: route('/api/v1/session'),
  /** Webhooks (issue 13): GET lists them; their delivery logs. */
  /** Who leads: the leader's URL, its fencing epoch and every coordinator on the state (answered by each). */
  cluster: route('/api/v1/cluster'),
  webhooks: route('/api/v1/webhooks'),
  webhookDeliveries: route('/api/v1/webhooks/{id}/deliveries'),
} as const;

export type ApiRouteName = keyof typeof API_ROUTES;

/** The control route of each agent action. */
export const AGENT_CONTROL_ROUTES = {
  pause: API_ROUTES.agentPause,
  resume: API_ROUTES.agentResume,
  drain: API_ROUTES.agentDrain,
} as const satisfies Record<AgentControlAction, ApiRoute<string>>;

/** Request paths for clients: `apiPath.nodeLogs(buildId, node)`; parameters are encoded. */
export const apiPath: { readonly [K in ApiRouteName]: (typeof API_ROUTES)[K]['path'] } = Object.fromEntries(
  Object.entries(API_ROUTES).map(([name, r]) => [name, r.path]),
) as never;

/** A query parameter's value; undefined and null leave the parameter out. */
export type QueryValue = string | number | boolean | undefined | null;

/**
 * `path` with a query string (`?a=1&b=x`), values encoded with encodeURIComponent, in the
 * order given; parameters whose value is undefined or null are left out.
 */
export function withQuery(path: string, query: Readonly<Record<string, QueryValue>>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue;
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  }
  return parts.length === 0 ? path : `${path}?${parts.join('&')}`;
}
