/**
 * A short live history of each agent's heartbeats, kept in the page (the API reports only
 * the latest): load, memory, and per GPU memory used and utilisation, for the sparklines
 * of the agents page. A sample is recorded when an agent's `metrics.at` changes (one per
 * heartbeat, whether it came by the events stream or a refetch); at most `limit` per agent.
 * Pure; unit-tested under node.
 */
import type { AgentViewT } from '../../../shared/api.js';

export interface GpuSample {
  readonly memoryUsedMib: number;
  readonly utilizationPct: number | null;
}

export interface HeartbeatSample {
  /** The heartbeat's time (epoch ms). */
  readonly at: number;
  readonly load1: number | null;
  readonly memUsedMib: number | null;
  /** By nvidia-smi index. */
  readonly gpus: ReadonlyMap<number, GpuSample>;
}

/** How many heartbeats are kept per agent. */
export const HISTORY_LIMIT = 60;

export class FleetHistory {
  private readonly byAgent = new Map<string, HeartbeatSample[]>();

  constructor(private readonly limit = HISTORY_LIMIT) {}

  /** Records the agent's latest heartbeat if it is new; true when a sample was added. */
  record(agent: AgentViewT): boolean {
    const m = agent.metrics;
    if (!m) return false;
    const at = Date.parse(m.at);
    if (Number.isNaN(at)) return false;
    const list = this.byAgent.get(agent.name) ?? [];
    const last = list[list.length - 1];
    if (last && at <= last.at) return false;
    list.push({
      at,
      load1: m.load1,
      memUsedMib: m.mem_used_mib,
      gpus: new Map(m.gpus.map((g) => [g.index, { memoryUsedMib: g.memory_used_mib, utilizationPct: g.utilization_pct }])),
    });
    if (list.length > this.limit) list.splice(0, list.length - this.limit);
    this.byAgent.set(agent.name, list);
    return true;
  }

  samples(agent: string): readonly HeartbeatSample[] {
    return this.byAgent.get(agent) ?? [];
  }

  /** Load (1 min) over the kept heartbeats. */
  load(agent: string): Array<number | null> {
    return this.samples(agent).map((s) => s.load1);
  }

  /** One GPU's utilisation (%) or memory used (MiB) over the kept heartbeats; null where a heartbeat lacked it. */
  gpu(agent: string, index: number, what: 'utilization' | 'memory'): Array<number | null> {
    return this.samples(agent).map((s) => {
      const g = s.gpus.get(index);
      if (!g) return null;
      return what === 'utilization' ? g.utilizationPct : g.memoryUsedMib;
    });
  }

  /** Drops agents not in `names` (gone from the list). */
  keepOnly(names: ReadonlySet<string>): void {
    for (const name of [...this.byAgent.keys()]) if (!names.has(name)) this.byAgent.delete(name);
  }
}
