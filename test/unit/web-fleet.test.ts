/**
 * Pure helpers of the dashboard's fleet pages (web/src/fleet/): ages, durations, sizes,
 * sparkline paths, scope checks, the heartbeat history behind the GPU sparklines, and the
 * events stream (message parsing; the subscription against a scripted EventSource).
 */
import { describe, expect, it } from 'vitest';
import type { AgentViewT } from '../../shared/api.js';
import { parseFleetEvent, subscribeFleet, type FleetFeedState } from '../../web/src/fleet/fleet-events.js';
import { ageOf, allows, formatAge, formatBytes, formatDuration, formatMiB, percent, sparklinePath } from '../../web/src/fleet/fleet-format.js';
import { FleetHistory } from '../../web/src/fleet/fleet-history.js';
import { ScriptedSource } from '../helpers/scripted-event-source.js';

function agent(name: string, at: string | null, gpus: Array<[number, number, number | null]> = [], load1: number | null = 0.5): AgentViewT {
  return {
    name,
    state: 'connected',
    agent_version: '0.1.0',
    executor: 'docker',
    platforms: [{ platform: 'linux/amd64', emulated: false }],
    labels: {},
    max_jobs: 2,
    running: [],
    docker: null,
    gpus: gpus.map(([index]) => ({ index, model: 'L4', memory_mib: 24_000, uuid: null })),
    connected_at: '2026-12-05T08:00:00.000Z',
    last_seen_at: at ?? '2026-12-05T08:00:00.000Z',
    control: 'active',
    control_reason: null,
    control_at: null,
    health: { accepting: true, problem: null },
    breaker: { state: 'closed', until: null, recent_failures: 0 },
    metrics: at === null ? null : { at, load1, cpus: 4, mem_used_mib: 1000, mem_total_mib: 8000, disk_free_mib: 50_000, gpus: gpus.map(([index, mem, util]) => ({ index, memory_used_mib: mem, utilization_pct: util })) },
    gpus_in_use: [],
  };
}

describe('fleet formatting', () => {
  it('formats ages, durations, sizes and percentages', () => {
    expect([-5, 0, 999, 4_000, 125_000, 3 * 3600_000 + 12 * 60_000, 50 * 3600_000].map(formatAge)).toEqual(['—', 'now', 'now', '4s', '2m 05s', '3h 12m', '2d 2h']);
    expect(formatAge(null)).toBe('—');
    expect([850, 12_345, 245_000, 7_380_000].map(formatDuration)).toEqual(['850 ms', '12.3 s', '4m 05s', '2h 03m']);
    expect(formatDuration(null)).toBe('—');
    expect([0, 512, 1536, 10 * 1024 * 1024, 150 * 1024 ** 3, 1024 ** 4].map(formatBytes)).toEqual(['0 B', '512 B', '1.5 KiB', '10 MiB', '150 GiB', '1 TiB']);
    expect(formatMiB(24_000)).toBe('23.4 GiB');
    expect(formatMiB(null)).toBe('—');
    expect(percent(1000, 8000)).toBe(13);
    expect(percent(1, 0)).toBeNull();
    expect(percent(null, 10)).toBeNull();
    expect(ageOf('2026-12-05T08:00:00.000Z', Date.parse('2026-12-05T08:00:03.500Z'))).toBe(3500);
    expect(ageOf('garbage', 0)).toBeNull();
  });

  it('draws sparklines scaled to the box, broken at missing values', () => {
    expect(sparklinePath([0, 50, 100], 100, 20, 100)).toBe('M0,20L50,10L100,0');
    expect(sparklinePath([0, null, 100, 200], 30, 10, 100)).toBe('M0,10h5M20,0L30,0');
    expect(sparklinePath([42], 60, 10, 100)).toBe('M0,5.8h60');
    expect(sparklinePath([], 60, 10, 100)).toBe('');
    expect(sparklinePath([-3], 60, 10, 100)).toBe('M0,10h60');
  });

  it('applies scope implication: admin implies all, cancel and submit imply read', () => {
    expect(allows(new Set(['admin']), 'cancel')).toBe(true);
    expect(allows(new Set(['cancel']), 'read')).toBe(true);
    expect(allows(new Set(['cancel']), 'admin')).toBe(false);
    expect(allows(new Set(['read']), 'cancel')).toBe(false);
    expect(allows(new Set(['submit']), 'cancel')).toBe(false);
    expect(allows(new Set(), 'read')).toBe(false);
  });
});

