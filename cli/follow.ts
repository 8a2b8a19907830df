/**
 * Following a build's (or one node's) log over Server-Sent Events, through dropped
 * connections and coordinator restarts.
 *
 * Node 20 has no EventSource, so this parses the `fetch` body itself. The position
 * reached is the last event id (a byte offset for one node; for a build, the opaque cursor
 * the coordinator wrote, handed back as it is); after any interruption
 * the stream is reopened from exactly there, with capped exponential backoff, so the
 * output has no gap and no duplicate. It gives up only after the coordinator has been
 * unreachable for `maxOutageMs`. Resuming is for interruptions: a coordinator that cannot
 * be reached on the very first request (and was not reached before by the same command,
 * see `reached`) ends the follow at once with the client's "cannot reach" error (exit 2).
 */
import type { z } from 'zod';
import { Backoff, EndEventData, LogEventData, MAX_CURSOR_CHARS, StatusEventData, formatCursor, sleep } from '../shared/index.js';
import { UnreachableError, type ApiClient } from './api-client.js';
import { CliError, EXIT } from './exit-codes.js';

export type FollowEvent =
  | { type: 'log'; node: string; text: string }
  | { type: 'status'; node: string; state: string; attempt: number }
  | { type: 'end'; state: string };

interface SseMessage {
  event: string;
  data: string;
  id: string | null;
}

/** Splits an SSE byte stream into messages. */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder();
  let buf = '';
  let event = 'message';
  let data: string[] = [];
  let id: string | null = null;
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length > 0 || event !== 'message') yield { event, data: data.join('\n'), id };
        event = 'message';
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
    }
  }
}

export interface FollowOptions {
  buildId: string;
  /** Follow one node (its own route) instead of the whole build. */
  node?: string;
  follow: boolean;
  /** Node log offsets to start at (default: the beginning of every node's log). */
  from?: ReadonlyMap<string, number>;
  onEvent: (e: FollowEvent) => void;
  maxOutageMs?: number;
  signal?: AbortSignal;
  /** Called with a note for the user (stderr). */
  onNote?: (note: string) => void;
  /** Called when the stream is being resumed after an interruption. */
  onReconnect?: (attempt: number, reason: string) => void;
  /**
   * The coordinator already answered this command (e.g. `submit` created the build), so
   * failing to connect is an interruption to ride out. Default false: if the first request
   * gets no HTTP response at all, its UnreachableError is thrown at once; once anything
   * answered (even a 5xx), later failures are resumed with backoff.
   */
  reached?: boolean;
}

/** An SSE event's `data`, validated with the shared schema (a protocol error names the event). */
function eventData<T extends z.ZodType>(schema: T, m: { event: string; data: string }): z.infer<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(m.data);
  } catch {
    throw new CliError(`the log stream sent a '${m.event}' event whose data is not JSON`, EXIT.USAGE);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new CliError(`the log stream sent a malformed '${m.event}' event (${r.error.issues[0]?.message ?? 'invalid'})`, EXIT.USAGE);
  return r.data;
}

/** Streams events until the `end` event; returns the final state. */
export async function followBuildLogs(client: ApiClient, opts: FollowOptions): Promise<string> {
  // Node route: the byte offset received. Build route: the last event id, handed back as it is.
  let nodeOffset = opts.node ? (opts.from?.get(opts.node) ?? 0) : 0;
  let cursor = opts.node ? '' : formatCursor(opts.from ?? new Map());
  if (cursor.length > MAX_CURSOR_CHARS) {
    // Too many nodes to say where each one starts: show the logs from the beginning.
    cursor = '';
    opts.onNote?.('too many nodes to start each log where it was; showing the logs from the beginning');
  }
  const backoff = new Backoff({ baseMs: 250, capMs: 5000 });
  const maxOutage = opts.maxOutageMs ?? 10 * 60_000;
  let outageSince: number | null = null;
  let reconnects = 0;
  let reached = opts.reached ?? false;
  for (;;) {
    if (opts.signal?.aborted) return 'interrupted';
    let reason: string;
    try {
      const path = opts.node
        ? `/api/v1/builds/${encodeURIComponent(opts.buildId)}/nodes/${encodeURIComponent(opts.node)}/logs?follow=${opts.follow}&offset=${nodeOffset}`
        : `/api/v1/builds/${encodeURIComponent(opts.buildId)}/logs?follow=${opts.follow}&cursor=${encodeURIComponent(cursor)}`;
      const res = await client.raw(path, { headers: { accept: 'text/event-stream' }, ...(opts.signal ? { signal: opts.signal } : {}) });
      reached = true; // something answered: from now on, failures are interruptions
      if (!res.ok) {
        if (res.status >= 500) throw new Error(`HTTP ${res.status}`);
        throw await client.failure(res);
      }
      if (!res.body) throw new Error('empty response');
      outageSince = null;
      backoff.reset();
      for await (const m of parseSse(res.body)) {
        if (m.event === 'log') {
          const d = eventData(LogEventData, m);
          if (m.id !== null) {
            if (opts.node) nodeOffset = offsetOfEventId(m.id);
            else cursor = m.id;
          }
          opts.onEvent({ type: 'log', node: d.node, text: d.text });
        } else if (m.event === 'status') {
          const d = eventData(StatusEventData, m);
          opts.onEvent({ type: 'status', node: d.node, state: d.state, attempt: d.attempt });
        } else if (m.event === 'end') {
          const d = eventData(EndEventData, m);
          opts.onEvent({ type: 'end', state: d.state });
          return d.state;
        }
      }
      if (!opts.follow) return 'unknown';
      reason = 'the stream ended early';
    } catch (err) {
      if (err instanceof CliError && !(err instanceof UnreachableError)) throw err;
      if (opts.signal?.aborted) return 'interrupted';
      if (err instanceof UnreachableError && !reached) throw err;
      reason = (err as Error).message;
    }
    outageSince ??= Date.now();
    if (Date.now() - outageSince > maxOutage) throw new CliError(`lost the log stream for more than ${Math.round(maxOutage / 1000)}s: ${reason}`, EXIT.USAGE);
    reconnects++;
    opts.onReconnect?.(reconnects, reason);
    await sleep(backoff.next(), opts.signal);
  }
}

/** The node route's event id: the byte offset after the event's text. */
function offsetOfEventId(id: string): number {
  const n = Number(id);
  if (!/^(0|[1-9][0-9]*)$/.test(id) || !Number.isSafeInteger(n)) throw new CliError(`the log stream sent event id '${id.slice(0, 80)}', not a byte offset`, EXIT.USAGE);
  return n;
}
