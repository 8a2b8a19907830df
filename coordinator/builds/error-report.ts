/**
 * Error reports: why a build failed, in one JSON document an operator or a bot can read
 * without walking the API. For every failed node (not the ones skipped because of it):
 * the attempt, agent, exit status, error, the last 200 lines of its log, and links to the
 * log and the provenance record. The coordinator writes it to `builds/error-<id>.json`
 * when a failed build finishes and serves it at `GET /api/v1/builds/{id}/error`. With
 * tracing on it also names the build's trace id (`trace_id`), to find its spans.
 */
import { apiPath, type ErrorReportNodeT, type ErrorReportT } from '../../shared/index.js';
import type { AttemptKey, LogStorage } from '../logs/log-storage.js';
import { isInfraAttempt, type BuildRecord, type DeadLetterRecord, type NodeRecord } from '../state/records.js';

export const LOG_TAIL_LINES = 200;
/** Bytes read from the end of a log to find its last lines. */
const TAIL_BYTES = 256 * 1024;

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** The last `lines` lines of an attempt's log (a partial first line of the window is dropped), from whichever store holds it. */
export async function tailLines(logs: LogStorage, attempt: AttemptKey, lines = LOG_TAIL_LINES): Promise<string[]> {
  const { start, bytes } = await logs.tail(attempt, TAIL_BYTES);
  let text = bytes.toString('utf8');
  if (start > 0) text = text.slice(text.indexOf('\n') + 1);
  const all = text.split('\n');
  if (all[all.length - 1] === '') all.pop();
  return all.slice(-lines);
}

async function nodeReport(build: BuildRecord, node: NodeRecord, logs: LogStorage, deadLetter: ReadonlyMap<string, DeadLetterRecord>): Promise<ErrorReportNodeT> {
  const last = node.attempts[node.attempts.length - 1] ?? null;
  const logsUrl = apiPath.nodeLogs(build.id, node.name);
  return {
    node: node.name,
    platform: node.platform,
    attempt: last?.number ?? null,
    attempt_id: last?.id ?? null,
    agent: last?.agent ?? null,
    exit_code: last?.exit_code ?? null,
    test_exit_code: last?.test_exit_code ?? null,
    failed_step: last?.failed_step ?? null,
    error: node.reason ?? last?.error ?? null,
    infra: last ? isInfraAttempt(last) : false,
    log_tail: last ? await tailLines(logs, { buildId: build.id, node: node.name, number: last.number }) : [],
    logs_url: logsUrl,
    provenance: last?.provenance ?? null,
    provenance_url: last?.provenance ? apiPath.casBlob(last.provenance) : null,
    dead_letter: deadLetter.has(`${build.id}/${node.name}`),
  };
}

/** The report of a build with failed nodes, or null when none failed. */
export async function buildErrorReport(build: BuildRecord, logs: LogStorage, deadLetter: ReadonlyMap<string, DeadLetterRecord>, traceId?: string): Promise<ErrorReportT | null> {
  const failed = build.nodes.filter((n) => n.state === 'failed').sort((a, b) => (a.finished_at ?? 0) - (b.finished_at ?? 0));
  if (failed.length === 0) return null;
  const failures: ErrorReportNodeT[] = [];
  for (const n of failed) failures.push(await nodeReport(build, n, logs, deadLetter));
  return {
    format: 'kiln-error-report',
    version: 1,
    build_id: build.id,
    build_name: build.name,
    // the build's trace (issue 12), when the coordinator traces
    ...(traceId !== undefined ? { trace_id: traceId } : {}),
    state: build.state,
    created_at: new Date(build.created_at).toISOString(),
    finished_at: iso(build.finished_at),
    ...failures[0]!,
    skipped: build.nodes.filter((n) => n.state === 'skipped').map((n) => n.name),
    failures,
  };
}
