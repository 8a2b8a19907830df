/**
 * Build routes: submit a spec, list builds, show one, cancel one.
 *
 * Submission validates everything before anything is stored: the spec text (YAML or
 * JSON, duplicate keys refused), every node and field, the DAG, and that each context
 * was uploaded to the CAS and contains the node's Dockerfile. Any problem is a 400
 * problem+json whose `errors` name the node and field.
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import {
  API_ROUTES,
  BUILD_STATES,
  BuildPage,
  type BuildCountsT,
  type BuildState,
  BuildView,
  CreatedBuild,
  KilnError,
  apiPath,
  coerceError,
  decodeSpecBytes,
  parseSpecText,
  submittedSpecJsonSchema,
  validateSpec,
  type Digest,
  type FieldError,
  type ResolvedSpec,
} from '../../shared/index.js';
import { actorOf } from '../access/api-keys.js';
import { buildView, summaryView } from '../builds/build-views.js';
import { tarEntries, normalizeTarPath } from '../cas/tar-index.js';
import { loadContextDockerfile } from '../registry/context-dockerfiles.js';
import type { AppEnv, HttpDeps } from './context.js';
import { PageQuery, nextLink } from './pagination.js';
import { BuildIdParams, SECURED, documentBodyLimit, errors, limitBody, mediaType, requireMediaType } from './openapi-common.js';

/** Media types a spec may be submitted as; JSON ones must be JSON, YAML ones are read as YAML 1.2 (JSON is YAML). */
export const SPEC_MEDIA_TYPES = ['application/json', 'application/yaml', 'application/x-kiln-spec+json'] as const;
const JSON_SPEC_TYPES = new Set(['application/json', 'application/x-kiln-spec+json']);

const createBuild = createRoute({
  method: 'post',
  path: API_ROUTES.builds.template,
  summary: 'Submit a build (a DAG of nodes)',
  description:
    'Body: the build spec as JSON or YAML (UTF-8, at most 4 MiB, nesting at most 64 deep, at most 100 YAML alias expansions, no NUL, no `__proto__` key). Each `context` is the sha256 digest of a tar uploaded to the CAS first. ' +
    'Graph rules the schema cannot say are checked too: `needs` and `inputs.*.from` name nodes of the spec, and there is no cycle.',
  security: SECURED,
  // The body is read whole before it is parsed: refuse other media types, then oversized bodies while they stream in.
  middleware: [requireMediaType(SPEC_MEDIA_TYPES)],
  request: {
    query: z.object({ reuse: z.enum(['true', 'false']).optional().openapi({ description: 'false: build every node, reuse nothing (kiln submit --no-reuse)' }) }),
    body: {
      required: true,
      content: Object.fromEntries(SPEC_MEDIA_TYPES.map((t) => [t, { schema: submittedSpecJsonSchema() as never }])),
    },
  },
  responses: {
    201: { description: 'Created', headers: { location: { description: 'The build', schema: { type: 'string' } } }, content: { 'application/json': { schema: CreatedBuild } } },
    ...errors([[400, 'The spec is invalid (syntax, not UTF-8, a field, the graph, or a context not uploaded); `errors` name the node and field'], [413, 'The spec is larger than the limit (x-max-bytes, 4 MiB)'], 415, 503]),
  },
});

/** The longest `name` filter taken. */
export const MAX_NAME_FILTER = 128;
const STATE_ALT = BUILD_STATES.join('|');

const ListQuery = PageQuery.extend({
  state: z
    .string()
    .max(200)
    .regex(new RegExp(`^(?:${STATE_ALT})(?:,(?:${STATE_ALT}))*$`), `must be a build state or a comma list of them (${BUILD_STATES.join(', ')})`)
    .optional()
    .openapi({ description: `Only builds in this state, or one of these (comma list of ${BUILD_STATES.join(', ')})`, example: 'running,failed' }),
  name: z
    .string()
    .min(1)
    .max(MAX_NAME_FILTER)
    .optional()
    .openapi({ description: 'Only builds whose name contains this text (case-insensitive)' }),
});

