/**
 * Log routes. With `follow=true` they stream Server-Sent Events (shared/log-events.ts):
 *   event: log     data: {"node","text"}        id: byte offset after this text (node route)
 *                                               or the cursor `node:offset,...` (build route)
 *   event: status  data: {"node","state","attempt"}
 *   event: end     data: {"state"}              the node (or build) is done and every byte was sent
 * A client that reconnects with `Last-Event-ID` (or `?offset=` / `?cursor=`) continues
 * exactly after what it received: no gap, no duplicate. A resume point that is malformed,
 * names a node the build does not have, or falls inside a UTF-8 character is refused (400)
 * rather than silently replaying from the start or sending half a character. Without
 * `follow`, the node route returns the stored bytes as they are (text/plain; with
 * `download=1` as an attachment) and the build route the stored text with each line
 * prefixed by its node name.
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { stream, streamSSE } from 'hono/streaming';
import {
  API_ROUTES,
  EndEventData,
  KilnError,
  LogCursorId,
  LogEventData,
  LogOffsetId,
  LOG_TRACE_ON,
  StatusEventData,
  formatCursor,
  formatOffsetId,
  parseCursor,
  sseFieldsOf,
  traceLog,
  type ParsedCursor,
} from '../../shared/index.js';
import { followLogs, type FollowerEvent } from '../logs/log-follow.js';
import type { BuildRecord } from '../state/records.js';
import type { AppEnv, HttpDeps } from './context.js';
import { BuildIdParams, NodeParams, SECURED, countQuery, errors } from './openapi-common.js';
import { credentialCheck } from './access-guard.js';

const Follow = z
  .enum(['true', 'false', '1', '0'])
  .optional()
  .transform((v) => v === 'true' || v === '1')
  .openapi({ type: 'string', enum: ['true', 'false', '1', '0'], description: 'true: stream Server-Sent Events until the node (build) is done' });

const READ_CHUNK = 64 * 1024;

/** The events of a log stream by `event:` name: what each one's JSON `data` is (`x-sse-events`). */
function sseEvents(idDescription: string, id: z.ZodType) {
  const schema = (t: z.ZodType) => {
    const s = z.toJSONSchema(t) as Record<string, unknown>;
    delete s.$schema;
    return s;
  };
  return {
    log: { description: `Text of one node's log (whole UTF-8 characters); \`id:\` ${idDescription}`, schema: schema(LogEventData), id: schema(id) },
    status: { description: 'A node changed state (or started another attempt)', schema: schema(StatusEventData) },
    end: { description: 'The node (or build) is done and every byte was sent; the stream ends', schema: schema(EndEventData) },
  };
}

function logContent(text: string, idDescription: string, id: z.ZodType) {
  return {
    'text/plain': { schema: z.string().openapi({ description: text }) },
    'text/event-stream': {
      schema: z.string().openapi({ description: 'Server-Sent Events (`event: log|status|end`, JSON `data`, see `x-sse-events`); `: keep-alive` comments every 15 s' }),
      'x-sse-events': sseEvents(idDescription, id),
    },
  };
}

const nodeLogs = createRoute({
  method: 'get',
  path: API_ROUTES.nodeLogs.template,
  summary: "A node's log (all attempts); SSE with follow=true",
  security: SECURED,
  request: {
    params: NodeParams,
    query: z.object({
      follow: Follow,
      offset: countQuery('Byte offset to start after (what the last `log` event id said); Last-Event-ID takes precedence'),
      download: z.enum(['1']).optional().openapi({ description: '1: without follow, answer with `Content-Disposition: attachment` (a file `<build>-<node>.log`)' }),
    }),
    headers: z.object({ 'last-event-id': LogOffsetId.optional() }),
  },
  responses: {
    200: { description: 'The stored log (text/plain), or an SSE stream with follow=true', content: logContent('The node log bytes as stored', 'is the byte offset after this text', LogOffsetId) },
    ...errors([[400, 'A bad parameter, or an offset inside a UTF-8 character'], [404, 'No such build or node']]),
  },
});

