/**
 * A scripted EventSource for unit tests of the dashboard's streams: it behaves as the
 * browser's does where they depend on it (lastEventId kept across events without an id;
 * CONNECTING while it reconnects itself, CLOSED when it gives up; nothing dispatched after
 * close()), and the test drives it: open(), emit(), drop().
 */
import type { EventSourceLike, SseMessage } from '../../web/src/logs/log-stream.js';

export class ScriptedSource implements EventSourceLike {
  readyState = 0;
  onopen: (() => unknown) | null = null;
  onerror: (() => unknown) | null = null;
  closed = false;
  private lastId = '';
  private readonly listeners = new Map<string, Array<(ev: SseMessage) => void>>();

  constructor(readonly url: string) {}

  addEventListener(type: string, listener: (ev: SseMessage) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.closed = true;
    this.readyState = 2;
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.();
  }

  emit(type: string, data: unknown, id?: string): void {
    if (this.closed) return;
    if (id !== undefined) this.lastId = id;
    for (const l of this.listeners.get(type) ?? []) l({ data: typeof data === 'string' ? data : JSON.stringify(data), lastEventId: this.lastId });
  }

  /** The connection dropped; the browser reconnects itself (CONNECTING) or gives up (CLOSED). */
  drop(giveUp: boolean): void {
    this.readyState = giveUp ? 2 : 0;
    this.onerror?.();
  }
}