const listBuilds = createRoute({
  method: 'get',
  path: API_ROUTES.builds.template,
  summary: 'List builds, newest first',
  description:
    'Filters: `state` (one state or a comma list) and `name` (a substring of the build name, case-insensitive). `counts` has, for the builds `name` matches, how many are in each state (whatever `state` asks), for filter chips.',
  security: SECURED,
  request: { query: ListQuery },
  responses: {
    200: { description: 'A page of builds', headers: { link: { description: 'RFC 8288 `rel="next"` link when there is a next page', schema: { type: 'string' } } }, content: { 'application/json': { schema: BuildPage } } },
    ...errors([400]),
  },
});

const getBuild = createRoute({
  method: 'get',
  path: API_ROUTES.build.template,
  summary: 'A build with its nodes and their attempts',
  security: SECURED,
  request: { params: BuildIdParams },
  responses: {
    200: { description: 'The build', content: { 'application/json': { schema: BuildView } } },
    ...errors([400, [404, 'No such build']]),
  },
});

const cancelBuild = createRoute({
  method: 'post',
  path: API_ROUTES.buildCancel.template,
  summary: 'Cancel a build: unfinished nodes are cancelled, running ones aborted on their agents',
  security: SECURED,
  request: { params: BuildIdParams },
  responses: {
    202: { description: 'Cancelling (durable when answered)', content: { 'application/json': { schema: BuildView } } },
    ...errors([400, [404, 'No such build'], [409, 'The build already finished']]),
  },
});

/** Checks every node's context is in the CAS and holds the node's Dockerfile, and every `digest:` input is in the CAS. */
async function checkContexts(deps: HttpDeps, spec: ResolvedSpec): Promise<FieldError[]> {
  const errors: FieldError[] = [];
  for (const node of spec.nodes) {
    for (const i of node.inputs) {
      if (i.digest !== null && !deps.cas.has(i.digest as Digest)) {
        errors.push({ path: `nodes.${node.name}.inputs.${i.name}.digest`, message: `node '${node.name}': field 'inputs.${i.name}.digest': no artifact ${i.digest} in the CAS` });
      }
    }
    if (!node.context) continue;
    const digest = node.context as Digest;
    const at = `nodes.${node.name}`;
    if (!deps.cas.has(digest)) {
      errors.push({ path: `${at}.context`, message: `node '${node.name}': field 'context': ${digest} was not uploaded (PUT ${apiPath.casBlob(digest)} first)` });
      continue;
    }
    if (node.dockerfile === null) continue;
    let entries: Set<string>;
    try {
      entries = await tarEntries(digest, () => deps.cas.read(digest));
    } catch (err) {
      errors.push({ path: `${at}.context`, message: `node '${node.name}': field 'context': ${digest} is not a readable tar (${coerceError(err).message})` });
      continue;
    }
    if (!entries.has(normalizeTarPath(node.dockerfile))) {
      errors.push({ path: `${at}.dockerfile`, message: `node '${node.name}': field 'dockerfile': '${node.dockerfile}' is not in the context ${digest.slice(0, 19)}…` });
    } else if (node.dockerfile_inline === null) {
      // The registries its Dockerfile pulls from get credentials at assignment (registry/context-dockerfiles.ts).
      await loadContextDockerfile(digest, node.dockerfile, () => deps.cas.read(digest));
    }
  }
  return errors;
}

