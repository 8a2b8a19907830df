/**
 * The events stream (`GET /api/v1/events`, Server-Sent Events) as a React hook. EventSource
 * resumes by itself after a dropped connection (it sends Last-Event-ID); when the server
 * says `reset` (the resume point is gone) or the stream had to be opened anew, `onReset`
 * runs so the page refetches what it shows. Handlers are read through a ref: changing them
 * never reopens the stream.
 */
import { useEffect, useRef, useState } from 'react';
import { apiPath, withQuery } from '../../../shared/api-paths.js';
import type { AgentViewT, BuildRow, NodeEventData } from './types';

export interface EventHandlers {
  onBuild?: (b: BuildRow) => void;
  onNode?: (d: NodeEventData) => void;
  onAgent?: (a: AgentViewT) => void;
  onPools?: (p: unknown) => void;
  /** The stream lost its place: refetch. */
  onReset?: (reason: string) => void;
}

export type StreamState = 'connecting' | 'live' | 'retrying';

/** How long to wait before opening a closed stream again (doubling, capped). */
const RETRY_MS = [1000, 2000, 5000, 10_000, 30_000];

/** Opens `/api/v1/events` with these topics (and build) while mounted; null: do not open. */
export function useEvents(query: { topics: readonly string[]; build?: string } | null, handlers: EventHandlers): StreamState {
  const ref = useRef(handlers);
  ref.current = handlers;
  const [state, setState] = useState<StreamState>('connecting');
  const key = query ? `${query.topics.join(',')}|${query.build ?? ''}` : null;

  useEffect(() => {
    if (key === null) return;
    const [topics, build] = key.split('|') as [string, string];
    const url = withQuery(apiPath.events(), { topics, build: build || undefined });
    let es: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let failures = 0;
    let opened = false;
    let stopped = false;
    const parse = <T,>(e: Event): T | null => {
      try {
        return JSON.parse((e as MessageEvent<string>).data) as T;
      } catch {
        return null;
      }
    };
    const open = () => {
      es = new EventSource(url, { withCredentials: true });
      // true until this EventSource's first open: its own reconnects resume with Last-Event-ID
      // (the server answers `reset` when it cannot), only a new one has nothing to resume from
      let fresh = true;
      es.onopen = () => {
        setState('live');
        failures = 0;
        if (fresh && opened) ref.current.onReset?.('reopened');
        fresh = false;
        opened = true;
      };
      es.onerror = () => {
        if (!es || es.readyState !== EventSource.CLOSED) {
          setState('retrying');
          return;
        }
        // closed for good (an HTTP error such as 401 or 503): open a new one later
        es = null;
        setState('retrying');
        const wait = RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)]!;
        if (!stopped) timer = setTimeout(open, wait);
      };
      es.addEventListener('build', (e) => {
        const d = parse<BuildRow>(e);
        if (d) ref.current.onBuild?.(d);
      });
      es.addEventListener('node', (e) => {
        const d = parse<NodeEventData>(e);
        if (d) ref.current.onNode?.(d);
      });
      es.addEventListener('agent', (e) => {
        const d = parse<AgentViewT>(e);
        if (d) ref.current.onAgent?.(d);
      });
      es.addEventListener('pools', (e) => {
        const d = parse<unknown>(e);
        if (d) ref.current.onPools?.(d);
      });
      es.addEventListener('reset', (e) => {
        const d = parse<{ reason?: string }>(e);
        ref.current.onReset?.(d?.reason ?? 'reset');
      });
    };
    open();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      es?.close();
    };
  }, [key]);
  return state;
}