const buildLogs = createRoute({
  method: 'get',
  path: API_ROUTES.buildLogs.template,
  summary: "Every node's log, multiplexed; SSE with follow=true",
  security: SECURED,
  request: {
    params: BuildIdParams,
    query: z.object({
      follow: Follow,
      cursor: LogCursorId.optional().openapi({ description: 'Where to continue: the last `log` event id (opaque), or `node:offset,...` to start each node at an offset (nodes the build does not have are ignored); Last-Event-ID takes precedence' }),
    }),
    headers: z.object({ 'last-event-id': LogCursorId.optional() }),
  },
  responses: {
    200: { description: 'The stored text with `node | ` prefixes (text/plain), or an SSE stream with follow=true', content: logContent('Every node log, each line prefixed `node | `', 'is the cursor after this text (opaque: hand it back to resume)', LogCursorId) },
    ...errors([[400, 'A bad parameter, or an offset inside a UTF-8 character'], [404, 'No such build']]),
  },
});

type LogFollowerEvent = Extract<FollowerEvent, { type: 'log' }>;

/**
 * The reconnection time an SSE stream asks of browsers (`retry:`, sent first): EventSource
 * would wait about 3 s after a dropped connection; a log or the dashboard resumes after 1 s.
 */
export const SSE_RETRY_MS = 1000;

/** How often a busy log stream checks that its session or key is still good (an idle one: at each keep-alive). */
const RECHECK_MS = 15_000;

/**
 * Writes follower events as SSE, each batch the follower yields in one write (one pass over
 * the nodes that changed: one chunk on the socket, not one per event); `idOf` gives each log
 * event's id (where a reconnect resumes). `stillValid` is asked at every keep-alive and at
 * most every RECHECK_MS while output flows: the stream ends when the request's session or
 * key no longer is (signed out, revoked, expired).
 */
function sse(c: Context, ac: AbortController, stillValid: () => boolean, events: AsyncIterable<FollowerEvent[] | null>, idOf: (e: LogFollowerEvent) => string, onComplete?: (node: string) => void): Response {
  return streamSSE(c, async (s) => {
    s.onAbort(() => ac.abort());
    await s.write(`retry: ${SSE_RETRY_MS}\n\n`);
    let checked = Date.now();
    for await (const batch of events) {
      if (batch === null || Date.now() - checked >= RECHECK_MS) {
        checked = Date.now();
        if (!stillValid()) {
          ac.abort();
          break;
        }
      }
      if (batch === null) {
        await s.write(': keep-alive\n\n');
        continue;
      }
      let text = '';
      for (const e of batch) {
        if (e.type === 'complete') onComplete?.(e.node);
        else text += sseMessage(sseFieldsOf(e, e.type === 'log' ? idOf(e) : undefined));
      }
      if (LOG_TRACE_ON) for (const e of batch) if (e.type === 'log') traceLog('coord-sse', e.text);
      if (text !== '') await s.write(text);
    }
  });
}

/** One SSE message as hono's writeSSE writes it; the data is JSON (one line), the id a cursor or offset. */
function sseMessage(m: { event: string; data: string; id?: string }): string {
  return `event: ${m.event}\ndata: ${m.data}\n${m.id !== undefined ? `id: ${m.id}\n` : ''}\n`;
}

/** Node offsets a parsed cursor stands for (the compact form's complete nodes: their whole log). */
async function cursorOffsets(deps: HttpDeps, build: BuildRecord, cursor: ParsedCursor): Promise<Map<string, number>> {
  if (cursor.kind === 'names') return cursor.offsets;
  const out = new Map<string, number>();
  for (const i of cursor.complete) {
    const node = build.nodes[i];
    if (node) out.set(node.name, (await deps.logs.nodeSizes(build.id, node.name, node.attempts.length)).reduce((a, b) => a + b, 0));
  }
  for (const [i, offset] of cursor.partial) {
    const node = build.nodes[i];
    if (node) out.set(node.name, offset);
  }
  return out;
}

