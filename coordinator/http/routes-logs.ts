/**
 * Log routes. With `follow=true` they stream Server-Sent Events:
 *   event: log     data: {"node","text"}        id: byte offset after this text (node route)
 *                                               or the cursor `node:offset,...` (build route)
 *   event: status  data: {"node","state","attempt"}
 *   event: end     data: {"state"}              the node (or build) is done and every byte was sent
 * A client that reconnects with `Last-Event-ID` (or `?offset=` / `?cursor=`) continues
 * exactly after what it received: no gap, no duplicate. Without `follow`, the stored log
 * is returned as text/plain (the build route prefixes each line with its node name).
 */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { streamSSE, stream } from 'hono/streaming';
import { z } from 'zod';
import { KilnError } from '../../shared/index.js';
import { followLogs, formatCursor, parseCursor, type FollowEvent } from '../logs/log-follow.js';
import type { AppEnv, HttpDeps } from './context.js';
import { problemContent } from './openapi-common.js';

const Follow = z
  .enum(['true', 'false', '1', '0'])
  .optional()
  .transform((v) => v === 'true' || v === '1');

const nodeLogs = createRoute({
  method: 'get',
  path: '/api/v1/builds/{id}/nodes/{node}/logs',
  summary: "A node's log (all attempts); SSE with follow=true",
  request: {
    params: z.object({ id: z.string().min(1).max(100), node: z.string().min(1).max(100) }),
    query: z.object({ follow: Follow, offset: z.coerce.number().int().nonnegative().optional() }),
  },
  responses: {
    200: {
      description: 'text/plain log, or an SSE stream with follow=true',
      content: { 'text/plain': { schema: z.string() }, 'text/event-stream': { schema: z.string() } },
    },
    404: problemContent('No such build or node'),
  },
});

const buildLogs = createRoute({
  method: 'get',
  path: '/api/v1/builds/{id}/logs',
  summary: "Every node's log, multiplexed; SSE with follow=true",
  request: {
    params: z.object({ id: z.string().min(1).max(100) }),
    query: z.object({ follow: Follow, cursor: z.string().max(65_536).optional() }),
  },
  responses: {
    200: {
      description: 'text/plain log with `node | ` prefixes, or an SSE stream with follow=true',
      content: { 'text/plain': { schema: z.string() }, 'text/event-stream': { schema: z.string() } },
    },
    404: problemContent('No such build'),
  },
});

type LogFollowEvent = Extract<FollowEvent, { type: 'log' }>;

/** Writes follower events as SSE; `idOf` gives each log event's id (where a reconnect resumes). */
function sse(c: Context, ac: AbortController, events: AsyncIterable<FollowEvent | null>, idOf: (e: LogFollowEvent) => string): Response {
  return streamSSE(c, async (s) => {
    s.onAbort(() => ac.abort());
    for await (const e of events) {
      if (e === null) await s.write(': keep-alive\n\n');
      else if (e.type === 'end') await s.writeSSE({ event: 'end', data: JSON.stringify({ state: e.state }) });
      else if (e.type === 'log') await s.writeSSE({ event: 'log', data: JSON.stringify({ node: e.node, text: e.text }), id: idOf(e) });
      else await s.writeSSE({ event: 'status', data: JSON.stringify({ node: e.node, state: e.state, attempt: e.attempt }) });
    }
  });
}

export function registerLogRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  app.openapi(nodeLogs, async (c) => {
    const { id, node } = c.req.valid('param');
    const { follow, offset } = c.req.valid('query');
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    if (!build.nodes.some((n) => n.name === node)) throw new KilnError('E_NOT_FOUND', `build ${id} has no node '${node}'`);
    const lastId = Number(c.req.header('last-event-id'));
    const start = Number.isSafeInteger(lastId) && lastId >= 0 ? lastId : (offset ?? 0);
    const ac = new AbortController();
    const events = followLogs(deps, { buildId: id, node, offsets: new Map([[node, start]]), follow, signal: ac.signal });
    if (!follow) {
      c.header('content-type', 'text/plain; charset=utf-8');
      return stream(c, async (s) => {
        s.onAbort(() => ac.abort());
        for await (const e of events) if (e?.type === 'log') await s.write(e.text);
      }) as never;
    }
    return sse(c, ac, events, (e) => String(e.offset));
  });

  app.openapi(buildLogs, async (c) => {
    const { id } = c.req.valid('param');
    const { follow, cursor } = c.req.valid('query');
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    const offsets = parseCursor(c.req.header('last-event-id') ?? cursor);
    const ac = new AbortController();
    const events = followLogs(deps, { buildId: id, node: null, offsets: new Map(offsets), follow, signal: ac.signal });
    if (!follow) {
      c.header('content-type', 'text/plain; charset=utf-8');
      const width = Math.max(...build.nodes.map((n) => n.name.length));
      const pending = new Map<string, string>();
      return stream(c, async (s) => {
        s.onAbort(() => ac.abort());
        for await (const e of events) {
          if (e?.type !== 'log') continue;
          const text = (pending.get(e.node) ?? '') + e.text;
          const lines = text.split('\n');
          pending.set(e.node, lines.pop() ?? '');
          if (lines.length > 0) await s.write(lines.map((l) => `${e.node.padEnd(width)} | ${l}\n`).join(''));
        }
        for (const [node, rest] of pending) if (rest) await s.write(`${node.padEnd(width)} | ${rest}\n`);
      }) as never;
    }
    return sse(c, ac, events, (e) => {
      offsets.set(e.node, e.offset);
      return formatCursor(offsets);
    });
  });
}
