/**
 * The CLI's fleet commands: `kiln agents` (with control, health, breaker and load),
 * `kiln agents pause|resume|drain NAME`, `kiln pools`, `kiln dlq`, `kiln retry BUILD NODE`
 * and `kiln error BUILD`. Each returns its exit code (exit-codes.ts); `--json` prints the
 * API's JSON as JSON Lines instead of a table: one line per agent, pool or dead letter,
 * one line for a single object (an agent after pause/drain/resume, a retried build, an
 * error report).
 */
import {
  AGENT_CONTROL_ROUTES,
  AgentPage,
  AgentView,
  BuildView,
  DeadLetterList,
  ErrorReport,
  PoolList,
  apiPath,
  withQuery,
  type AgentControlAction,
  type AgentViewT,
  type ErrorReportT,
} from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import { followAndSummarize, type CliIO } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { writeJsonLine, writeJsonLines } from './json-lines.js';
import { useColour } from './render.js';
import { agentControlLine, agentsTable, deadLetterTable, errorReportText, groupsTable, poolsTable } from './render-fleet.js';

/** Every agent, following the list's cursor. */
async function allAgents(client: ApiClient): Promise<AgentViewT[]> {
  const out: AgentViewT[] = [];
  let cursor: string | null = null;
  do {
    const page: { items: AgentViewT[]; next_cursor: string | null } = await client.json(withQuery(apiPath.agents(), { limit: 500, cursor: cursor || undefined }), AgentPage);
    out.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

export async function agentsCommand(client: ApiClient, opts: { json: boolean }, io: CliIO): Promise<number> {
  const items = await allAgents(client);
  if (opts.json) writeJsonLines(io.stdout, items);
  else io.stdout.write(agentsTable(items, Date.now()));
  return EXIT.OK;
}

export type AgentAction = AgentControlAction;

export async function agentControlCommand(client: ApiClient, action: AgentAction, name: string, opts: { reason?: string; json: boolean }, io: CliIO): Promise<number> {
  if (opts.reason !== undefined && opts.reason.trim() === '') throw new CliError('--reason: give some text (or leave the option out)', EXIT.USAGE);
  if (opts.reason !== undefined && action === 'resume') throw new CliError('--reason is for pause and drain; resume clears the reason', EXIT.USAGE);
  const init: RequestInit = { method: 'POST' };
  if (opts.reason !== undefined) {
    init.headers = { 'content-type': 'application/json' };
    init.body = JSON.stringify({ reason: opts.reason });
  }
  const a = await client.json(AGENT_CONTROL_ROUTES[action].path(name), AgentView, init);
  if (opts.json) writeJsonLine(io.stdout, a);
  else io.stdout.write(agentControlLine(a));
  return EXIT.OK;
}

export async function poolsCommand(client: ApiClient, opts: { json: boolean }, io: CliIO): Promise<number> {
  const list = await client.json(apiPath.pools(), PoolList);
  if (opts.json) writeJsonLines(io.stdout, list.items);
  else io.stdout.write(poolsTable(list.items) + groupsTable(list.concurrency_groups ?? []));
  return EXIT.OK;
}

export async function deadLetterCommand(client: ApiClient, opts: { json: boolean }, io: CliIO): Promise<number> {
  const list = await client.json(apiPath.deadLetter(), DeadLetterList);
  if (opts.json) writeJsonLines(io.stdout, list.items);
  else io.stdout.write(deadLetterTable(list.items));
  return EXIT.OK;
}

/** Byte length of each node's stored log, so following after a retry starts with the new output. */
async function logOffsets(client: ApiClient, buildId: string): Promise<Map<string, number>> {
  const build = await client.json(apiPath.build(buildId), BuildView);
  const offsets = new Map<string, number>();
  for (const n of build.nodes) {
    if (n.attempts.length === 0) continue;
    const res = await client.raw(apiPath.nodeLogs(buildId, n.name));
    if (!res.ok) throw await client.failure(res);
    offsets.set(n.name, Buffer.from(await res.arrayBuffer()).length);
  }
  return offsets;
}

export async function retryCommand(client: ApiClient, buildId: string, node: string, opts: { follow: boolean; json: boolean }, io: CliIO): Promise<number> {
  // Measured before the retry, so nothing the new attempt writes can be missed.
  const from = opts.follow ? await logOffsets(client, buildId) : undefined;
  const build = await client.json(apiPath.nodeRetry(buildId, node), BuildView, { method: 'POST' });
  const n = build.nodes.find((x) => x.name === node);
  const again = build.nodes.filter((x) => x.name !== node && x.state === 'pending').map((x) => x.name);
  if (!opts.follow) {
    if (opts.json) {
      writeJsonLine(io.stdout, build);
    } else {
      io.stdout.write(`node '${node}' of build ${build.id} is ${n?.state ?? 'queued'} again${again.length ? `; waiting again: ${again.join(', ')}` : ''}\n`);
      io.stderr.write(`follow it: kiln logs -f ${build.id}\n`);
    }
    return EXIT.OK;
  }
  if (!opts.json) io.stderr.write(`node '${node}' of build ${build.id} queued again; following the build (Ctrl-C detaches)\n`);
  return followAndSummarize(client, build.id, null, opts.json, io, { ...(from ? { from } : {}), reached: true });
}

/**
 * `kiln error BUILD`: the build's error report. A build with no failed node has none:
 * that is said on stderr and the exit code is 1 (nothing on stdout, with or without
 * `--json`); an unknown build exits 2 like every other command.
 */
export async function errorCommand(client: ApiClient, buildId: string, opts: { json: boolean; lines: number }, io: CliIO): Promise<number> {
  const res = await client.raw(apiPath.buildError(buildId));
  if (res.status === 404) {
    // Unknown build (exit 2, from the build route's own 404), or one with no failed node.
    const build = await client.json(apiPath.build(buildId), BuildView);
    io.stderr.write(`build ${buildId} has no error report: no node failed (state: ${build.state})\n`);
    return EXIT.BUILD_FAILED;
  }
  const report = await parseReport(client, res, buildId);
  if (opts.json) writeJsonLine(io.stdout, report);
  else io.stdout.write(errorReportText(report, { lines: opts.lines, colour: useColour(io.stdout, io.env) }));
  return EXIT.OK;
}

async function parseReport(client: ApiClient, res: Response, buildId: string): Promise<ErrorReportT> {
  if (!res.ok) throw await client.failure(res);
  let body: unknown;
  try {
    body = JSON.parse(await res.text());
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    body = undefined;
  }
  const parsed = ErrorReport.safeParse(body);
  if (!parsed.success) throw new CliError(`unexpected response from the error report of ${buildId}: ${parsed.error.issues[0]?.message ?? 'invalid'}`, EXIT.USAGE);
  return parsed.data;
}
