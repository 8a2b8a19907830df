/**
 * The CLI's webhook commands (issue 13): `kiln webhooks` (the hooks: id, target, events,
 * counters, the latest attempt) and `kiln webhooks deliveries ID` (a hook's last attempts,
 * newest first: time, event, attempt, status or error, duration, outcome, the start of the
 * response). Reads `GET /api/v1/webhooks[/{id}/deliveries]`; the coordinator's own hooks
 * need an admin key.
 */
import { DeliveryList, WEBHOOK_ID_RE, WEBHOOK_ID_RULE, WebhookList, apiPath, type DeliveryViewT, type WebhookViewT } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { writeJsonLines } from './json-lines.js';

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

function outcomeText(d: DeliveryViewT | null): string {
  if (!d) return '-';
  return `${d.outcome} (${d.status ?? d.error ?? 'no answer'}, attempt ${d.attempt})`;
}

export function webhooksTable(items: readonly WebhookViewT[]): string {
  if (items.length === 0) return 'no webhooks (the coordinator configures them in webhooks.hooks; a build names its own in notify.webhooks)\n';
  const rows = [['ID', 'TARGET', 'EVENTS', 'QUEUED', 'DELIVERED', 'FAILED', 'DROPPED', 'LAST'], ...items.map((h) => [h.id, h.target, h.events.join(','), String(h.queued + h.in_flight), String(h.delivered), String(h.failed), String(h.dropped), outcomeText(h.last)])];
  return table(rows);
}

export function deliveriesTable(items: readonly DeliveryViewT[]): string {
  if (items.length === 0) return 'no deliveries yet\n';
  const rows = [
    ['AT', 'EVENT', 'STATE', 'ATTEMPT', 'STATUS', 'MS', 'OUTCOME', 'RESPONSE'],
    ...items.map((d) => [d.at, d.node === null ? `build ${d.build}` : `node ${d.build}/${d.node}`, d.state, String(d.attempt), d.status === null ? (d.error ?? '-') : String(d.status), String(d.duration_ms), d.outcome, JSON.stringify(d.response.slice(0, 60))]),
  ];
  return table(rows);
}

export async function webhooksCommand(client: ApiClient, opts: { json: boolean }, io: CliIO): Promise<number> {
  const { items } = await client.json(apiPath.webhooks(), WebhookList);
  if (opts.json) writeJsonLines(io.stdout, items);
  else io.stdout.write(webhooksTable(items));
  return EXIT.OK;
}

export async function webhookDeliveriesCommand(client: ApiClient, id: string, opts: { json: boolean }, io: CliIO): Promise<number> {
  if (!WEBHOOK_ID_RE.test(id)) throw new CliError(`invalid webhook id '${id.slice(0, 80)}' (${WEBHOOK_ID_RULE})`, EXIT.USAGE);
  const { items } = await client.json(apiPath.webhookDeliveries(id), DeliveryList);
  if (opts.json) writeJsonLines(io.stdout, items);
  else io.stdout.write(deliveriesTable(items));
  return EXIT.OK;
}
