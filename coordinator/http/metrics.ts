/**
 * `GET /metrics`: the coordinator's Prometheus metrics (prom-client). Besides the process
 * defaults: agents by state and control, each connected agent's last heartbeat metrics
 * (load, memory, free disk, GPU memory and utilisation, running attempts, breaker), the
 * pools (queue depth, running, oldest wait), the dead-letter list's length and the layer
 * cache's counters per pool (build steps cached and executed, cache pushes), and webhook
 * deliveries by outcome when webhooks are on. Values are
 * read from the registry and the engine when scraped; no build ids as labels.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { AgentRegistry } from '../placement/agent-registry.js';
import type { Engine } from '../builds/engine.js';
import type { PoolCacheCounts } from '../builds/cache-counters.js';
import type { WebhookQuery } from '../webhooks/webhooks.js';

const MIB = 1024 * 1024;

export function createMetrics(engine: Engine, agents: AgentRegistry, clock: () => number, webhooks?: Pick<WebhookQuery, 'counters'>): Registry {
  const register = new Registry();
  collectDefaultMetrics({ register, prefix: 'kiln_coordinator_' });
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [register],
      collect() {
        this.reset();
        fill(this);
      },
    });

  gauge('kiln_agents', 'Agents known to the coordinator, by connection state and operator control', ['state', 'control'], (g) => {
    for (const a of agents.all()) g.inc({ state: a.state, control: a.control });
  });
  const connected = () => [...agents.all()].filter((a) => a.state === 'connected');
  gauge('kiln_agent_running_attempts', 'Attempts holding a slot on the agent', ['agent'], (g) => {
    for (const a of connected()) g.set({ agent: a.name }, a.running.size);
  });
  gauge('kiln_agent_slots', 'Slots (max jobs) of the agent', ['agent'], (g) => {
    for (const a of connected()) g.set({ agent: a.name }, a.maxJobs);
  });
  gauge('kiln_agent_accepting', '1 when the agent reports it can take work (Docker reachable, disk space)', ['agent'], (g) => {
    for (const a of connected()) g.set({ agent: a.name }, a.health.accepting ? 1 : 0);
  });
  gauge('kiln_agent_breaker_open', '1 while the agent’s circuit breaker keeps work away (open), 0.5 half-open, 0 closed', ['agent'], (g) => {
    const now = clock();
    for (const a of connected()) {
      const s = a.breaker.view(now).state;
      g.set({ agent: a.name }, s === 'open' ? 1 : s === 'half_open' ? 0.5 : 0);
    }
  });
  const fromLoad = (name: string, help: string, pick: (l: NonNullable<NonNullable<ReturnType<typeof connected>[number]['metrics']>['load']>) => number | null) =>
    gauge(name, help, ['agent'], (g) => {
      for (const a of connected()) {
        const l = a.metrics?.load;
        const v = l ? pick(l) : null;
        if (v !== null) g.set({ agent: a.name }, v);
      }
    });
  fromLoad('kiln_agent_load1', '1-minute load average the agent reported', (l) => l.load1);
  fromLoad('kiln_agent_cpus', 'CPUs of the agent host', (l) => l.cpus);
  fromLoad('kiln_agent_memory_used_bytes', 'Memory in use on the agent host', (l) => l.mem_used_mib * MIB);
  fromLoad('kiln_agent_memory_total_bytes', 'Memory of the agent host', (l) => l.mem_total_mib * MIB);
  fromLoad('kiln_agent_disk_free_bytes', 'Free space where the agent keeps its work dir', (l) => (l.disk_free_mib === null ? null : l.disk_free_mib * MIB));
  gauge('kiln_agent_gpu_memory_used_bytes', 'GPU memory in use, as nvidia-smi reports it', ['agent', 'gpu'], (g) => {
    for (const a of connected()) for (const u of a.metrics?.gpus ?? []) g.set({ agent: a.name, gpu: String(u.index) }, u.memory_used_mib * MIB);
  });
  gauge('kiln_agent_gpu_utilization_ratio', 'GPU utilisation (0-1), as nvidia-smi reports it', ['agent', 'gpu'], (g) => {
    for (const a of connected()) for (const u of a.metrics?.gpus ?? []) if (u.utilization_pct !== null) g.set({ agent: a.name, gpu: String(u.index) }, u.utilization_pct / 100);
  });
  gauge('kiln_agent_gpus_assigned', 'GPUs of the agent assigned to running attempts', ['agent'], (g) => {
    for (const a of connected()) {
      let n = 0;
      for (const ids of a.gpusInUse.values()) n += ids.length;
      g.set({ agent: a.name }, n);
    }
  });
  const pools = () => engine.pools();
  gauge('kiln_queue_depth', 'Ready nodes waiting for an agent, per pool', ['pool'], (g) => {
    for (const p of pools()) g.set({ pool: p.name }, p.queued);
  });
  gauge('kiln_pool_running', 'Nodes assigned or running, per pool', ['pool'], (g) => {
    for (const p of pools()) g.set({ pool: p.name }, p.running);
  });
  gauge('kiln_pool_oldest_wait_seconds', 'How long the oldest queued node of the pool has waited', ['pool'], (g) => {
    for (const p of pools()) g.set({ pool: p.name }, (p.oldest_wait_ms ?? 0) / 1000);
  });
  gauge('kiln_dead_letter_nodes', 'Nodes on the dead-letter list', [], (g) => g.set(engine.deadLetters().length));
  // Layer cache: counters kept by the engine, copied when scraped.
  const cacheCounter = (name: string, help: string, pick: (c: PoolCacheCounts) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['pool'],
      registers: [register],
      collect() {
        this.reset();
        for (const [pool, c] of engine.cacheCounts()) this.inc({ pool }, pick(c));
      },
    });
  cacheCounter('kiln_cache_hits_total', 'Build steps BuildKit reported cached (layer cache and local), per pool', (c) => c.hits);
  cacheCounter('kiln_cache_misses_total', 'Build steps BuildKit executed, per pool', (c) => c.misses);
  cacheCounter('kiln_cache_pushes_total', 'Cache refs pushed to the cache registry after a build, per pool', (c) => c.pushes);
  cacheCounter('kiln_cache_push_failures_total', 'Cache pushes that failed (the node still succeeded), per pool', (c) => c.pushFailures);
  // Webhooks (issue 13): only when the module is loaded; `hook` is a coordinator hook's name, or `build` for builds' own hooks.
  if (webhooks) {
    new Counter({
      name: 'kiln_webhook_deliveries_total',
      help: 'Webhook deliveries by outcome (delivered, failed: gave up or not retried, dropped: queue full) and attempts retried, per hook',
      labelNames: ['hook', 'outcome'],
      registers: [register],
      collect() {
        this.reset();
        for (const [hook, c] of webhooks.counters()) for (const outcome of ['delivered', 'failed', 'dropped', 'retried'] as const) this.inc({ hook, outcome }, c[outcome]);
      },
    });
  }
  return register;
}