export function registerBuildRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  // Registered before the route: hono runs middleware in registration order, and the limit
  // must see the body before the route reads it.
  app.post(API_ROUTES.builds.template, limitBody(deps.maxSpecBytes, 'the spec'));
  documentBodyLimit(app, `post ${API_ROUTES.builds.template}`, deps.maxSpecBytes);
  app.openapi(createBuild, async (c) => {
    if (!deps.isReady()) throw new KilnError('E_UNAVAILABLE', 'the coordinator is not accepting builds right now (starting or shutting down)');
    // Under @hono/node-server this reads the Node request directly (limitBody built no web Request).
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    if (bytes.length > deps.maxSpecBytes) throw new KilnError('E_TOO_LARGE', `spec is larger than ${deps.maxSpecBytes} bytes`);
    const decoded = decodeSpecBytes(bytes);
    if (!decoded.ok) throw new KilnError('E_SPEC_INVALID', specDetail(decoded.errors), { errors: decoded.errors });
    const parsed = parseSpecText(decoded.value, { json: JSON_SPEC_TYPES.has(mediaType(c.req.header('content-type')) ?? '') });
    if (!parsed.ok) throw new KilnError('E_SPEC_INVALID', specDetail(parsed.errors), { errors: parsed.errors });
    // Secrets: a node naming one the coordinator does not hold is refused (400 naming both).
    const secrets = deps.secrets ?? { version: () => undefined };
    const resolved = validateSpec(parsed.value, {
      form: 'submitted',
      defaultPlatform: deps.defaultPlatform,
      concurrencyGroups: deps.engine.concurrencyGroups,
      secrets,
      webhooks: deps.webhookPolicy ?? { allowedHosts: [] },
    });
    if (!resolved.ok) throw new KilnError('E_SPEC_INVALID', specDetail(resolved.errors), { errors: resolved.errors });
    const ctxErrors = await checkContexts(deps, resolved.value);
    if (ctxErrors.length > 0) throw new KilnError('E_SPEC_INVALID', specDetail(ctxErrors), { errors: ctxErrors });
    const build = await deps.engine.submit(resolved.value, { reuse: c.req.valid('query').reuse !== 'false', submittedBy: actorOf(c.get('principal')) });
    const url = apiPath.build(build.id);
    return c.json({ id: build.id, state: build.state, url }, 201, { location: url });
  });

  app.openapi(listBuilds, (c) => {
    const { limit, cursor, state, name } = c.req.valid('query');
    const states = state !== undefined ? new Set(state.split(',')) : null;
    const needle = name?.toLowerCase() ?? null;
    const ids = deps.engine.buildIds();
    // ids are time-ordered: newest first = from the end; the cursor is the last id sent.
    let end = ids.length;
    if (cursor) {
      let lo = 0;
      let hi = ids.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (ids[mid]! < cursor) lo = mid + 1;
        else hi = mid;
      }
      end = lo;
    }
    // A build's name and state: an active build's record (no summary made for a build that is skipped), or its archived summary.
    const head = (id: string) => deps.engine.activeBuild(id) ?? deps.engine.buildSummary(id);
    const matches = (b: { name: string; state: string }) => (needle === null || b.name.toLowerCase().includes(needle)) && (states === null || states.has(b.state));
    const items = [];
    let i = end - 1;
    for (; i >= 0 && items.length < limit; i--) {
      const b = states !== null || needle !== null ? head(ids[i]!) : null;
      if (b !== null && (b === undefined || !matches(b))) continue;
      const summary = deps.engine.buildSummary(ids[i]!);
      if (summary) items.push(summaryView(summary));
    }
    const next = items.length === limit && i >= 0 ? items[items.length - 1]!.id : null;
    return c.json({ items, next_cursor: next, counts: countByState(ids, head, needle) }, 200, nextLink(c.req.url, next));
  });

  app.openapi(getBuild, async (c) => {
    const { id } = c.req.valid('param');
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    return c.json(buildView(build, deps.agents, undefined, deps.engine), 200);
  });

  app.openapi(cancelBuild, async (c) => {
    const { id } = c.req.valid('param');
    const build = await deps.engine.cancel(id);
    return c.json(buildView(build, deps.agents, undefined, deps.engine), 202);
  });
}

/** How many builds whose name contains `needle` (null: every build) are in each state. */
function countByState(ids: readonly string[], head: (id: string) => { name: string; state: BuildState } | null | undefined, needle: string | null): BuildCountsT {
  const counts = Object.fromEntries(BUILD_STATES.map((s) => [s, 0])) as BuildCountsT;
  for (const id of ids) {
    const b = head(id);
    if (b && (needle === null || b.name.toLowerCase().includes(needle))) counts[b.state]++;
  }
  return counts;
}

function specDetail(errors: FieldError[]): string {
  const first = errors[0]?.message ?? 'invalid spec';
  return errors.length > 1 ? `invalid spec: ${first} (and ${errors.length - 1} more)` : `invalid spec: ${first}`;
}
