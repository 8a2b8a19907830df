/**
 * Artifact routes: a build's artifacts (node outputs) with download links and expiry,
 * and pinning a build so retention keeps its artifacts.
 *
 * `url` is a presigned link for an S3 store (valid until the artifact expires, at most
 * 7 days: S3's limit) or the coordinator's own CAS route for the local store (send the API
 * token). Expired artifacts are still listed, with `url: null`.
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, ArtifactPage, BuildView, KilnError, apiPath, type ArtifactViewT, type Digest } from '../../shared/index.js';
import { buildView, resultAttempt } from '../builds/build-views.js';
import type { AppEnv, HttpDeps } from './context.js';
import { BuildIdParams, SECURED, errors } from './openapi-common.js';

const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

const listArtifacts = createRoute({
  method: 'get',
  path: API_ROUTES.buildArtifacts.template,
  summary: "A build's artifacts: every output of its successful nodes, with a download link and expiry",
  security: SECURED,
  request: { params: BuildIdParams },
  responses: {
    200: { description: 'The artifacts', content: { 'application/json': { schema: ArtifactPage } } },
    ...errors([400, [404, 'No such build']]),
  },
});

const pin = (method: 'post' | 'delete') =>
  createRoute({
    method,
    path: API_ROUTES.buildPin.template,
    summary: method === 'post' ? "Pin a build: retention keeps its artifacts until it is unpinned" : 'Unpin a build: its artifacts expire with the retention period again',
    security: SECURED,
    request: { params: BuildIdParams },
    responses: {
      200: { description: 'The build (durable when answered)', content: { 'application/json': { schema: BuildView } } },
      ...errors([400, [404, 'No such build']]),
    },
  });

const runGc = createRoute({
  method: 'post',
  path: API_ROUTES.gc.template,
  summary: 'Run a retention sweep now: delete blobs no live build needs (it also runs every gc_interval)',
  security: SECURED,
  responses: {
    ...errors([]),
    200: {
      description: 'What the sweep did',
      content: { 'application/json': { schema: z.object({ live: z.number().int(), deleted: z.number().int(), bytes_freed: z.number().int(), kept: z.number().int() }) } },
    },
  },
});

export function registerArtifactRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  app.openapi(runGc, async (c) => {
    const r = await deps.retention.sweep();
    return c.json({ live: r.live, deleted: r.deleted, bytes_freed: r.bytesFreed, kept: r.kept }, 200);
  });

  app.openapi(listArtifacts, async (c) => {
    const { id } = c.req.valid('param');
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    const origin = new URL(c.req.url).origin;
    const expires = deps.retention.expiresAt(build);
    const now = Date.now();
    const items: ArtifactViewT[] = [];
    for (const node of build.nodes) {
      const a = resultAttempt(node);
      if (!a) continue;
      for (const o of a.outputs ?? []) {
        const present = deps.cas.has(o.digest as Digest);
        let url: string | null = null;
        if (present && (expires === null || expires > now)) {
          const ttl = Math.max(60, Math.min(MAX_PRESIGN_SECONDS, expires === null ? MAX_PRESIGN_SECONDS : Math.floor((expires - now) / 1000)));
          url = (await deps.cas.downloadUrl(o.digest as Digest, ttl)) ?? `${origin}${apiPath.casBlob(o.digest)}`;
        }
        items.push({
          node: node.name,
          name: o.name,
          path: node.outputs.find((x) => x.name === o.name)?.path ?? '',
          digest: o.digest,
          size_bytes: o.size,
          media_type: o.media_type,
          url,
          expires_at: expires === null ? null : new Date(expires).toISOString(),
          provenance: a.provenance ?? null,
          reused: a.reused_from !== null && a.reused_from !== undefined,
        });
      }
    }
    return c.json({ items, next_cursor: null }, 200);
  });

  for (const method of ['post', 'delete'] as const) {
    app.openapi(pin(method), async (c) => {
      const { id } = c.req.valid('param');
      const build = await deps.engine.setPinned(id, method === 'post');
      if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
      return c.json(buildView(build, deps.agents, undefined, deps.engine), 200);
    });
  }
}
