/**
 * An EventSource for node tests (node 20 has none), doing what the browser's does for the
 * dashboard's streams: GET with `Accept: text/event-stream` and the credentials given,
 * dispatches events by name with the last id seen (`lastEventId`, kept across events
 * without an id), and after a dropped connection or the server's close goes CONNECTING,
 * fires `error`, waits `retryMs` and reconnects with `Last-Event-ID`; a non-200 answer or
 * another content type fails it (CLOSED, `error`, no reconnect). `close()` stops it.
 * It counts its connections, so a test can see a reconnect (or that none happened).
 */
import { parseSse } from '../../cli/follow.js';
import type { EventSourceLike, SseMessage } from '../../web/src/logs/log-stream.js';

export class NodeEventSource implements EventSourceLike {
  readyState = 0;
  onopen: (() => unknown) | null = null;
  onerror: (() => unknown) | null = null;
  /** Connections made (each request sent). */
  connections = 0;
  /** The Last-Event-ID each connection sent (null: none). */
  readonly sentIds: Array<string | null> = [];
  private lastEventId = '';
  private readonly listeners = new Map<string, Array<(ev: SseMessage) => void>>();
  private readonly ac = new AbortController();

  constructor(
    readonly url: string,
    private readonly opts: { headers?: Record<string, string>; retryMs?: number } = {},
  ) {
    void this.run();
  }

  addEventListener(type: string, listener: (ev: SseMessage) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.readyState = 2;
    this.ac.abort();
  }

  private async run(): Promise<void> {
    while (this.readyState !== 2) {
      try {
        this.connections++;
        this.sentIds.push(this.lastEventId === '' ? null : this.lastEventId);
        const res = await fetch(this.url, {
          headers: { accept: 'text/event-stream', ...(this.opts.headers ?? {}), ...(this.lastEventId === '' ? {} : { 'last-event-id': this.lastEventId }) },
          signal: this.ac.signal,
        });
        if (res.status !== 200 || !(res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
          await res.body?.cancel();
          this.readyState = 2;
          this.onerror?.();
          return;
        }
        this.readyState = 1;
        this.onopen?.();
        for await (const m of parseSse(res.body!)) {
          if (m.id !== null) this.lastEventId = m.id;
          for (const l of this.listeners.get(m.event) ?? []) l({ data: m.data, lastEventId: this.lastEventId });
          if (this.readyState === 2) return;
        }
      } catch {
        /* a dropped connection: reconnect below */
      }
      if (this.readyState === 2) return;
      this.readyState = 0;
      this.onerror?.();
      await new Promise((r) => setTimeout(r, this.opts.retryMs ?? 200));
    }
  }
}
