/**
 * Image routes: the images a build's nodes pushed to registries (`image:` refs, and the
 * multi-platform indexes of fanned nodes), each with the manifest digest the registry
 * stored, its platform(s) and size.
 */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { API_ROUTES, ImageList, KilnError } from '../../shared/index.js';
import { imagesView } from '../builds/build-views.js';
import type { AppEnv, HttpDeps } from './context.js';
import { BuildIdParams, SECURED, errors } from './openapi-common.js';

const listImages = createRoute({
  method: 'get',
  path: API_ROUTES.buildImages.template,
  summary: "A build's pushed images: ref, manifest digest, platform and size per node result (indexes too)",
  security: SECURED,
  request: { params: BuildIdParams },
  responses: {
    200: { description: 'The images, in node order', content: { 'application/json': { schema: ImageList } } },
    ...errors([400, [404, 'No such build']]),
  },
});

export function registerImageRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  app.openapi(listImages, async (c) => {
    const { id } = c.req.valid('param');
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    return c.json({ items: imagesView(build) }, 200);
  });
}