/** Refuses resume offsets that fall inside a UTF-8 character of the stored log (nodes the build does not have are ignored). */
async function checkOffsets(deps: HttpDeps, build: BuildRecord, offsets: ReadonlyMap<string, number>): Promise<void> {
  for (const [name, offset] of offsets) {
    const node = build.nodes.find((n) => n.name === name);
    if (!node) continue;
    const sizes = await deps.logs.nodeSizes(build.id, name, node.attempts.length);
    if (!(await deps.logs.isCharBoundary(build.id, name, sizes, offset))) {
      throw new KilnError('E_INVALID', `offset ${offset} of node '${name}' falls inside a UTF-8 character of its log; resume from an offset a log event gave`);
    }
  }
}

export function registerLogRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps): void {
  app.openapi(nodeLogs, async (c) => {
    const { id, node } = c.req.valid('param');
    const { follow, offset, download } = c.req.valid('query');
    const lastId = c.req.valid('header')['last-event-id'];
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    const rec = build.nodes.find((n) => n.name === node);
    if (!rec) throw new KilnError('E_NOT_FOUND', `build ${id} has no node '${node}'`);
    const start = lastId !== undefined ? Number(lastId) : (offset ?? 0);
    await checkOffsets(deps, build, new Map([[node, start]]));
    if (!follow) {
      // The stored bytes as they are (invalid UTF-8 in a build's output included), read in chunks.
      const sizes = await deps.logs.nodeSizes(id, node, rec.attempts.length);
      const total = sizes.reduce((a, b) => a + b, 0);
      c.header('content-type', 'text/plain; charset=utf-8');
      // build ids and node names have fixed shapes (no quote, slash or control character)
      if (download) c.header('content-disposition', `attachment; filename="${build.id}-${rec.name}.log"`);
      return stream(c, async (s) => {
        for (let at = start; at < total && !s.aborted; at += READ_CHUNK) await s.write(await deps.logs.read(id, node, sizes, at, Math.min(total, at + READ_CHUNK)));
      }) as never;
    }
    const ac = new AbortController();
    const events = followLogs(deps, { buildId: id, node, offsets: new Map([[node, start]]), follow, signal: ac.signal });
    return sse(c, ac, credentialCheck(c, deps), events, (e) => formatOffsetId(e.offset)) as never;
  });

  app.openapi(buildLogs, async (c) => {
    const { id } = c.req.valid('param');
    const { follow, cursor } = c.req.valid('query');
    const lastId = c.req.valid('header')['last-event-id'];
    const build = await deps.engine.getBuild(id);
    if (!build) throw new KilnError('E_NOT_FOUND', `build ${id} not found`);
    const from = lastId !== undefined ? 'Last-Event-ID' : 'cursor';
    const parsed = parseCursor(lastId ?? cursor);
    if (typeof parsed === 'string') throw new KilnError('E_INVALID', `${from} ${parsed} (expected a cursor as a log event id gave it)`);
    const offsets = await cursorOffsets(deps, build, parsed);
    await checkOffsets(deps, build, offsets);
    const ac = new AbortController();
    const events = followLogs(deps, { buildId: id, node: null, offsets: new Map(offsets), follow, signal: ac.signal });
    if (!follow) {
      c.header('content-type', 'text/plain; charset=utf-8');
      const width = Math.max(...build.nodes.map((n) => n.name.length));
      const pending = new Map<string, string>();
      return stream(c, async (s) => {
        s.onAbort(() => ac.abort());
        for await (const batch of events) {
          let out = '';
          for (const e of batch ?? []) {
            if (e.type !== 'log') continue;
            const text = (pending.get(e.node) ?? '') + e.text;
            const lines = text.split('\n');
            pending.set(e.node, lines.pop() ?? '');
            for (const l of lines) out += `${e.node.padEnd(width)} | ${l}\n`;
          }
          if (out !== '') await s.write(out);
        }
        for (const [node, rest] of pending) if (rest) await s.write(`${node.padEnd(width)} | ${rest}\n`);
      }) as never;
    }
    const names = build.nodes.map((n) => n.name);
    const complete = new Set<string>();
    return sse(
      c,
      ac,
      credentialCheck(c, deps),
      events,
      (e) => {
        offsets.set(e.node, e.offset);
        return formatCursor(offsets, { nodes: names, complete });
      },
      (node) => complete.add(node),
    ) as never;
  });
}
