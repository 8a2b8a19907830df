/**
 * Terminal output of the CLI's fleet commands, as pure functions of the API's views:
 * aligned tables for `kiln agents`, `kiln pools` and `kiln dlq`, and the readable form of
 * a build's error report (`kiln error`). `now` is passed in so output is reproducible.
 */
import { formatDuration, type AgentViewT, type ConcurrencyGroupViewT, type DeadLetterViewT, type ErrorReportNodeT, type ErrorReportT, type PoolViewT } from '../shared/index.js';

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

function clip(s: string, max: number): string {
  const one = s.split('\n')[0]!;
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

function mib(n: number | null): string {
  if (n === null) return '?';
  return n >= 1024 ? `${(n / 1024).toFixed(1)}G` : `${n}M`;
}

function ago(iso: string, now: number): string {
  return formatDuration(Math.max(0, now - Date.parse(iso)));
}

export function breakerText(b: AgentViewT['breaker'], now: number): string {
  if (b.state === 'closed') return b.recent_failures > 0 ? `closed (${b.recent_failures} recent)` : 'closed';
  if (b.state === 'half_open') return 'half-open';
  return b.until ? `open ${formatDuration(Math.max(0, Date.parse(b.until) - now))}` : 'open';
}

function loadText(a: AgentViewT): string {
  const m = a.metrics;
  if (!m || m.load1 === null) return '-';
  return `${m.load1.toFixed(2)}/${m.cpus ?? '?'}`;
}

function memText(a: AgentViewT): string {
  const m = a.metrics;
  if (!m || m.mem_total_mib === null) return '-';
  return `${mib(m.mem_used_mib)}/${mib(m.mem_total_mib)}`;
}

function diskText(a: AgentViewT): string {
  const m = a.metrics;
  return m && m.disk_free_mib !== null ? mib(m.disk_free_mib) : '-';
}

function gpusText(a: AgentViewT): string {
  if (a.gpus.length === 0) return '-';
  const busy = new Set(a.gpus_in_use.flatMap((u) => u.gpus)).size;
  return `${busy}/${a.gpus.length}`;
}

/** `kiln agents`: one row per agent, then a note for each paused/draining/unhealthy one. */
export function agentsTable(agents: AgentViewT[], now: number): string {
  if (agents.length === 0) return 'no agents have connected\n';
  const rows = agents.map((a) => [
    a.name,
    a.state,
    a.control,
    a.health.accepting ? 'ok' : 'unhealthy',
    breakerText(a.breaker, now),
    `${a.running.length}/${a.max_jobs}`,
    loadText(a),
    memText(a),
    diskText(a),
    gpusText(a),
    a.platforms.map((p) => `${p.platform}${p.emulated ? '(emulated)' : ''}`).join(',') || '-',
    Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-',
    `${ago(a.last_seen_at, now)} ago`,
  ]);
  let out = table(['NAME', 'STATE', 'CONTROL', 'HEALTH', 'BREAKER', 'JOBS', 'LOAD', 'MEM', 'DISK-FREE', 'GPUS', 'PLATFORMS', 'LABELS', 'SEEN'], rows);
  for (const a of agents) {
    if (a.control !== 'active') out += `${a.name}: ${a.control}${a.control_at ? ` since ${a.control_at}` : ''}${a.control_reason ? `: ${clip(a.control_reason, 200)}` : ''}\n`;
    if (!a.health.accepting) out += `${a.name}: not accepting work: ${clip(a.health.problem ?? 'no reason given', 200)}\n`;
  }
  return out;
}

/** One line after `kiln agents pause|resume|drain`. */
export function agentControlLine(a: AgentViewT): string {
  const what = a.control === 'active' ? 'active (takes work again)' : a.control === 'paused' ? 'paused (no new work; running attempts go on)' : 'draining (running attempts finish; no new work until resumed)';
  const running = a.running.length > 0 ? `; ${a.running.length} attempt${a.running.length === 1 ? '' : 's'} running` : '';
  return `agent ${a.name}: ${what}${a.control_reason ? ` — ${clip(a.control_reason, 200)}` : ''}${running}\n`;
}

function msText(ms: number | null): string {
  return ms === null ? '-' : formatDuration(ms);
}

/** `kiln pools`. */
export function poolsTable(pools: PoolViewT[]): string {
  if (pools.length === 0) return 'no pools: no agent has connected and no node is waiting\n';
  const rows = pools.map((p) => {
    const off = [
      p.agents.paused ? `${p.agents.paused} paused` : '',
      p.agents.draining ? `${p.agents.draining} draining` : '',
      p.agents.unhealthy ? `${p.agents.unhealthy} unhealthy` : '',
      p.agents.breaker_open ? `${p.agents.breaker_open} breaker open` : '',
    ].filter(Boolean);
    return [
      p.name,
      `${p.agents.connected} (${p.agents.native} native, ${p.agents.emulated} emulated)`,
      off.join(', ') || '-',
      `${p.slots.busy}/${p.slots.total}`,
      p.gpus.total > 0 ? `${p.gpus.busy}/${p.gpus.total}` : '-',
      String(p.queued),
      String(p.running),
      msText(p.oldest_wait_ms),
      p.wait_p50_ms === null ? '-' : `${msText(p.wait_p50_ms)}/${msText(p.wait_p95_ms)}`,
      String(p.dispatched),
      p.cache ? `${p.cache.hits}/${p.cache.misses}${p.cache.push_failures ? ` (${p.cache.push_failures} push failed)` : ''}` : '-',
    ];
  });
  return table(['POOL', 'AGENTS', 'UNAVAILABLE', 'SLOTS', 'GPUS', 'QUEUED', 'RUNNING', 'OLDEST-WAIT', 'WAIT-P50/P95', 'DISPATCHED', 'CACHE-HIT/MISS'], rows);
}

/** `kiln pools`, after the pools: the concurrency groups (issue 11), or nothing when there are none. */
export function groupsTable(groups: ConcurrencyGroupViewT[]): string {
  if (groups.length === 0) return '';
  const rows = groups.map((g) => [g.name, g.limit === null ? 'per build' : String(g.limit), String(g.running), g.waiting > 0 ? `${g.waiting} (full)` : '0']);
  return `\n${table(['CONCURRENCY-GROUP', 'LIMIT', 'RUNNING', 'WAITING'], rows)}`;
}

/** `kiln dlq`. */
export function deadLetterTable(items: DeadLetterViewT[]): string {
  if (items.length === 0) return 'the dead-letter list is empty\n';
  const rows = items.map((d) => [
    d.build_id,
    d.node,
    d.platform,
    d.at,
    d.attempts.map((a) => `#${a.number} ${a.agent} ${a.state}`).join(', ') || '-',
    clip(d.reason, 160),
  ]);
  return `${table(['BUILD', 'NODE', 'PLATFORM', 'AT', 'ATTEMPTS', 'REASON'], rows)}run one again: kiln retry BUILD NODE\n`;
}

export interface ErrorReportOptions {
  /** Log lines shown per failed node (the report holds up to 200). */
  lines: number;
  colour: boolean;
}

function failureText(r: ErrorReportT, f: ErrorReportNodeT, opts: ErrorReportOptions): string {
  const red = (s: string) => (opts.colour ? `\x1b[31m${s}\x1b[0m` : s);
  const dim = (s: string) => (opts.colour ? `\x1b[2m${s}\x1b[0m` : s);
  const out: string[] = [];
  const where = f.attempt === null ? 'before any attempt ran' : `on attempt ${f.attempt}${f.attempt_id ? ` (${f.attempt_id})` : ''}${f.agent ? ` on agent ${f.agent}` : ''}`;
  out.push(red(`node '${f.node}' (${f.platform}) failed ${where}`));
  const status: string[] = [];
  if (f.exit_code !== null) status.push(`exit code ${f.exit_code}`);
  if (f.test_exit_code !== null) status.push(`test exit code ${f.test_exit_code}`);
  if (f.infra) status.push('infrastructure failure');
  if (f.dead_letter) status.push('on the dead-letter list');
  if (status.length) out.push(`  ${status.join(', ')}`);
  if (f.failed_step) out.push(`  step:  ${clip(f.failed_step, 400)}`);
  if (f.error) out.push(...f.error.split('\n').slice(0, 20).map((l, i) => (i === 0 ? `  error: ${l}` : `         ${l}`)));
  const tail = f.log_tail.slice(-opts.lines);
  if (tail.length > 0) {
    const earlier = f.log_tail.length - tail.length;
    out.push(`  last ${tail.length} log line${tail.length === 1 ? '' : 's'}${earlier > 0 ? ` (${earlier} more in the report; kiln error --json)` : ''}:`);
    out.push(...tail.map((l) => dim(`    | ${l}`)));
  } else {
    out.push('  (no log)');
  }
  out.push(`  full log:   kiln logs ${r.build_id} ${f.node}`);
  out.push(f.provenance ? `  provenance: ${f.provenance} (kiln provenance ${r.build_id} ${f.node})` : '  provenance: none (the attempt did not finish a build)');
  return out.join('\n');
}

/** `kiln error BUILD`: the report for people. */
export function errorReportText(r: ErrorReportT, opts: ErrorReportOptions): string {
  const head = `build ${r.build_id} (${r.build_name}): ${r.state}; created ${r.created_at}${r.finished_at ? `, finished ${r.finished_at}` : ''}`;
  const failures = r.failures.length > 0 ? r.failures : [r];
  const parts = [head, ...failures.map((f) => failureText(r, f, opts))];
  if (r.skipped.length > 0) parts.push(`skipped because of ${failures.length === 1 ? 'it' : 'them'}: ${r.skipped.join(', ')}`);
  parts.push(`run a node again: kiln retry ${r.build_id} ${failures[0]!.node}`);
  return `${parts.join('\n\n')}\n`;
}
