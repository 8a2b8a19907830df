/**
 * `GET /api/v1/events`: every state change as Server-Sent Events (shared/api-events.ts),
 * from the change feed (coordinator/events/change-feed.ts):
 *   event: build   data: BuildSummary                 id: <epoch>-<seq>
 *   event: node    data: {"build","node": NodeStatus}
 *   event: agent   data: AgentView
 *   event: pools   data: PoolList                     (at most every 2 s, when changed)
 *   event: reset   data: {"reason"}                   refetch what you show
 *   : ping                                            every `pingMs` (15 s)
 * `topics` picks event kinds, `build` one build's `build` and `node` events; a reconnect
 * with `Last-Event-ID` resumes from the feed's ring or starts with `reset`.
 */
import type { IncomingMessage } from 'node:http';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import { API_ROUTES, BUILD_ID_RE, BUILD_ID_RULE, EVENT_TOPICS, EVENTS_STREAM_EVENTS, EventId, KilnError, type EventTopic } from '../../shared/index.js';
import { ChangeFeed, type FeedEventType, type SubscriberFilter } from '../events/change-feed.js';
import { engineSource } from '../events/event-source.js';
import { clockOf, type AppEnv, type HttpDeps } from './context.js';
import { SECURED, errors } from './openapi-common.js';
import { SSE_RETRY_MS } from './routes-logs.js';
import { credentialCheck } from './access-guard.js';

/** How often an idle stream gets a `: ping` comment (proxies and clients see it alive). */
export const EVENTS_PING_MS = 15_000;
/** A subscriber closed for falling behind whose connection has not taken the final `reset` by then is cut off. */
const CLOSE_GRACE_MS = 10_000;
/** The longest Last-Event-ID header taken (ours are at most 31 characters); a longer one is refused (400). */
const MAX_LAST_EVENT_ID = 64;

const TOPIC_TYPE: ReadonlyMap<EventTopic, FeedEventType> = new Map<EventTopic, FeedEventType>([
  ['builds', 'build'],
  ['nodes', 'node'],
  ['agents', 'agent'],
  ['pools', 'pools'],
]);

const TOPIC_ALT = EVENT_TOPICS.join('|');
const TOPICS_RE = new RegExp(`^(?:${TOPIC_ALT})(?:,(?:${TOPIC_ALT}))*$`);

const EventsQuery = z.object({
  topics: z
    .string()
    .max(64)
    .regex(TOPICS_RE, `must be a comma list of ${EVENT_TOPICS.join(', ')}`)
    .optional()
    .openapi({ description: `Comma list of ${EVENT_TOPICS.join(', ')} (default: all of them; with \`build\`: builds,nodes)`, example: 'builds,nodes' }),
  build: z.string().regex(BUILD_ID_RE, `must be ${BUILD_ID_RULE}`).optional().openapi({ description: "Only this build's `build` and `node` events (agents and pools only when `topics` names them)" }),
});

function jsonSchema(t: z.ZodType): Record<string, unknown> {
  const s = z.toJSONSchema(t, { unrepresentable: 'any' }) as Record<string, unknown>;
  delete s.$schema;
  return s;
}

/** The events by `event:` name: what each one's JSON `data` is (`x-sse-events`). */
function sseEvents() {
  const id = jsonSchema(EventId);
  const D = EVENTS_STREAM_EVENTS;
  return {
    build: { description: 'A build was submitted or changed: its list row', schema: jsonSchema(D.build), id },
    node: { description: 'A node changed (state, attempt, agent, cache, ...); apply it to the build fetched once', schema: jsonSchema(D.node), id },
    agent: { description: 'An agent changed (state, control, health, breaker, load, slots)', schema: jsonSchema(D.agent), id },
    pools: { description: 'The pools changed (checked at most every 2 s)', schema: jsonSchema(D.pools), id },
    reset: { description: 'The resume point is gone (too old, another coordinator process) or the client fell behind: refetch what you show. Its id resumes from here', schema: jsonSchema(D.reset), id },
  };
}

