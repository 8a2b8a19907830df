/**
 * Following a node's log live: `GET /api/v1/builds/{id}/nodes/{node}/logs?follow=true`
 * with EventSource (events `log`, `status`, `end` of shared/log-events.ts, each validated
 * with its zod schema).
 *
 * Resuming without gaps or duplicates: a `log` event's `id:` is the byte offset after its
 * text (coordinator/http/routes-logs.ts), and the server continues exactly after the
 * offset a client hands back. EventSource reconnects by itself after a dropped connection
 * and sends the last id as `Last-Event-ID`; when it gives up instead (an HTTP error, a
 * proxy's 502: readyState CLOSED), this module opens a new one after a backoff with
 * `?offset=<last id>`. A `log` event whose offset is not past the last one is dropped (a
 * duplicate can then never reach the model, whatever the transport does).
 *
 * Ending: the server sends `end` when the node is done and every byte was sent, then
 * closes. The stream closes its EventSource on `end`, before EventSource's own reconnect
 * could run (that would get `status` + `end` again, forever). `resume()` opens it again
 * from the last offset (a retried node writes more).
 *
 * Dependencies (EventSource, timers) are parameters, so the unit tests drive it with a
 * scripted EventSource.
 */
import { apiPath, withQuery } from '../../../shared/api-paths.js';
import { LogOffsetId, parseLogStreamEvent, type EndEventDataT, type StatusEventDataT } from '../../../shared/log-events.js';

/** connecting: the first connection; live: events flow; reconnecting: the connection dropped, resuming; ended: the node is done (or closed). */
export type LogStreamState = 'connecting' | 'live' | 'reconnecting' | 'ended';

/** What the stream reads of a MessageEvent. */
export interface SseMessage {
  readonly data: string;
  readonly lastEventId: string;
}

/** The part of the browser's EventSource the stream uses. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: (() => unknown) | null;
  onerror: (() => unknown) | null;
  addEventListener(type: string, listener: (ev: SseMessage) => void): void;
  close(): void;
}

/** The browser's EventSource (looked up on globalThis: the unit tests run under node, which has none). */
function browserEventSource(url: string): EventSourceLike {
  const ctor = (globalThis as unknown as { EventSource?: new (url: string) => EventSourceLike }).EventSource;
  if (!ctor) throw new Error('EventSource is not available here');
  return new ctor(url);
}

/** EventSource.CLOSED (the browser gave up; no reconnect of its own). */
const CLOSED = 2;

export interface LogStreamOptions {
  readonly buildId: string;
  readonly node: string;
  /** Text to append to the model, in order, each byte once. */
  readonly onText: (text: string) => void;
  readonly onStatus?: (status: StatusEventDataT) => void;
  readonly onEnd?: (end: EndEventDataT) => void;
  readonly onState?: (state: LogStreamState) => void;
  /** A malformed event (named; it is skipped). */
  readonly onProblem?: (message: string) => void;
  /** Opens an event source. @default `new EventSource(url)` */
  readonly open?: (url: string) => EventSourceLike;
  readonly setTimer?: (fn: () => void, ms: number) => unknown;
  readonly clearTimer?: (handle: unknown) => void;
  /** First and largest delay before reopening a source the browser gave up on. @default 1000, 30000 */
  readonly backoffMs?: readonly [first: number, max: number];
}

export interface LogStream {
  readonly state: LogStreamState;
  /** The byte offset after the last text received (the resume point), or null before any. */
  readonly offset: number | null;
  /** Opens the stream again from `offset` after it ended (a retried node). */
  resume(): void;
  /** Stops for good (the pane goes away). */
  close(): void;
}

/** The follow URL, starting after `offset` bytes (EventSource adds Last-Event-ID itself on its own reconnects). */
export function logFollowUrl(buildId: string, node: string, offset: number | null): string {
  return withQuery(apiPath.nodeLogs(buildId, node), { follow: 'true', offset: offset !== null && offset > 0 ? offset : undefined });
}

/** The raw log as a download (`download=1` asks the coordinator for Content-Disposition: attachment). */
export function logDownloadUrl(buildId: string, node: string): string {
  return withQuery(apiPath.nodeLogs(buildId, node), { download: 1 });
}

export function followNodeLog(options: LogStreamOptions): LogStream {
  const open = options.open ?? browserEventSource;
  const setTimer = options.setTimer ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
  const clearTimer = options.clearTimer ?? ((h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>));
  const [firstDelay, maxDelay] = options.backoffMs ?? [1000, 30_000];

  let source: EventSourceLike | null = null;
  let state: LogStreamState = 'connecting';
  let offset: number | null = null;
  let closed = false;
  let ended = false;
  let delay = firstDelay;
  let timer: unknown = null;

  const setState = (s: LogStreamState) => {
    if (s === state) return;
    state = s;
    options.onState?.(s);
  };

  const onMessage = (name: 'log' | 'status' | 'end') => (ev: SseMessage) => {
    if (closed || ended) return;
    const parsed = parseLogStreamEvent(name, ev.data);
    if (parsed === null) return;
    if (!parsed.ok) {
      options.onProblem?.(parsed.error);
      return;
    }
    const e = parsed.event;
    if (state !== 'live') {
      delay = firstDelay;
      setState('live');
    }
    switch (e.type) {
      case 'log': {
        const id = LogOffsetId.safeParse(ev.lastEventId);
        if (!id.success) {
          options.onProblem?.(`a 'log' event whose id is not a byte offset (${JSON.stringify(ev.lastEventId.slice(0, 40))})`);
          return;
        }
        const at = Number(id.data);
        if (offset !== null && at <= offset) return; // already have these bytes
        offset = at;
        if (e.text !== '') options.onText(e.text);
        return;
      }
      case 'status':
        options.onStatus?.({ node: e.node, state: e.state, attempt: e.attempt });
        return;
      case 'end':
        // close before EventSource reconnects on the server's close (it would get `end` again, forever)
        ended = true;
        source?.close();
        source = null;
        setState('ended');
        options.onEnd?.({ state: e.state });
        return;
    }
  };

  const connect = () => {
    timer = null;
    if (closed || ended) return;
    const es = open(logFollowUrl(options.buildId, options.node, offset));
    source = es;
    es.onopen = () => {
      if (source !== es) return;
      delay = firstDelay;
      setState('live');
    };
    es.onerror = () => {
      if (source !== es || closed || ended) return;
      setState('reconnecting');
      if (es.readyState !== CLOSED) return; // the browser reconnects with Last-Event-ID itself
      es.close();
      source = null;
      timer = setTimer(connect, delay);
      delay = Math.min(maxDelay, delay * 2);
    };
    es.addEventListener('log', onMessage('log'));
    es.addEventListener('status', onMessage('status'));
    es.addEventListener('end', onMessage('end'));
  };

  connect();

  return {
    get state() {
      return state;
    },
    get offset() {
      return offset;
    },
    resume() {
      if (closed || !ended) return;
      ended = false;
      delay = firstDelay;
      setState('connecting');
      connect();
    },
    close() {
      if (closed) return;
      closed = true;
      if (timer !== null) clearTimer(timer);
      source?.close();
      source = null;
      if (!ended) setState('ended');
    },
  };
}
