/**
 * An agent rendered as the HTTP API's view (`AgentView`): what `GET /api/v1/agents` and the
 * events stream's `agent` events send (ISO times, the breaker as of `now`, the operator's
 * reason for a pause or drain).
 */
import type { AgentViewT } from '../../shared/index.js';
import type { AgentControlRecord } from '../state/records.js';
import type { AgentEntry } from './agent-entry.js';

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** Renders an agent; `control` is the operator's record of it (for the reason and time). */
export function agentView(a: AgentEntry, now: number, control?: AgentControlRecord): AgentViewT {
  const h = a.hello;
  const breaker = a.breaker.view(now);
  const load = a.metrics?.load ?? null;
  const active = a.control === 'active';
  return {
    name: a.name,
    state: a.state,
    agent_version: h?.agent_version ?? 'unknown',
    executor: h?.executor ?? 'unknown',
    platforms: h?.platforms ?? [],
    labels: h?.labels ?? {},
    max_jobs: a.maxJobs,
    running: [...a.running],
    docker: h?.docker ?? null,
    gpus: h?.gpus ?? [],
    connected_at: iso(a.connectedAt),
    last_seen_at: new Date(a.lastSeenAt).toISOString(),
    control: a.control,
    control_reason: active ? null : (control?.reason ?? null),
    control_at: active ? null : iso(control?.at ?? null),
    health: { accepting: a.health.accepting, problem: a.health.problem },
    breaker: { state: breaker.state, until: iso(breaker.until), recent_failures: breaker.recent_failures },
    metrics: a.metrics
      ? {
          at: new Date(a.metrics.at).toISOString(),
          load1: load?.load1 ?? null,
          cpus: load?.cpus ?? null,
          mem_used_mib: load?.mem_used_mib ?? null,
          mem_total_mib: load?.mem_total_mib ?? null,
          disk_free_mib: load?.disk_free_mib ?? null,
          gpus: a.metrics.gpus.map((g) => ({ index: g.index, memory_used_mib: g.memory_used_mib, utilization_pct: g.utilization_pct })),
        }
      : null,
    gpus_in_use: [...a.gpusInUse].map(([attempt_id, gpus]) => ({ attempt_id, gpus: [...gpus] })),
  };
}
