/**
 * Pools: the fleet seen per platform (linux/amd64, linux/arm64, linux/s390x, and any other
 * platform agents or nodes have) plus `gpu` for GPU agents and the nodes that need GPUs.
 * A pool view counts its agents (native, emulated, paused, draining, unhealthy, breaker
 * not closed), slots and GPUs, the ready nodes waiting for it (and how long the oldest
 * has waited), what runs in it, and the ready -> assigned wait of its last dispatches.
 */
import { KilnError, normalizePlatform, type GpuRequirement, type NodeState, type PoolViewT } from '../../shared/index.js';
import type { AgentEntry } from './agent-entry.js';
import type { AgentRegistry } from './agent-registry.js';
import { busyGpuCount } from './gpu-allocation.js';

/** Listed even when empty, in this order; other pools follow by name. */
export const STANDARD_POOLS = ['linux/amd64', 'linux/arm64', 'linux/s390x', 'gpu'] as const;

/** The pool a node waits in: `gpu` when it needs GPUs, else its platform. */
export function poolOf(node: { platform: string; gpus?: GpuRequirement | null }): string {
  return node.gpus ? 'gpu' : normalizePlatform(node.platform);
}

export interface PoolNode {
  state: NodeState;
  platform: string;
  gpus?: GpuRequirement | null;
  ready_at: number | null;
}

/** Ready -> assigned waits of one pool: the last `keep` of them and the total count. */
class WaitRing {
  readonly values: number[] = [];
  next = 0;
  dispatched = 0;
  constructor(private readonly keep: number) {}
  add(ms: number): void {
    if (this.values.length < this.keep) this.values.push(ms);
    else this.values[this.next] = ms;
    this.next = (this.next + 1) % this.keep;
    this.dispatched++;
  }
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round(sorted[i]!);
}

function emptyView(name: string): PoolViewT {
  return {
    name,
    agents: { connected: 0, native: 0, emulated: 0, paused: 0, draining: 0, unhealthy: 0, breaker_open: 0 },
    slots: { total: 0, busy: 0 },
    gpus: { total: 0, busy: 0 },
    queued: 0,
    running: 0,
    oldest_wait_ms: null,
    wait_p50_ms: null,
    wait_p95_ms: null,
    dispatched: 0,
  };
}

export class PoolStats {
  private readonly waits = new Map<string, WaitRing>();

  /** `keep`: how many of the last dispatches per pool the wait percentiles cover. */
  constructor(private readonly keep = 1000) {
    if (!Number.isInteger(keep) || keep < 1) throw new KilnError('E_INVALID', `PoolStats keep must be an integer >= 1 (got ${keep})`);
  }

  /** A node of `pool` was dispatched after waiting `waitMs` since it became ready. */
  recordDispatch(pool: string, waitMs: number): void {
    let r = this.waits.get(pool);
    if (!r) {
      r = new WaitRing(this.keep);
      this.waits.set(pool, r);
    }
    r.add(Number.isFinite(waitMs) && waitMs > 0 ? waitMs : 0);
  }

  /** Views of every pool: the standard ones, then any other with agents, nodes or dispatches. */
  view(agents: AgentRegistry, nodes: Iterable<PoolNode>, now: number): PoolViewT[] {
    const pools = new Map<string, PoolViewT>();
    const acc = (name: string): PoolViewT => {
      let v = pools.get(name);
      if (!v) {
        v = emptyView(name);
        pools.set(name, v);
      }
      return v;
    };
    for (const name of STANDARD_POOLS) acc(name);

    for (const a of agents.connected()) {
      for (const platform of a.platforms) this.addAgent(acc(platform), a, agents.isNative(a, platform), now, false);
      if ((a.hello?.gpus.length ?? 0) > 0) this.addAgent(acc('gpu'), a, true, now, true);
    }

    for (const n of nodes) {
      const v = acc(poolOf(n));
      if (n.state === 'ready') {
        v.queued++;
        if (n.ready_at !== null) {
          const waited = Math.max(0, now - n.ready_at);
          if (v.oldest_wait_ms === null || waited > v.oldest_wait_ms) v.oldest_wait_ms = Math.round(waited);
        }
      } else if (n.state === 'assigned' || n.state === 'running') {
        v.running++;
      }
    }

    for (const [name, ring] of this.waits) {
      const v = acc(name);
      const sorted = [...ring.values].sort((x, y) => x - y);
      v.wait_p50_ms = percentile(sorted, 50);
      v.wait_p95_ms = percentile(sorted, 95);
      v.dispatched = ring.dispatched;
    }

    const standard = new Set<string>(STANDARD_POOLS);
    const others = [...pools.keys()].filter((k) => !standard.has(k)).sort();
    return [...STANDARD_POOLS, ...others].map((k) => pools.get(k)!);
  }

  private addAgent(v: PoolViewT, a: AgentEntry, native: boolean, now: number, gpuPool: boolean): void {
    v.agents.connected++;
    if (native) v.agents.native++;
    else v.agents.emulated++;
    if (a.control === 'paused') v.agents.paused++;
    if (a.control === 'draining') v.agents.draining++;
    if (!a.health.accepting) v.agents.unhealthy++;
    // open, or half-open (waiting for its trial to finish): not taking work normally
    if (a.breaker.view(now).state !== 'closed') v.agents.breaker_open++;
    v.slots.total += a.maxJobs;
    v.slots.busy += a.running.size;
    if (gpuPool) {
      v.gpus.total += a.hello?.gpus.length ?? 0;
      v.gpus.busy += busyGpuCount(a.gpusInUse);
    }
  }
}