const eventsRoute = createRoute({
  method: 'get',
  path: API_ROUTES.events.template,
  summary: 'Every state change (builds, nodes, agents, pools) as Server-Sent Events',
  description:
    'Changes of one build, node or agent within a short window (50 ms) are one event with the latest state. Each event has `id: <epoch>-<seq>`; reconnect with `Last-Event-ID` to get what was missed ' +
    '(from a ring of recent events), or a `reset` event first when that is not possible. A client that does not read fast enough gets `reset` and is disconnected. `: ping` comments every 15 s.',
  security: SECURED,
  request: {
    query: EventsQuery,
    headers: z.object({
      'last-event-id': z.string().max(MAX_LAST_EVENT_ID).optional().openapi({ description: 'The last event id received: resume after it (an id that cannot be resumed gets `reset` first)' }),
    }),
  },
  responses: {
    200: {
      description: 'The stream (it does not end by itself)',
      content: {
        'text/event-stream': {
          schema: z.string().openapi({ description: 'Server-Sent Events (`event: build|node|agent|pools|reset`, JSON `data`, `id: <epoch>-<seq>`; see `x-sse-events`); `: ping` comments every 15 s' }),
          'x-sse-events': sseEvents(),
        },
      },
    },
    ...errors([
      [400, 'A bad `topics` or `build`, or a Last-Event-ID longer than 64 characters'],
      [404, 'No such build'],
      [429, 'This key has the most event streams one key may have open (32)'],
      [503, 'The coordinator serves the most event streams it serves at once (1,000)'],
    ]),
  },
});

/** The event types a request asks for. */
export function filterOf(topics: string | undefined, build: string | undefined): SubscriberFilter {
  const names = topics !== undefined ? (topics.split(',') as EventTopic[]) : build !== undefined ? (['builds', 'nodes'] as const) : EVENT_TOPICS;
  return { types: new Set(names.map((t) => TOPIC_TYPE.get(t)!)), build: build ?? null };
}

/** Open event streams at most, in all and per key (each may hold 4 MiB waiting; every event is offered to each). */
export const MAX_EVENT_STREAMS = 1000;
export const MAX_EVENT_STREAMS_PER_KEY = 32;

export function registerEventRoutes(app: OpenAPIHono<AppEnv>, deps: HttpDeps, limits: { total: number; perKey: number } = { total: MAX_EVENT_STREAMS, perKey: MAX_EVENT_STREAMS_PER_KEY }): void {
  const feed = deps.events?.feed ?? new ChangeFeed(engineSource(deps.engine, deps.agents, clockOf(deps)), { logger: deps.logger });
  const pingMs = deps.events?.pingMs ?? EVENTS_PING_MS;
  /** Open streams by key id (agents: 'agent'), and in all. */
  const open = new Map<string, number>();
  let total = 0;

  app.openapi(eventsRoute, (c) => {
    const { topics, build } = c.req.valid('query');
    const lastId = c.req.valid('header')['last-event-id'];
    if (build !== undefined && !deps.engine.buildSummary(build)) throw new KilnError('E_NOT_FOUND', `build ${build} not found`);
    const filter = filterOf(topics, build);
    const p = c.get('principal');
    const who = p.kind === 'key' ? `key:${p.id}` : 'agent';
    // Checked again at every ping: a stream ends with its session (signed out, expired) or its key (revoked, expired).
    const stillValid = credentialCheck(c, deps);
    if (total >= limits.total) throw new KilnError('E_UNAVAILABLE', `${total} event streams are open, the most this coordinator serves at once: retry later`);
    if ((open.get(who) ?? 0) >= limits.perKey) throw new KilnError('E_RATE_LIMITED', `${limits.perKey} event streams are open with this key, the most one key may have: close one (each page needs one)`);
    total++;
    open.set(who, (open.get(who) ?? 0) + 1);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      total--;
      const n = (open.get(who) ?? 1) - 1;
      if (n <= 0) open.delete(who);
      else open.set(who, n);
    };
    const socket = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket;
    return streamSSE(c, (s) => stream(s).finally(release)) as never;
    async function stream(s: SSEStreamingApi): Promise<void> {
      let finish!: () => void;
      const done = new Promise<void>((resolve) => (finish = resolve));
      let cutOff: ReturnType<typeof setTimeout> | null = null;
      s.onAbort(() => finish());
      // The headers and a first comment go out at once: the client knows the stream is open.
      await s.write(`retry: ${SSE_RETRY_MS}\n: connected\n\n`);
      const sub = feed.subscribe(
        filter,
        {
          write: async (text) => {
            await s.write(text);
          },
          close: () => {
            finish();
            // A client that stopped reading never takes the close: cut the connection.
            cutOff = setTimeout(() => socket?.destroy(), CLOSE_GRACE_MS);
            cutOff.unref();
          },
        },
        lastId,
      );
      const ping = setInterval(() => {
        if (stillValid()) void s.write(': ping\n\n');
        else finish();
      }, pingMs);
      ping.unref();
      try {
        await done;
      } finally {
        clearInterval(ping);
        sub.close();
        await s.close();
        if (cutOff) clearTimeout(cutOff);
      }
    }
  });
}
