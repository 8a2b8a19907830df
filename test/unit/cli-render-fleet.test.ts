/**
 * The fleet commands' terminal output (cli/render-fleet.ts) from API views: the agents
 * table shows control, health, breaker, jobs and load and explains paused and unhealthy
 * agents; pools, dead-letter and error reports are readable and name what to do next.
 * Every view is parsed with the shared schema first, so the fixtures are valid API output.
 */
import { describe, expect, it } from 'vitest';
import { AgentView, DeadLetterView, ErrorReport, PoolView, apiPath, type AgentViewT, type ErrorReportT } from '../../shared/index.js';
import { agentControlLine, agentsTable, breakerText, deadLetterTable, errorReportText, poolsTable, table } from '../../cli/render-fleet.js';

const NOW = Date.parse('2030-01-01T12:00:00.000Z');

function agent(over: Partial<AgentViewT> = {}): AgentViewT {
  return AgentView.parse({
    name: 'amd-1',
    state: 'connected',
    agent_version: '0.1.0',
    executor: 'docker',
    platforms: [{ platform: 'linux/amd64', emulated: false }, { platform: 'linux/s390x', emulated: true }],
    labels: { zone: 'a' },
    max_jobs: 4,
    running: ['at-1'],
    docker: null,
    gpus: [],
    connected_at: '2030-01-01T11:00:00.000Z',
    last_seen_at: '2030-01-01T11:59:58.000Z',
    control: 'active',
    control_reason: null,
    control_at: null,
    health: { accepting: true, problem: null },
    breaker: { state: 'closed', until: null, recent_failures: 0 },
    metrics: { at: '2030-01-01T11:59:58.000Z', load1: 1.5, cpus: 8, mem_used_mib: 2048, mem_total_mib: 16384, disk_free_mib: 900, gpus: [] },
    gpus_in_use: [],
    ...over,
  });
}

function report(over: Partial<ErrorReportT> = {}): ErrorReportT {
  const node = {
    node: 'broken',
    platform: 'linux/amd64',
    attempt: 2,
    attempt_id: 'at-2',
    agent: 'amd-1',
    exit_code: 3,
    test_exit_code: null,
    failed_step: '[2/2] RUN echo boom; exit 3',
    error: 'process "/bin/sh -c echo boom; exit 3" did not complete successfully: exit code: 3',
    infra: false,
    log_tail: Array.from({ length: 50 }, (_, i) => `line ${i + 1}`),
    logs_url: apiPath.nodeLogs('b-1', 'broken'),
    provenance: `sha256:${'a'.repeat(64)}`,
    provenance_url: apiPath.casBlob(`sha256:${'a'.repeat(64)}`),
    dead_letter: false,
  };
  return ErrorReport.parse({
    ...node,
    format: 'kiln-error-report',
    version: 1,
    build_id: 'b-1',
    build_name: 'hello',
    state: 'failed',
    created_at: '2030-01-01T11:00:00.000Z',
    finished_at: '2030-01-01T11:01:00.000Z',
    skipped: ['after', 'after-after'],
    failures: [node],
    ...over,
  });
}

