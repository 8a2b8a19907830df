/**
 * `kiln cluster` (issue 14): the coordinators sharing the state — the leader, the fencing
 * epoch and a table of every coordinator seen (URL, role, last seen) — from
 * GET /api/v1/cluster, which every coordinator answers. `--json` prints the view as one
 * JSON line. `clusterText` is a pure function of the view (and `now`), for tests.
 */
import { ClusterView, apiPath, formatDuration, type ClusterViewT } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { EXIT } from './exit-codes.js';
import { writeJsonLine } from './json-lines.js';
import { table } from './render-fleet.js';

function ago(iso: string, now: number): string {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? iso : `${formatDuration(Math.max(0, now - t))} ago`;
}

/** The readable form: two header lines, then the coordinators' table. */
export function clusterText(view: ClusterViewT, now: number): string {
  const head = `leader: ${view.leader ?? 'none (no coordinator holds the lease: an election is under way)'}\nepoch:  ${view.epoch}\n`;
  if (view.coordinators.length === 0) return `${head}no coordinator has been seen recently\n`;
  const rows = view.coordinators.map((c) => [c.url, c.role, ago(c.last_seen, now)]);
  return `${head}\n${table(['COORDINATOR', 'ROLE', 'LAST-SEEN'], rows)}`;
}

export async function clusterCommand(client: ApiClient, opts: { json: boolean }, io: CliIO): Promise<number> {
  const view = await client.json(apiPath.cluster(), ClusterView);
  if (opts.json) writeJsonLine(io.stdout, view);
  else io.stdout.write(clusterText(view, Date.now()));
  return EXIT.OK;
}
