/**
 * The Server-Sent Events of the log streams (`GET /api/v1/builds/{id}/logs?follow=true`
 * and the node route), as zod schemas both ends use: the coordinator writes them with
 * `sseFieldsOf` and documents them (`x-sse-events`) from these schemas; the CLI reads them
 * with `parseLogStreamEvent`, which validates each one.
 *
 *   event: log     data: {"node","text"}            id: the resume point after this text
 *   event: status  data: {"node","state","attempt"}  a node changed state (or started another attempt)
 *   event: end     data: {"state"}                   the node (build) is done, every byte sent
 *
 * The `id:` of a `log` event is a byte offset on a node's stream and the opaque cursor on a
 * build's (shared/log-cursor.ts); `LogOffsetId` and `LogCursorId` are their schemas.
 */
import { z } from 'zod';
import { CURSOR_RE, MAX_CURSOR_CHARS, OFFSET_ID_RE } from './log-cursor.js';
import { BUILD_STATES, NODE_STATES } from './states.js';
import { parseSseJson } from './sse-json.js';

/** `data` of a `log` event: text of one node's log (whole UTF-8 characters). */
export const LogEventData = z.object({ node: z.string(), text: z.string() });
/** `data` of a `status` event: a node's state and how many attempts it has had. */
export const StatusEventData = z.object({ node: z.string(), state: z.enum(NODE_STATES), attempt: z.number().int().nonnegative() });
/** `data` of the final `end` event: the node's (node stream) or build's (build stream) state. */
export const EndEventData = z.object({ state: z.union([z.enum(NODE_STATES), z.enum(BUILD_STATES)]) });

export type LogEventDataT = z.infer<typeof LogEventData>;
export type StatusEventDataT = z.infer<typeof StatusEventData>;
export type EndEventDataT = z.infer<typeof EndEventData>;

/** The `data` schema of each event, by its `event:` name. */
export const LOG_STREAM_EVENTS = { log: LogEventData, status: StatusEventData, end: EndEventData } as const;
export type LogStreamEventName = keyof typeof LOG_STREAM_EVENTS;

/**
 * One event of a log stream as both ends see it: its `event:` name as `type`, and its
 * data (`{"type":"log","node","text"}`; the CLI's `--json` prints these).
 */
export type FollowEvent = { [K in LogStreamEventName]: { type: K } & z.infer<(typeof LOG_STREAM_EVENTS)[K]> }[LogStreamEventName];

/** `id:` of a node stream's `log` event: the byte offset after its text. */
export const LogOffsetId = z.string().regex(OFFSET_ID_RE, 'must be a byte offset (a non-negative integer)');
/** `id:` of a build stream's `log` event: the cursor after its text (opaque: hand it back to resume). */
export const LogCursorId = z.string().max(MAX_CURSOR_CHARS).regex(CURSOR_RE, 'must be a log cursor node:offset,... as a log event id gave it');

/** The SSE fields of an event: its name, its JSON data (keys in the schema's order) and, for `log`, its id. */
export function sseFieldsOf(e: FollowEvent, id?: string): { event: LogStreamEventName; data: string; id?: string } {
  switch (e.type) {
    case 'log':
      return { event: 'log', data: JSON.stringify({ node: e.node, text: e.text } satisfies LogEventDataT), ...(id !== undefined ? { id } : {}) };
    case 'status':
      return { event: 'status', data: JSON.stringify({ node: e.node, state: e.state, attempt: e.attempt } satisfies StatusEventDataT) };
    case 'end':
      return { event: 'end', data: JSON.stringify({ state: e.state } satisfies EndEventDataT) };
  }
}

function isEventName(name: string): name is LogStreamEventName {
  return Object.hasOwn(LOG_STREAM_EVENTS, name);
}

/**
 * Reads one SSE message of a log stream: the event, an error saying what is malformed
 * (data not JSON, or not the event's shape), or null for an event name that is not a log
 * stream's (ignored, as SSE clients do).
 */
export function parseLogStreamEvent(event: string, data: string): { ok: true; event: FollowEvent } | { ok: false; error: string } | null {
  if (!isEventName(event)) return null;
  const r = parseSseJson(LOG_STREAM_EVENTS[event], event, data);
  if (!r.ok) return r;
  return { ok: true, event: { type: event, ...r.data } as FollowEvent };
}
