/**
 * `<AgentsPage scopes />`: every agent and the pools, live. Loads `GET /api/v1/agents`
 * (every page) and `GET /api/v1/pools`, then applies the events stream's `agent` and
 * `pools` events (fleet-events.ts); a `reset` (or a stream opened anew) refetches both.
 * Each heartbeat an agent reports is kept for a short history (fleet-history.ts) drawn
 * as sparklines. Ages count on every second. Pause / drain / resume are offered only with
 * the admin scope (the routes need it: coordinator/access/route-scopes.ts).
 */
import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { AGENT_CONTROL_ROUTES, apiPath, withQuery, type AgentControlAction } from '../../../shared/api-paths.js';
import type { AgentViewT } from '../../../shared/api.js';
import { apiGet, apiSend } from '../api/client.js';
import { AgentRow } from './agent-row.js';
import { subscribeFleet, type FleetFeedState, type PoolListT } from './fleet-events.js';
import { allows, type UiScope } from './fleet-format.js';
import { FleetHistory } from './fleet-history.js';
import { useNow } from './fleet-widgets.js';
import { PoolsPanel } from './pools-panel.js';
import './fleet.css';

/** Pages of agents fetched at most (500 each): 10,000 agents. */
const MAX_AGENT_PAGES = 20;

/** Every agent, following `next_cursor`. */
export async function fetchAllAgents(signal?: AbortSignal): Promise<AgentViewT[]> {
  const out: AgentViewT[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < MAX_AGENT_PAGES; page++) {
    const res: { items: AgentViewT[]; next_cursor: string | null } = await apiGet(withQuery(apiPath.agents(), { limit: 500, cursor }), signal);
    out.push(...res.items);
    cursor = res.next_cursor;
    if (cursor === null) break;
  }
  return out;
}

const FEED_LABEL: Record<FleetFeedState, string> = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' };

export function AgentsPage({ scopes }: { readonly scopes: ReadonlySet<UiScope> }): ReactNode {
  const history = useRef(new FleetHistory()).current;
  /** When each agent's last event arrived: a fetch that started before it does not overwrite it. */
  const eventAt = useRef(new Map<string, number>()).current;
  const [agents, setAgents] = useState<ReadonlyMap<string, AgentViewT> | null>(null);
  const [pools, setPools] = useState<PoolListT | null>(null);
  const [poolsAt, setPoolsAt] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const [feed, setFeed] = useState<FleetFeedState>('connecting');
  const now = useNow(1000);
  const canControl = allows(scopes, 'admin');

  const load = useCallback(
    async (signal: AbortSignal) => {
      const started = Date.now();
      try {
        const [list, p] = await Promise.all([fetchAllAgents(signal), apiGet<PoolListT>(apiPath.pools(), signal)]);
        for (const a of list) history.record(a);
        history.keepOnly(new Set(list.map((a) => a.name)));
        setAgents((prev) => {
          const next = new Map(list.map((a) => [a.name, a]));
          for (const [name, a] of prev ?? []) if ((eventAt.get(name) ?? 0) >= started) next.set(name, a);
          return next;
        });
        setPools(p);
        setPoolsAt(Date.now());
        setError(null);
      } catch (err) {
        if (signal.aborted) return;
        setError(`Could not load the agents: ${err instanceof Error ? err.message : String(err)}`);
      }
    },
    [history, eventAt],
  );

  useEffect(() => {
    const ac = new AbortController();
    void load(ac.signal);
    const stop = subscribeFleet({
      onAgent: (a) => {
        eventAt.set(a.name, Date.now());
        history.record(a);
        setAgents((prev) => new Map(prev ?? []).set(a.name, a));
      },
      onPools: (p) => {
        setPools(p);
        setPoolsAt(Date.now());
      },
      onReset: () => void load(ac.signal),
      onState: setFeed,
      onProblem: (m) => setError(`The live feed sent ${m}`),
    });
    return () => {
      ac.abort();
      stop();
    };
  }, [load, history, eventAt]);

  const onControl = useCallback(
    async (name: string, action: AgentControlAction, reason: string | null) => {
      const a = await apiSend<AgentViewT>('POST', AGENT_CONTROL_ROUTES[action].path(name), reason === null ? undefined : { reason });
      setAgents((prev) => new Map(prev ?? []).set(a.name, a));
    },
    [],
  );

  const sorted = useMemo(() => (agents === null ? [] : [...agents.values()].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))), [agents]);
  const counts = useMemo(() => {
    const c = { connected: 0, paused: 0, draining: 0, unhealthy: 0 };
    for (const a of sorted) {
      if (a.state === 'connected') c.connected++;
      if (a.control === 'paused') c.paused++;
      if (a.control === 'draining') c.draining++;
      if (!a.health.accepting || a.breaker.state === 'open') c.unhealthy++;
    }
    return c;
  }, [sorted]);

  return (
    <main className="fleet-page agents-page" data-feed={feed}>
      <header className="fleet-header">
        <h1>Agents</h1>
        <span className={`feed-state feed-${feed}`} role="status">
          {FEED_LABEL[feed]}
        </span>
        {agents !== null && (
          <span className="fleet-counts">
            {sorted.length} agents · {counts.connected} connected · {counts.paused} paused · {counts.draining} draining · {counts.unhealthy} unhealthy
          </span>
        )}
      </header>
      {error && (
        <p className="fleet-error" role="alert">
          {error}
        </p>
      )}
      <section aria-labelledby="agents-heading">
        <h2 id="agents-heading" className="visually-hidden">
          Agent list
        </h2>
        {agents === null ? (
          <p className="muted">Loading agents…</p>
        ) : sorted.length === 0 ? (
          <p className="muted">No agent has connected yet.</p>
        ) : (
          <div className="table-scroll">
            <table className="fleet-table agents-table">
              <thead>
                <tr>
                  <th scope="col">Agent</th>
                  <th scope="col">State, last seen</th>
                  <th scope="col">Control</th>
                  <th scope="col">Health</th>
                  <th scope="col">Breaker</th>
                  <th scope="col" className="num">Jobs / slots</th>
                  <th scope="col" className="num">Load</th>
                  <th scope="col" className="num">Memory</th>
                  <th scope="col" className="num">Free disk</th>
                  <th scope="col" title="per GPU: memory used / total, utilisation; sparklines of utilisation (blue) and memory (purple) over the last heartbeats">GPUs</th>
                  {canControl && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {sorted.map((a) => (
                  <AgentRow key={a.name} agent={a} history={history} samples={history.samples(a.name).length} now={now} canControl={canControl} onControl={onControl} />
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <section aria-labelledby="pools-heading" className="pools-section">
        <h2 id="pools-heading">Pools</h2>
        <PoolsPanel pools={pools} receivedAt={poolsAt} now={now} />
      </section>
    </main>
  );
}
