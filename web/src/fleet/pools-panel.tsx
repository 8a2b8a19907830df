/**
 * The pools panel of the agents page: per pool (a platform, or `gpu`) its agents, slots,
 * GPUs, queue depth, the oldest queued node's wait (counting on between updates), wait
 * p50/p95 and dispatches; then the concurrency groups.
 */
import type { ReactNode } from 'react';
import type { PoolListT } from './fleet-events.js';
import { formatDuration } from './fleet-format.js';

export interface PoolsPanelProps {
  readonly pools: PoolListT | null;
  /** When `pools` was received (epoch ms): the oldest wait grows from there. */
  readonly receivedAt: number;
  readonly now: number;
}

export function PoolsPanel({ pools, receivedAt, now }: PoolsPanelProps): ReactNode {
  if (pools === null) return <p className="muted">Loading pools…</p>;
  if (pools.items.length === 0) return <p className="muted">No pools: no agent has connected yet.</p>;
  const groups = pools.concurrency_groups ?? [];
  return (
    <>
      <table className="fleet-table pools-table">
        <thead>
          <tr>
            <th scope="col">Pool</th>
            <th scope="col">Agents</th>
            <th scope="col" className="num">Slots busy</th>
            <th scope="col" className="num">GPUs busy</th>
            <th scope="col" className="num">Queued</th>
            <th scope="col" className="num">Oldest wait</th>
            <th scope="col" className="num">Wait p50</th>
            <th scope="col" className="num">Wait p95</th>
            <th scope="col" className="num">Running</th>
            <th scope="col" className="num">Dispatched</th>
          </tr>
        </thead>
        <tbody>
          {pools.items.map((p) => {
            const a = p.agents;
            const oldest = p.oldest_wait_ms === null ? null : p.oldest_wait_ms + Math.max(0, now - receivedAt);
            const notes = [a.paused && `${a.paused} paused`, a.draining && `${a.draining} draining`, a.unhealthy && `${a.unhealthy} unhealthy`, a.breaker_open && `${a.breaker_open} breaker open`].filter(Boolean);
            return (
              <tr key={p.name} data-pool={p.name} className={p.queued > 0 && p.slots.busy >= p.slots.total ? 'pool-saturated' : undefined}>
                <th scope="row">{p.name}</th>
                <td>
                  {a.connected} connected
                  {a.emulated > 0 && <span className="muted"> ({a.native} native, {a.emulated} emulated)</span>}
                  {notes.length > 0 && <span className="pool-notes"> · {notes.join(', ')}</span>}
                </td>
                <td className="num">
                  {p.slots.busy} / {p.slots.total}
                </td>
                <td className="num">{p.gpus.total > 0 ? `${p.gpus.busy} / ${p.gpus.total}` : '—'}</td>
                <td className="num">
                  <strong>{p.queued}</strong>
                </td>
                <td className="num">{formatDuration(oldest)}</td>
                <td className="num">{formatDuration(p.wait_p50_ms)}</td>
                <td className="num">{formatDuration(p.wait_p95_ms)}</td>
                <td className="num">{p.running}</td>
                <td className="num">{p.dispatched}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {groups.length > 0 && (
        <table className="fleet-table groups-table">
          <caption>Concurrency groups</caption>
          <thead>
            <tr>
              <th scope="col">Group</th>
              <th scope="col" className="num">Limit</th>
              <th scope="col" className="num">Running</th>
              <th scope="col" className="num">Waiting</th>
            </tr>
          </thead>
          <tbody>
            {groups.map((g) => (
              <tr key={g.name}>
                <th scope="row">{g.name}</th>
                <td className="num">{g.limit ?? 'per build'}</td>
                <td className="num">{g.running}</td>
                <td className="num">{g.waiting}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
