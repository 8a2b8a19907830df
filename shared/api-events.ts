/**
 * The Server-Sent Events of `GET /api/v1/events` (every state change: builds, nodes,
 * agents, pools), as zod schemas both ends use: the coordinator documents them
 * (`x-sse-events`) from these schemas and writes their data in these shapes; clients (the
 * dashboard, scripts) read them with `parseEventsStreamEvent`, which validates each one.
 *
 *   event: build   data: BuildSummary                  a build was submitted or changed (the list row)
 *   event: node    data: {"build","node": NodeStatus}  a node changed (state, attempt, agent, cache, ...)
 *   event: agent   data: AgentView                     an agent changed (state, control, health, load, slots)
 *   event: pools   data: PoolList                      the pools changed (at most every 2 s)
 *   event: reset   data: {"reason"}                    the resume point is gone: refetch what you show
 *
 * Every event has `id: <epoch>-<seq>` (epoch: the coordinator process's start in ms; seq
 * increases by one per event); a reconnect sends the last one as `Last-Event-ID`.
 */
import { z } from 'zod';
import { AgentView, BuildSummary, CacheFiguresView } from './api.js';
import { PoolList } from './api-fleet.js';
import { NODE_STATES } from './states.js';
import { parseSseJson } from './sse-json.js';

const Time = z.string().describe('ISO 8601 timestamp');

/** The topics a client may ask for (`?topics=builds,nodes`): `build`, `node`, `agent` and `pools` events. */
export const EVENT_TOPICS = ['builds', 'nodes', 'agents', 'pools'] as const;
export type EventTopic = (typeof EVENT_TOPICS)[number];

/** A node's state as the build page shows it (the structure, `needs` and the rest, comes from `GET /api/v1/builds/{id}` once). */
export const NodeStatus = z.object({
  name: z.string(),
  state: z.enum(NODE_STATES),
  platform: z.string(),
  /** The agent of its last attempt (null before the first). */
  agent: z.string().nullable(),
  /** How many attempts it has had. */
  attempt: z.number().int().nonnegative(),
  started_at: Time.nullable(),
  finished_at: Time.nullable(),
  duration_ms: z.number().int().nullable(),
  /** Layer cache figures of its last attempt (null: none reported). */
  cache: CacheFiguresView.nullable(),
  /** It succeeded with an earlier build's result (nothing was built). */
  reused: z.boolean(),
  /** Why a ready node is not running yet, else null. */
  waiting: z.string().nullable(),
  exit_code: z.number().int().nullable(),
  error: z.string().nullable(),
});

/** `data` of a `node` event. */
export const NodeEventData = z.object({ build: z.string(), node: NodeStatus });
/** `data` of a `reset` event. */
export const ResetEventData = z.object({ reason: z.string() });

export type NodeStatusT = z.infer<typeof NodeStatus>;
export type NodeEventDataT = z.infer<typeof NodeEventData>;
export type ResetEventDataT = z.infer<typeof ResetEventData>;

/** The `data` schema of each event, by its `event:` name. */
export const EVENTS_STREAM_EVENTS = { build: BuildSummary, node: NodeEventData, agent: AgentView, pools: PoolList, reset: ResetEventData } as const;
export type EventsStreamEventName = keyof typeof EVENTS_STREAM_EVENTS;

/** One event of the stream as a client sees it: its name as `type`, its id, and its validated data. */
export type EventsStreamEvent = { [K in EventsStreamEventName]: { type: K; id: string | null; data: z.infer<(typeof EVENTS_STREAM_EVENTS)[K]> } }[EventsStreamEventName];

/** `id:` of an event: `<epoch>-<seq>`. */
export const EVENT_ID_RE = /^([0-9]{1,15})-([0-9]{1,15})$/;
export const EventId = z.string().max(32).regex(EVENT_ID_RE, 'must be an event id <epoch>-<seq> as an event gave it');

/** The epoch and sequence number of an event id, or null when it is not one. */
export function parseEventId(id: string): { epoch: number; seq: number } | null {
  if (id.length > 32) return null;
  const m = EVENT_ID_RE.exec(id);
  return m ? { epoch: Number(m[1]), seq: Number(m[2]) } : null;
}

function isEventName(name: string): name is EventsStreamEventName {
  return Object.hasOwn(EVENTS_STREAM_EVENTS, name);
}

/**
 * Reads one SSE message of the events stream: the event, an error saying what is
 * malformed (data not JSON, or not the event's shape), or null for an event name the
 * stream does not have (ignored, as SSE clients do).
 */
export function parseEventsStreamEvent(event: string, data: string, id: string | null = null): { ok: true; event: EventsStreamEvent } | { ok: false; error: string } | null {
  if (!isEventName(event)) return null;
  const r = parseSseJson(EVENTS_STREAM_EVENTS[event], event, data);
  if (!r.ok) return r;
  return { ok: true, event: { type: event, id, data: r.data } as EventsStreamEvent };
}
