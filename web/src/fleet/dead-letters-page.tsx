/**
 * `<DeadLettersPage scopes onNavigate? />`: nodes whose attempts were exhausted
 * (`GET /api/v1/dead-letter`), each with its build (a link to `/builds/<id>`; the shell
 * routes it when it passes `onNavigate`), node, platform, when, why, and its attempts.
 * "Retry" (`POST /api/v1/builds/{id}/nodes/{node}/retry`) needs the cancel scope
 * (coordinator/access/route-scopes.ts; admin implies it) and is not shown without it.
 */
import { useCallback, useEffect, useState, type ReactNode } from 'react';
import type { DeadLetterViewT } from '../../../shared/api-fleet.js';
import { apiPath } from '../../../shared/api-paths.js';
import { apiGet, apiSend } from '../api/client.js';
import { ageOf, allows, formatAge, type UiScope } from './fleet-format.js';
import { AppLink, useNow } from './fleet-widgets.js';
import './fleet.css';

export interface DeadLettersPageProps {
  readonly scopes: ReadonlySet<UiScope>;
  /** Routes a link in the app (history navigation); without it links load the page. */
  readonly onNavigate?: (href: string) => void;
}

/** Per row: a retry under way, done, or failed with a message. */
type RetryState = { kind: 'busy' } | { kind: 'done' } | { kind: 'error'; message: string };

const keyOf = (d: DeadLetterViewT) => `${d.build_id}\u0000${d.node}`;

export function DeadLettersPage({ scopes, onNavigate }: DeadLettersPageProps): ReactNode {
  const [items, setItems] = useState<DeadLetterViewT[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [retries, setRetries] = useState<ReadonlyMap<string, RetryState>>(new Map());
  const [loading, setLoading] = useState(false);
  const now = useNow(5000);
  const canRetry = allows(scopes, 'cancel');

  const load = useCallback(async (signal?: AbortSignal) => {
    setLoading(true);
    try {
      const res = await apiGet<{ items: DeadLetterViewT[] }>(apiPath.deadLetter(), signal);
      setItems(res.items);
      setError(null);
    } catch (err) {
      if (signal?.aborted) return;
      setError(`Could not load the dead letters: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      setLoading(false);
    }
  }, []);

  useEffect(() => {
    const ac = new AbortController();
    void load(ac.signal);
    return () => ac.abort();
  }, [load]);

  const retry = async (d: DeadLetterViewT) => {
    const key = keyOf(d);
    setRetries((m) => new Map(m).set(key, { kind: 'busy' }));
    try {
      await apiSend('POST', apiPath.nodeRetry(d.build_id, d.node));
      setRetries((m) => new Map(m).set(key, { kind: 'done' }));
      await load();
    } catch (err) {
      setRetries((m) => new Map(m).set(key, { kind: 'error', message: err instanceof Error ? err.message : String(err) }));
    }
  };

  return (
    <main className="fleet-page dead-letters-page">
      <header className="fleet-header">
        <h1>Dead letters</h1>
        {items !== null && <span className="fleet-counts">{items.length === 1 ? '1 node' : `${items.length} nodes`}</span>}
        <button type="button" onClick={() => void load()} disabled={loading}>
          Refresh
        </button>
      </header>
      {error && (
        <p className="fleet-error" role="alert">
          {error}
        </p>
      )}
      {items === null ? (
        <p className="muted">Loading…</p>
      ) : items.length === 0 ? (
        <p className="muted">No dead letters: every failed node still has attempts left, or was retried.</p>
      ) : (
        <div className="table-scroll">
          <table className="fleet-table dead-letters-table">
            <thead>
              <tr>
                <th scope="col">Build</th>
                <th scope="col">Node</th>
                <th scope="col">Platform</th>
                <th scope="col" className="num">When</th>
                <th scope="col">Reason</th>
                <th scope="col">Attempts</th>
                {canRetry && <th scope="col">Action</th>}
              </tr>
            </thead>
            <tbody>
              {items.map((d) => {
                const r = retries.get(keyOf(d));
                const age = ageOf(d.at, now);
                return (
                  <tr key={keyOf(d)} data-build={d.build_id} data-node={d.node}>
                    <td>
                      <AppLink href={`/builds/${encodeURIComponent(d.build_id)}`} onNavigate={onNavigate}>
                        {d.build_name}
                      </AppLink>
                      <span className="muted mono"> {d.build_id}</span>
                    </td>
                    <th scope="row" className="mono">
                      {d.node}
                    </th>
                    <td>{d.platform}</td>
                    <td className="num" title={d.at}>
                      {age === null ? '—' : `${formatAge(age)} ago`}
                    </td>
                    <td className="dl-reason">{d.reason}</td>
                    <td>
                      <ul className="attempt-list">
                        {d.attempts.map((a) => (
                          <li key={a.id} title={a.error ?? a.reason ?? undefined}>
                            attempt {a.number} {a.state} on {a.agent}
                            {a.error ? `: ${a.error}` : a.reason ? `: ${a.reason}` : ''}
                          </li>
                        ))}
                      </ul>
                    </td>
                    {canRetry && (
                      <td>
                        <button type="button" onClick={() => void retry(d)} disabled={r?.kind === 'busy' || r?.kind === 'done'} aria-label={`Retry ${d.node} of ${d.build_name}`}>
                          {r?.kind === 'busy' ? 'Retrying…' : r?.kind === 'done' ? 'Queued again' : 'Retry'}
                        </button>
                        {r?.kind === 'error' && (
                          <span className="action-error" role="alert">
                            {r.message}
                          </span>
                        )}
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </main>
  );
}
