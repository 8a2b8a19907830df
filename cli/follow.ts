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
 *
 * With several coordinators (`--coordinator URL1,URL2`) each reconnection goes through the
 * client's list (api-client.ts: the last one that answered, then the next ones), with the
 * same cursor, so the log resumes on another coordinator without a gap or a duplicate; the
 * first request fails at once only when none of them can be reached.
 */
import { Backoff, LogCursorId, MAX_CURSOR_CHARS, apiPath, coerceError, formatCursor, parseLogStreamEvent, parseOffsetId, sleep, withQuery, type FollowEvent } from '../shared/index.js';
import { UnreachableError, type ApiClient } from './api-client.js';
import { CliError, EXIT } from './exit-codes.js';

interface SseMessage {
  event: string;
  data: string;
  id: string | null;
}

/** Splits an SSE byte stream into messages (each chunk scanned once: a chunk of many messages costs no copies of its rest). */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder();
  let buf = '';
  let event = 'message';
  let data: string[] = [];
  let id: string | null = null;
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n', start)) {
      let line = buf.slice(start, nl);
      start = nl + 1;
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
    buf = buf.slice(start);
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

/** An SSE message as a log stream event, validated with the shared schemas (null: not a log stream event, ignored). */
function streamEvent(m: SseMessage): FollowEvent | null {
  const r = parseLogStreamEvent(m.event, m.data);
  if (r === null) return null;
  if (!r.ok) throw new CliError(`the log stream sent ${r.error}`, EXIT.USAGE);
  return r.event;
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
  let streamedFrom: string | null = null;
  for (;;) {
    if (opts.signal?.aborted) return 'interrupted';
    let reason: string;
    try {
      const path = opts.node
        ? withQuery(apiPath.nodeLogs(opts.buildId, opts.node), { follow: opts.follow, offset: nodeOffset })
        : withQuery(apiPath.buildLogs(opts.buildId), { follow: opts.follow, cursor });
      const res = await client.raw(path, { headers: { accept: 'text/event-stream' }, ...(opts.signal ? { signal: opts.signal } : {}) });
      reached = true; // something answered: from now on, failures are interruptions
      if (!res.ok) {
        if (res.status >= 500) throw new Error(`HTTP ${res.status}`);
        throw await client.failure(res);
      }
      if (!res.body) throw new Error('empty response');
      if (client.coordinatorCount > 1 && streamedFrom !== null && streamedFrom !== client.baseUrl) opts.onNote?.(`resumed the log stream on ${client.baseUrl}`);
      streamedFrom = client.baseUrl;
      outageSince = null;
      backoff.reset();
      for await (const m of parseSse(res.body)) {
        const e = streamEvent(m);
        if (e === null) continue;
        if (e.type === 'log' && m.id !== null) {
          if (opts.node) nodeOffset = offsetOfEventId(m.id);
          else cursor = cursorOfEventId(m.id);
        }
        opts.onEvent(e);
        if (e.type === 'end') return e.state;
      }
      if (!opts.follow) return 'unknown';
      reason = 'the stream ended early';
    } catch (err) {
      if (err instanceof CliError && !(err instanceof UnreachableError)) throw err;
      if (opts.signal?.aborted) return 'interrupted';
      if (err instanceof UnreachableError && !reached) throw err;
      reason = coerceError(err).message;
    }
    outageSince ??= Date.now();
    if (Date.now() - outageSince > maxOutage) throw new CliError(`lost the log stream for more than ${Math.round(maxOutage / 1000)}s: ${reason}`, EXIT.USAGE);
    reconnects++;
    opts.onReconnect?.(reconnects, reason);
    await sleep(backoff.next(), opts.signal);
  }
}

/** The build route's event id: the cursor after the event's text (opaque, but it must be one). */
function cursorOfEventId(id: string): string {
  const r = LogCursorId.safeParse(id);
  if (!r.success) throw new CliError(`the log stream sent event id '${id.slice(0, 80)}', not a log cursor (${r.error.issues[0]?.message ?? 'invalid'})`, EXIT.USAGE);
  return r.data;
}

/** The node route's event id: the byte offset after the event's text. */
function offsetOfEventId(id: string): number {
  const offset = parseOffsetId(id);
  if (typeof offset === 'string') throw new CliError(`the log stream sent event id ${offset}`, EXIT.USAGE);
  return offset;
}