describe('fleet rendering', () => {
  it('aligns table columns and does not pad the last one', () => {
    expect(table(['A', 'BB'], [['xxx', 'y'], ['z', 'long value']])).toBe('A    BB\nxxx  y\nz    long value\n');
  });

  it('shows each agent with control, health, breaker, jobs and load, and explains the unusual ones', () => {
    const out = agentsTable(
      [
        agent(),
        agent({
          name: 'amd-2',
          control: 'paused',
          control_reason: 'kernel upgrade',
          control_at: '2030-01-01T11:30:00.000Z',
          health: { accepting: false, problem: 'disk full: 120 MiB free in /var/lib/kiln' },
          breaker: { state: 'open', until: '2030-01-01T12:00:20.000Z', recent_failures: 3 },
          metrics: null,
          running: [],
        }),
      ],
      NOW,
    );
    const [header, row1, row2, ...notes] = out.trimEnd().split('\n');
    expect(header).toMatch(/^NAME\s+STATE\s+CONTROL\s+HEALTH\s+BREAKER\s+JOBS\s+LOAD\s+MEM\s+DISK-FREE\s+GPUS\s+PLATFORMS\s+LABELS\s+SEEN$/);
    expect(row1!.split(/\s{2,}/)).toEqual(['amd-1', 'connected', 'active', 'ok', 'closed', '1/4', '1.50/8', '2.0G/16.0G', '900M', '-', 'linux/amd64,linux/s390x(emulated)', 'zone=a', '2.0s ago']);
    expect(row2!.split(/\s{2,}/).slice(0, 9)).toEqual(['amd-2', 'connected', 'paused', 'unhealthy', 'open 20.0s', '0/4', '-', '-', '-']);
    expect(notes).toEqual(['amd-2: paused since 2030-01-01T11:30:00.000Z: kernel upgrade', 'amd-2: not accepting work: disk full: 120 MiB free in /var/lib/kiln']);
    // the columns line up: every row's CONTROL starts where the header's does
    const at = header!.indexOf('CONTROL');
    expect(row1!.slice(at, at + 6)).toBe('active');
    expect(row2!.slice(at, at + 6)).toBe('paused');
    expect(agentsTable([], NOW)).toBe('no agents have connected\n');
  });

  it('counts GPUs in use once per GPU', () => {
    const a = agent({
      gpus: [0, 1, 2].map((index) => ({ index, model: 'A100', memory_mib: 40_000, uuid: null })),
      gpus_in_use: [{ attempt_id: 'at-1', gpus: [0, 2] }],
    });
    expect(agentsTable([a], NOW).split('\n')[1]!.split(/\s{2,}/)[9]).toBe('2/3');
  });

  it('names the breaker state and how long it stays open', () => {
    expect(breakerText({ state: 'closed', until: null, recent_failures: 2 }, NOW)).toBe('closed (2 recent)');
    expect(breakerText({ state: 'half_open', until: null, recent_failures: 3 }, NOW)).toBe('half-open');
    expect(breakerText({ state: 'open', until: '2030-01-01T12:00:05.500Z', recent_failures: 3 }, NOW)).toBe('open 5.5s');
  });

  it('confirms pause, drain and resume in one line', () => {
    expect(agentControlLine(agent({ control: 'paused', control_reason: 'maintenance' }))).toBe('agent amd-1: paused (no new work; running attempts go on) — maintenance; 1 attempt running\n');
    expect(agentControlLine(agent({ control: 'draining', running: [] }))).toBe('agent amd-1: draining (running attempts finish; no new work until resumed)\n');
    expect(agentControlLine(agent({ running: [] }))).toBe('agent amd-1: active (takes work again)\n');
  });

  it('shows pools with slots, GPUs, queue and waits', () => {
    const pool = PoolView.parse({
      name: 'gpu',
      agents: { connected: 2, native: 2, emulated: 0, paused: 1, draining: 0, unhealthy: 0, breaker_open: 1 },
      slots: { total: 8, busy: 3 },
      gpus: { total: 4, busy: 2 },
      queued: 5,
      running: 3,
      oldest_wait_ms: 65_000,
      wait_p50_ms: 120,
      wait_p95_ms: 2500,
      dispatched: 42,
      cache: { hits: 12, misses: 3, pushes: 4, push_failures: 1 },
    });
    const { cache: _, ...noCache } = pool;
    const idle = PoolView.parse({ ...noCache, name: 'linux/amd64', agents: { ...pool.agents, paused: 0, breaker_open: 0 }, gpus: { total: 0, busy: 0 }, queued: 0, oldest_wait_ms: null, wait_p50_ms: null, wait_p95_ms: null });
    const lines = poolsTable([pool, idle]).trimEnd().split('\n');
    expect(lines[0]).toMatch(/^POOL\s+AGENTS\s+UNAVAILABLE\s+SLOTS\s+GPUS\s+QUEUED\s+RUNNING\s+OLDEST-WAIT\s+WAIT-P50\/P95\s+DISPATCHED\s+CACHE-HIT\/MISS$/);
    expect(lines[1]!.split(/\s{2,}/)).toEqual(['gpu', '2 (2 native, 0 emulated)', '1 paused, 1 breaker open', '3/8', '2/4', '5', '3', '1m5s', '120ms/2.5s', '42', '12/3 (1 push failed)']);
    expect(lines[2]!.split(/\s{2,}/)).toEqual(['linux/amd64', '2 (2 native, 0 emulated)', '-', '3/8', '-', '0', '3', '-', '-', '42', '-']);
    expect(poolsTable([])).toMatch(/^no pools/);
  });

  it('lists dead letters with their attempts and how to retry', () => {
    const d = DeadLetterView.parse({
      build_id: 'b-1',
      build_name: 'hello',
      node: 'compile',
      platform: 'linux/arm64',
      at: '2030-01-01T11:00:00.000Z',
      reason: 'attempts exhausted: 3 infrastructure failures (agent lost)',
      attempts: [1, 2, 3].map((n) => ({ id: `at-${n}`, number: n, agent: `arm-${n}`, state: 'lost', reason: 'agent disconnected', error: null })),
      retry_url: apiPath.nodeRetry('b-1', 'compile'),
    });
    const out = deadLetterTable([d]);
    expect(out.split('\n')[1]!.split(/\s{2,}/)).toEqual(['b-1', 'compile', 'linux/arm64', '2030-01-01T11:00:00.000Z', '#1 arm-1 lost, #2 arm-2 lost, #3 arm-3 lost', 'attempts exhausted: 3 infrastructure failures (agent lost)']);
    expect(out).toContain('kiln retry BUILD NODE');
    expect(deadLetterTable([])).toBe('the dead-letter list is empty\n');
  });

  it('prints an error report readably: node, attempt, agent, exit, error, last log lines, provenance', () => {
    const out = errorReportText(report(), { lines: 5, colour: false });
    expect(out).toContain('build b-1 (hello): failed; created 2030-01-01T11:00:00.000Z, finished 2030-01-01T11:01:00.000Z');
    expect(out).toContain("node 'broken' (linux/amd64) failed on attempt 2 (at-2) on agent amd-1");
    expect(out).toContain('  exit code 3\n');
    expect(out).toContain('  step:  [2/2] RUN echo boom; exit 3');
    expect(out).toContain('  error: process "/bin/sh -c echo boom; exit 3" did not complete successfully: exit code: 3');
    expect(out).toContain('  last 5 log lines (45 more in the report; kiln error --json):\n    | line 46\n    | line 47\n    | line 48\n    | line 49\n    | line 50\n');
    expect(out).not.toContain('| line 45');
    expect(out).toContain(`  provenance: sha256:${'a'.repeat(64)} (kiln provenance b-1 broken)`);
    expect(out).toContain('skipped because of it: after, after-after');
    expect(out).toContain('kiln retry b-1 broken');
    expect(out).not.toContain('\x1b[');
    expect(errorReportText(report(), { lines: 5, colour: true })).toContain('\x1b[31m');
  });

  it('says when a failure was the infrastructure, a test, or happened before any attempt', () => {
    const base = report();
    const infra = { ...base.failures[0]!, node: 'flaky', exit_code: null, failed_step: null, infra: true, dead_letter: true, error: 'attempts exhausted: agent lost 3 times', provenance: null, provenance_url: null, log_tail: [] };
    const tested = { ...base.failures[0]!, node: 'tested', exit_code: null, test_exit_code: 7 };
    const early = { ...base.failures[0]!, node: 'early', attempt: null, attempt_id: null, agent: null, exit_code: null, error: "input 'bin': upstream output missing", log_tail: [], provenance: null, provenance_url: null };
    const out = errorReportText(report({ failures: [infra, tested, early] }), { lines: 30, colour: false });
    expect(out).toContain("node 'flaky' (linux/amd64) failed on attempt 2 (at-2) on agent amd-1\n  infrastructure failure, on the dead-letter list\n");
    expect(out).toContain('  error: attempts exhausted: agent lost 3 times\n  (no log)\n');
    expect(out).toContain('  provenance: none (the attempt did not finish a build)');
    expect(out).toContain("node 'tested' (linux/amd64) failed on attempt 2 (at-2) on agent amd-1\n  test exit code 7\n");
    expect(out).toContain("node 'early' (linux/amd64) failed before any attempt ran\n");
    expect(out).toContain('skipped because of them: after, after-after');
    expect(out).toContain('kiln retry b-1 flaky');
  });
});