describe('fleet history', () => {
  it('keeps one sample per heartbeat, the last N, per GPU', () => {
    const h = new FleetHistory(3);
    expect(h.record(agent('gpu-1', null))).toBe(false);
    for (let s = 0; s < 5; s++) expect(h.record(agent('gpu-1', `2026-12-05T08:00:0${s}.000Z`, [[0, 1000 + s, s * 10], [1, 500, null]], s))).toBe(true);
    expect(h.record(agent('gpu-1', '2026-12-05T08:00:04.000Z', [[0, 9, 9]]))).toBe(false); // the same heartbeat again
    expect(h.record(agent('gpu-1', '2026-12-05T08:00:01.000Z', [[0, 9, 9]]))).toBe(false); // an older one
    expect(h.gpu('gpu-1', 0, 'utilization')).toEqual([20, 30, 40]);
    expect(h.gpu('gpu-1', 0, 'memory')).toEqual([1002, 1003, 1004]);
    expect(h.gpu('gpu-1', 1, 'utilization')).toEqual([null, null, null]);
    expect(h.gpu('gpu-1', 7, 'memory')).toEqual([null, null, null]);
    expect(h.load('gpu-1')).toEqual([2, 3, 4]);
    h.record(agent('cpu-1', '2026-12-05T08:00:00.000Z'));
    h.keepOnly(new Set(['cpu-1']));
    expect(h.samples('gpu-1')).toEqual([]);
    expect(h.samples('cpu-1')).toHaveLength(1);
  });
});

describe('fleet events', () => {
  it('validates agent, pools and reset events and names a malformed one', () => {
    const a = agent('a1', '2026-12-05T08:00:00.000Z');
    expect(parseFleetEvent('agent', JSON.stringify(a))).toEqual({ ok: true, event: { type: 'agent', agent: a } });
    expect(parseFleetEvent('pools', JSON.stringify({ items: [] }))).toEqual({ ok: true, event: { type: 'pools', pools: { items: [] } } });
    expect(parseFleetEvent('reset', '{"reason":"too old"}')).toEqual({ ok: true, event: { type: 'reset', reason: 'too old' } });
    expect(parseFleetEvent('build', '{}')).toBeNull();
    expect(parseFleetEvent('agent', '{')).toEqual({ ok: false, error: "an 'agent' event whose data is not JSON" });
    expect(parseFleetEvent('agent', '{"name":"x"}')).toMatchObject({ ok: false, error: expect.stringContaining("a malformed 'agent' event") });
  });
});

describe('fleet feed', () => {
  it('hands on agents and pools, refetches on reset and when a new source had to be opened', () => {
    const sources: ScriptedSource[] = [];
    const timers: Array<{ fn: () => void; ms: number }> = [];
    const seen: string[] = [];
    const states: FleetFeedState[] = [];
    const stop = subscribeFleet({
      onAgent: (a) => seen.push(`agent ${a.name} ${a.control}`),
      onPools: (p) => seen.push(`pools ${p.items.length}`),
      onReset: (r) => seen.push(`reset ${r}`),
      onState: (st) => states.push(st),
      onProblem: (m) => seen.push(`problem ${m.slice(0, 24)}`),
      open: (url) => {
        const src = new ScriptedSource(url);
        sources.push(src);
        return src;
      },
      setTimer: (fn, ms) => {
        timers.push({ fn, ms });
        return timers.length;
      },
      clearTimer: () => {},
    });
    expect(sources[0]!.url).toBe('/api/v1/events?topics=agents%2Cpools');
    const s = sources[0]!;
    s.open();
    s.emit('agent', { ...agent('a1', '2026-12-05T08:00:00.000Z'), control: 'paused' }, '1-1');
    s.emit('pools', { items: [] }, '1-2');
    s.emit('build', { id: 'b-1' }, '1-3'); // not a fleet event: ignored
    s.emit('agent', { name: 'broken' }, '1-4');
    s.emit('reset', { reason: 'behind' }, '1-5');
    s.drop(false); // the browser resumes with Last-Event-ID: no refetch, no new source
    s.open();
    s.drop(true); // the browser gave up: a new source, and a refetch once it is open
    expect(timers.map((t) => t.ms)).toEqual([1000]);
    timers[0]!.fn();
    sources[1]!.open();
    expect(seen).toEqual(['agent a1 paused', 'pools 0', "problem a malformed 'agent' even", 'reset behind', 'reset reopened']);
    expect(states).toEqual(['connecting', 'live', 'reconnecting', 'live', 'reconnecting', 'live']);
    stop();
    expect(sources[1]!.closed).toBe(true);
    sources[1]!.emit('pools', { items: [] }, '2-1');
    expect(seen).toHaveLength(5);
  });
});
