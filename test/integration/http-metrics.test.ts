/**
 * `GET /metrics` on a real coordinator with a real agent: Prometheus text that carries the
 * agent's heartbeat metrics (load, memory, free disk), its slots and breaker, the pools'
 * queue depth (a node nobody can run is counted in its pool) and the dead-letter count.
 */
import { describe, expect, it } from 'vitest';
import { inline, submitSpec, useCluster, waitFor } from '../helpers/cluster.js';

describe('metrics', () => {
  const c = useCluster('metrics', { coordinatorArgs: ['--heartbeat-interval', '500ms'], agents: [{ name: 'metrics-agent', executor: 'noop', maxJobs: 3 }] });

  async function scrape(): Promise<{ type: string | null; text: string }> {
    const r = await fetch(`${c.coord.url}/metrics`);
    expect(r.status).toBe(200);
    return { type: r.headers.get('content-type'), text: await r.text() };
  }

  const value = (text: string, series: string): number | null => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : null;
  };

  it('exposes agent heartbeat metrics, pools and the dead-letter count without a token', async () => {
    const first = await scrape();
    expect(first.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = await waitFor('the agent\'s heartbeat metrics', async () => {
      const s = (await scrape()).text;
      return value(s, 'kiln_agent_load1{agent="metrics-agent"}') !== null ? s : null;
    });
    expect(value(m, 'kiln_agent_slots{agent="metrics-agent"}')).toBe(3);
    expect(value(m, 'kiln_agent_accepting{agent="metrics-agent"}')).toBe(1);
    expect(value(m, 'kiln_agent_breaker_open{agent="metrics-agent"}')).toBe(0);
    expect(value(m, 'kiln_agent_memory_total_bytes{agent="metrics-agent"}')).toBeGreaterThan(0);
    expect(value(m, 'kiln_agents{state="connected",control="active"}')).toBe(1);
    expect(value(m, 'kiln_dead_letter_nodes')).toBe(0);
    expect(m).toMatch(/^kiln_coordinator_process_cpu_seconds_total /m);

    await submitSpec(c.coord, { nodes: { far: inline('FROM kiln/busybox:1-s390x', { platform: 'linux/s390x' }) } });
    const q = await waitFor('the s390x node in its pool\'s queue', async () => {
      const s = (await scrape()).text;
      return value(s, 'kiln_queue_depth{pool="linux/s390x"}') === 1 ? s : null;
    });
    expect(value(q, 'kiln_pool_oldest_wait_seconds{pool="linux/s390x"}')).toBeGreaterThanOrEqual(0);
    // No build ids as labels.
    expect(q).not.toMatch(/b-[0-9a-z]{13}-/);
  });
});
