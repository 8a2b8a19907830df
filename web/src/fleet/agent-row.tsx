/**
 * One agent of the agents page (a table row): state, operator control (paused and draining
 * look different: icon, text and colour), health, circuit breaker, jobs and slots, load,
 * memory, free disk, each GPU's memory and utilisation with a sparkline of the last
 * heartbeats, and how long ago it was last seen. Admins get pause / drain / resume, with an
 * optional reason.
 */
import { memo, useState, type FormEvent, type ReactNode } from 'react';
import type { AgentControlAction } from '../../../shared/api-paths.js';
import type { AgentViewT } from '../../../shared/api.js';
import { ageOf, formatAge, formatMiB, percent } from './fleet-format.js';
import type { FleetHistory } from './fleet-history.js';
import { Sparkline } from './fleet-widgets.js';

const STATE_ICON: Record<AgentViewT['state'], string> = { connected: '●', disconnected: '○', lost: '✕' };

export function ControlBadge({ agent }: { agent: AgentViewT }): ReactNode {
  // glyphs from fonts every Linux box has (DejaVu): ‖ for paused, ⇣ for draining
  if (agent.control === 'active') return <span className="badge control-active">active</span>;
  const since = agent.control_at ? ` since ${new Date(agent.control_at).toLocaleString()}` : '';
  const title = `${agent.control}${since}${agent.control_reason ? `: ${agent.control_reason}` : ''}`;
  return (
    <span className={`badge control-${agent.control}`} title={title}>
      {agent.control === 'paused' ? '‖ paused' : '⇣ draining'}
    </span>
  );
}

function Breaker({ b, now }: { b: AgentViewT['breaker']; now: number }): ReactNode {
  if (b.state === 'closed') return <span className="breaker-closed">closed{b.recent_failures > 0 ? ` (${b.recent_failures} recent)` : ''}</span>;
  if (b.state === 'half_open') return <span className="badge breaker-half">◐ half-open (trial)</span>;
  const left = b.until ? -(ageOf(b.until, now) ?? 0) : null;
  return (
    <span className="badge breaker-open" title={b.until ?? undefined}>
      ✕ open{left !== null && left > 0 ? ` ${formatAge(left)} more` : ''} · {b.recent_failures} failures
    </span>
  );
}

/** The actions an admin may take from `control` (each to a different setting). */
function actionsFor(control: AgentViewT['control']): AgentControlAction[] {
  if (control === 'active') return ['pause', 'drain'];
  return control === 'paused' ? ['resume', 'drain'] : ['resume', 'pause'];
}

const ACTION_LABEL: Record<AgentControlAction, string> = { pause: 'Pause', drain: 'Drain', resume: 'Resume' };

