/**
 * The fleet pages' live feed: `GET /api/v1/events?topics=agents,pools` (the dashboard
 * contract's events stream): `agent` (an AgentView), `pools` (a PoolList) and `reset` (the
 * resume point is gone: refetch). Each message is validated with the API's zod schemas
 * (shared/api.ts AgentView, shared/api-fleet.ts PoolList) before the page sees it.
 *
 * EventSource resumes by itself after a dropped connection (Last-Event-ID; the server
 * answers `reset` when it cannot resume). When the browser gives up (readyState CLOSED), a
 * new source is opened after a backoff, and since a new source has no resume point the
 * page is told to refetch (`onReset('reopened')`).
 */
import { z } from 'zod';
import { apiPath, withQuery } from '../../../shared/api-paths.js';
import { PoolList } from '../../../shared/api-fleet.js';
import { AgentView, type AgentViewT } from '../../../shared/api.js';
import type { EventSourceLike } from '../logs/log-stream.js';

/** The events stream's path. */
export const EVENTS_PATH = apiPath.events();

export type PoolListT = z.infer<typeof PoolList>;

export type FleetEvent = { type: 'agent'; agent: AgentViewT } | { type: 'pools'; pools: PoolListT } | { type: 'reset'; reason: string };

const ResetData = z.object({ reason: z.string() });
const SCHEMAS = new Map<string, z.ZodType>([
  ['agent', AgentView],
  ['pools', PoolList],
  ['reset', ResetData],
]);

/** One message of the stream: the event, an error naming what is malformed, or null for an event the fleet pages do not use. */
export function parseFleetEvent(name: string, data: string): { ok: true; event: FleetEvent } | { ok: false; error: string } | null {
  const schema = SCHEMAS.get(name);
  if (!schema) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return { ok: false, error: `an '${name}' event whose data is not JSON` };
  }
  const r = schema.safeParse(raw);
  if (!r.success) return { ok: false, error: `a malformed '${name}' event (${r.error.issues[0]?.path.join('.') ?? ''}: ${r.error.issues[0]?.message ?? 'invalid'})` };
  if (name === 'agent') return { ok: true, event: { type: 'agent', agent: r.data as AgentViewT } };
  if (name === 'pools') return { ok: true, event: { type: 'pools', pools: r.data as PoolListT } };
  return { ok: true, event: { type: 'reset', reason: (r.data as z.infer<typeof ResetData>).reason } };
}

export type FleetFeedState = 'connecting' | 'live' | 'reconnecting';

export interface FleetFeedOptions {
  readonly onAgent: (a: AgentViewT) => void;
  readonly onPools: (p: PoolListT) => void;
  /** Refetch what the page shows. */
  readonly onReset: (reason: string) => void;
  readonly onState?: (s: FleetFeedState) => void;
  readonly onProblem?: (message: string) => void;
  readonly open?: (url: string) => EventSourceLike;
  readonly setTimer?: (fn: () => void, ms: number) => unknown;
  readonly clearTimer?: (handle: unknown) => void;
}

const CLOSED = 2;
const BACKOFF_MS = [1000, 2000, 5000, 10_000, 30_000];

function browserEventSource(url: string): EventSourceLike {
  const ctor = (globalThis as unknown as { EventSource?: new (url: string) => EventSourceLike }).EventSource;
  if (!ctor) throw new Error('EventSource is not available here');
  return new ctor(url);
}

/** Subscribes to agents and pools; returns the function that stops it. */
export function subscribeFleet(o: FleetFeedOptions): () => void {
  const open = o.open ?? browserEventSource;
  const setTimer = o.setTimer ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
  const clearTimer = o.clearTimer ?? ((h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>));
  const url = withQuery(EVENTS_PATH, { topics: 'agents,pools' });
  let source: EventSourceLike | null = null;
  let timer: unknown = null;
  let failures = 0;
  let reopened = false;
  let stopped = false;

  const connect = () => {
    timer = null;
    if (stopped) return;
    const es = open(url);
    source = es;
    es.onopen = () => {
      if (source !== es) return;
      failures = 0;
      o.onState?.('live');
      if (reopened) o.onReset('reopened');
    };
    es.onerror = () => {
      if (source !== es || stopped) return;
      o.onState?.('reconnecting');
      if (es.readyState !== CLOSED) return;
      es.close();
      source = null;
      reopened = true;
      timer = setTimer(connect, BACKOFF_MS[Math.min(failures++, BACKOFF_MS.length - 1)]!);
    };
    for (const name of SCHEMAS.keys()) {
      es.addEventListener(name, (ev) => {
        if (source !== es || stopped) return;
        const r = parseFleetEvent(name, ev.data);
        if (r === null) return;
        if (!r.ok) {
          o.onProblem?.(r.error);
          return;
        }
        const e = r.event;
        if (e.type === 'agent') o.onAgent(e.agent);
        else if (e.type === 'pools') o.onPools(e.pools);
        else o.onReset(e.reason);
      });
    }
  };
  o.onState?.('connecting');
  connect();
  return () => {
    stopped = true;
    if (timer !== null) clearTimer(timer);
    source?.close();
    source = null;
  };
}
