/**
 * The CLI's access commands: `kiln keys create|list|revoke` (API keys with scopes) and
 * `kiln audit` (the audit log, newest first). `keys create` prints only the key on
 * stdout, so `kiln keys create --scope read > ci.key` stores it; nothing else ever
 * prints a key. `--json` prints the API's JSON as JSON Lines.
 */
import { AuditList, CreatedKey, KEY_SCOPES, KeyList, KeyView, apiPath, parseDuration, withQuery, type AuditEntryViewT, type KeyViewT } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { writeJsonLine, writeJsonLines } from './json-lines.js';
import { table } from './render-fleet.js';

const MAX_EXPIRY_S = 3650 * 86_400;

/** `read,submit` (repeatable) to a scope list; unknown scopes are a usage error naming them. */
export function scopesOption(values: readonly string[]): string[] {
  const out = new Set<string>();
  for (const v of values.flatMap((x) => x.split(','))) {
    const s = v.trim();
    if (s === '') continue;
    if (!(KEY_SCOPES as readonly string[]).includes(s)) throw new CliError(`--scope: unknown scope '${s.slice(0, 40)}' (scopes: ${KEY_SCOPES.join(', ')})`, EXIT.USAGE);
    out.add(s);
  }
  if (out.size === 0) throw new CliError(`--scope: give at least one scope (${KEY_SCOPES.join(', ')})`, EXIT.USAGE);
  return [...out];
}

/** `90d`, `24h`, `30s` to whole seconds (1s..3650d). */
export function expiresOption(text: string): number {
  const ms = parseDuration(text);
  if (ms === null || ms < 1000 || ms > MAX_EXPIRY_S * 1000) throw new CliError(`--expires: '${text.slice(0, 40)}' is not a duration from 1s to 3650d (e.g. 90d, 24h)`, EXIT.USAGE);
  return Math.round(ms / 1000);
}

export async function keysCreateCommand(client: ApiClient, opts: { scopes: string[]; name?: string; expiresS?: number; json: boolean }, io: CliIO): Promise<number> {
  const body = { scopes: opts.scopes, ...(opts.name !== undefined ? { name: opts.name } : {}), ...(opts.expiresS !== undefined ? { expires_in_s: opts.expiresS } : {}) };
  const created = await client.json(apiPath.keys(), CreatedKey, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (opts.json) writeJsonLine(io.stdout, created);
  else {
    io.stdout.write(`${created.secret}\n`);
    io.stderr.write(`created key ${created.key.name} (${created.key.id}): ${created.key.scopes.join(', ')}${created.key.expires_at ? `, expires ${created.key.expires_at}` : ''}; it is shown only now\n`);
  }
  return EXIT.OK;
}

function keysTable(keys: KeyViewT[]): string {
  if (keys.length === 0) return 'no API keys\n';
  return table(
    ['ID', 'NAME', 'SCOPES', 'STATE', 'CREATED', 'EXPIRES', 'CREATED BY'],
    keys.map((k) => [k.id, k.name, k.scopes.join(','), k.legacy ? 'active (legacy token file)' : k.state, k.created_at.slice(0, 19), k.expires_at?.slice(0, 19) ?? 'never', k.created_by]),
  );
}

export async function keysListCommand(client: ApiClient, opts: { json: boolean }, io: CliIO): Promise<number> {
  const list = await client.json(apiPath.keys(), KeyList);
  if (opts.json) writeJsonLines(io.stdout, list.items);
  else io.stdout.write(keysTable(list.items));
  return EXIT.OK;
}

export async function keysRevokeCommand(client: ApiClient, idOrName: string, opts: { json: boolean }, io: CliIO): Promise<number> {
  const k = await client.json(apiPath.key(idOrName), KeyView, { method: 'DELETE' });
  if (opts.json) writeJsonLine(io.stdout, k);
  else io.stdout.write(`revoked key ${k.name} (${k.id})\n`);
  return EXIT.OK;
}

function auditTable(items: AuditEntryViewT[]): string {
  if (items.length === 0) return 'no audit entries\n';
  return table(
    ['TIME', 'ACTOR', 'ACTION', 'TARGET', 'OUTCOME', 'REMOTE', 'DETAIL'],
    items.map((e) => [e.time.slice(0, 23), e.actor, e.action, e.target ?? '-', e.outcome, e.remote ?? '-', (e.detail ?? '').slice(0, 160)]),
  );
}

export async function auditCommand(client: ApiClient, opts: { json: boolean; limit: number; actor?: string; action?: string }, io: CliIO): Promise<number> {
  const list = await client.json(withQuery(apiPath.audit(), { limit: opts.limit, actor: opts.actor, action: opts.action }), AuditList);
  if (opts.json) writeJsonLines(io.stdout, list.items);
  else io.stdout.write(auditTable(list.items));
  return EXIT.OK;
}