function ControlActions({ agent, onControl }: { agent: AgentViewT; onControl: (name: string, action: AgentControlAction, reason: string | null) => Promise<void> }): ReactNode {
  const [asking, setAsking] = useState<AgentControlAction | null>(null);
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const run = async (action: AgentControlAction, why: string | null) => {
    setBusy(true);
    setError(null);
    try {
      await onControl(agent.name, action, why);
      setAsking(null);
      setReason('');
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  if (asking !== null) {
    const submit = (e: FormEvent) => {
      e.preventDefault();
      void run(asking, reason.trim() === '' ? null : reason.trim());
    };
    return (
      <form className="control-form" onSubmit={submit} onKeyDown={(e) => e.key === 'Escape' && setAsking(null)}>
        <input aria-label={`Reason to ${asking} ${agent.name} (optional)`} placeholder="reason (optional)" maxLength={1000} value={reason} onChange={(e) => setReason(e.target.value)} autoFocus />
        <button type="submit" disabled={busy}>
          {ACTION_LABEL[asking]}
        </button>
        <button type="button" onClick={() => setAsking(null)} disabled={busy}>
          Cancel
        </button>
        {error && <span className="action-error" role="alert">{error}</span>}
      </form>
    );
  }
  return (
    <span className="control-actions">
      {actionsFor(agent.control).map((action) => (
        <button
          key={action}
          type="button"
          className={`action-${action}`}
          disabled={busy}
          aria-label={`${ACTION_LABEL[action]} ${agent.name}`}
          onClick={() => (action === 'resume' ? void run('resume', null) : setAsking(action))}
        >
          {ACTION_LABEL[action]}
        </button>
      ))}
      {error && <span className="action-error" role="alert">{error}</span>}
    </span>
  );
}

function Gpus({ agent, history }: { agent: AgentViewT; history: FleetHistory }): ReactNode {
  if (agent.gpus.length === 0) return <span className="muted">—</span>;
  const latest = new Map((agent.metrics?.gpus ?? []).map((g) => [g.index, g]));
  const held = new Set(agent.gpus_in_use.flatMap((u) => u.gpus));
  return (
    <ul className="gpu-list">
      {agent.gpus.map((g) => {
        const m = latest.get(g.index);
        return (
          <li key={g.index} className={held.has(g.index) ? 'gpu-busy' : undefined}>
            <span className="gpu-name" title={g.uuid ?? undefined}>
              GPU {g.index} {g.model}
              {held.has(g.index) ? ' (assigned)' : ''}
            </span>
            <span className="gpu-figures">
              {m ? `${formatMiB(m.memory_used_mib)} / ${formatMiB(g.memory_mib)}` : `— / ${formatMiB(g.memory_mib)}`}
              {' · '}
              {m?.utilization_pct !== null && m?.utilization_pct !== undefined ? `${Math.round(m.utilization_pct)}%` : '—%'}
            </span>
            <span className="gpu-sparks">
              <Sparkline className="spark-util" values={history.gpu(agent.name, g.index, 'utilization')} max={100} label={`GPU ${g.index} utilisation, last heartbeats`} />
              <Sparkline className="spark-mem" values={history.gpu(agent.name, g.index, 'memory')} max={g.memory_mib} label={`GPU ${g.index} memory used, last heartbeats`} />
            </span>
          </li>
        );
      })}
    </ul>
  );
}

export interface AgentRowProps {
  readonly agent: AgentViewT;
  readonly history: FleetHistory;
  /** Samples in the history for this agent (re-renders the sparklines when it grows). */
  readonly samples: number;
  readonly now: number;
  readonly canControl: boolean;
  readonly onControl: (name: string, action: AgentControlAction, reason: string | null) => Promise<void>;
}

export const AgentRow = memo(function AgentRow({ agent, history, now, canControl, onControl }: AgentRowProps) {
  const m = agent.metrics;
  const memPct = percent(m?.mem_used_mib ?? null, m?.mem_total_mib ?? null);
  const load1 = m?.load1 ?? null;
  const cpus = m?.cpus ?? null;
  const seen = ageOf(agent.last_seen_at, now);
  const platforms = agent.platforms.map((p) => (p.emulated ? `${p.platform} (emulated)` : p.platform)).join(', ');
  return (
    <tr className={`agent-row agent-${agent.state} agent-control-${agent.control}`} data-agent={agent.name} data-state={agent.state} data-control={agent.control}>
      <th scope="row">
        <span className="agent-name">{agent.name}</span>
        <span className="agent-meta" title={`${platforms}${agent.docker ? `; Docker ${agent.docker.version}, BuildKit ${agent.docker.buildkit_version ?? '—'}` : ''}`}>
          v{agent.agent_version} · {agent.platforms.length} platform{agent.platforms.length === 1 ? '' : 's'}
          {agent.state === 'connected' && agent.connected_at !== null && ` · up ${formatAge(ageOf(agent.connected_at, now))}`}
        </span>
      </th>
      <td>
        <span className={`agent-state state-${agent.state}`}>
          {STATE_ICON[agent.state]} {agent.state}
        </span>
        <span className="last-seen" title={agent.last_seen_at}>
          seen {seen === null ? '—' : seen < 1000 ? 'now' : `${formatAge(seen)} ago`}
        </span>
      </td>
      <td>
        <ControlBadge agent={agent} />
        {agent.control !== 'active' && agent.control_reason && <span className="control-reason">{agent.control_reason}</span>}
      </td>
      <td>{agent.health.accepting ? <span className="health-ok">✓ ok</span> : <span className="badge health-bad" title={agent.health.problem ?? undefined}>⚠ {agent.health.problem ?? 'not accepting'}</span>}</td>
      <td>
        <Breaker b={agent.breaker} now={now} />
      </td>
      <td className="num" title={agent.running.join(', ') || undefined}>
        {agent.running.length} / {agent.max_jobs}
        <meter min={0} max={Math.max(1, agent.max_jobs)} value={agent.running.length} aria-label={`${agent.name} slots busy`} />
      </td>
      <td className="num">
        {load1 !== null ? load1.toFixed(2) : '—'}
        {cpus !== null && <span className="muted"> / {cpus} cpu</span>}
        <Sparkline className="spark-load" values={history.load(agent.name)} max={Math.max(1, cpus ?? 1)} label="load, last heartbeats" />
      </td>
      <td className="num">
        {m ? `${formatMiB(m.mem_used_mib)} / ${formatMiB(m.mem_total_mib)}` : '—'}
        {memPct !== null && <span className="muted"> ({memPct}%)</span>}
      </td>
      <td className="num">{formatMiB(m?.disk_free_mib ?? null)}</td>
      <td>
        <Gpus agent={agent} history={history} />
      </td>
      {canControl && (
        <td>
          <ControlActions agent={agent} onControl={onControl} />
        </td>
      )}
    </tr>
  );
});
