/**
 * The CLI's agent enrolment commands: `kiln tokens create --agent [--name N]
 * [--expires 24h] [--uses N]` (prints just the enrolment token), `kiln tokens list`
 * (never secrets; `--json`: one token per line), `kiln tokens revoke ID`, and
 * `kiln agents revoke NAME` / `kiln agents rotate NAME`. Each returns its exit code.
 */
import { z } from 'zod';
import { NAME_RE, NAME_RULE, apiPath, parseDuration } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { writeJsonLine, writeJsonLines } from './json-lines.js';

const TokenView = z.object({
  id: z.string(),
  name: z.string().nullable(),
  state: z.string(),
  expires_at: z.string(),
  uses: z.number(),
  used: z.number(),
  created_by: z.string(),
  created_at: z.string(),
  revoked_at: z.string().nullable(),
});
type TokenViewT = z.infer<typeof TokenView>;
const CreatedToken = TokenView.extend({ token: z.string() });
const TokenList = z.object({ items: z.array(TokenView) });

/** The longest expiry the coordinator takes. */
const MAX_EXPIRES_MS = 366 * 24 * 3600 * 1000;

export interface CreateTokenFlags {
  agent?: boolean;
  name?: string;
  expires?: string;
  uses?: string;
  json?: boolean;
}

const json = (body: unknown): RequestInit => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

export async function tokensCreateCommand(client: ApiClient, o: CreateTokenFlags, io: CliIO): Promise<number> {
  if (!o.agent) throw new CliError('say which kind of token: --agent (an agent enrolment token)', EXIT.USAGE);
  if (o.name !== undefined && !NAME_RE.test(o.name)) throw new CliError(`--name: '${o.name}' is not a valid agent name (${NAME_RULE})`, EXIT.USAGE);
  const expiresMs = o.expires === undefined ? 24 * 3600 * 1000 : parseDuration(o.expires);
  if (expiresMs === null || expiresMs < 1000 || expiresMs > MAX_EXPIRES_MS) throw new CliError(`--expires: '${o.expires}' is not a duration from 1s to 366d (e.g. 24h, 7d)`, EXIT.USAGE);
  const uses = o.uses === undefined ? 1 : /^[1-9][0-9]{0,4}$/.test(o.uses) ? Number(o.uses) : NaN;
  if (!(uses >= 1 && uses <= 10_000)) throw new CliError(`--uses: '${o.uses}' is not a number from 1 to 10000`, EXIT.USAGE);
  const made = await client.json(apiPath.tokens(), CreatedToken, json({ kind: 'agent', ...(o.name !== undefined ? { name: o.name } : {}), expires_in_s: Math.ceil(expiresMs / 1000), uses }));
  // Just the token on stdout (for `kiln tokens create --agent > FILE`); what it is on stderr.
  if (o.json) writeJsonLine(io.stdout, made);
  else io.stdout.write(`${made.token}\n`);
  io.stderr.write(`enrolment token ${made.id}${made.name ? ` for agent ${made.name}` : ''}: ${made.uses} use${made.uses === 1 ? '' : 's'}, expires ${made.expires_at}\n`);
  return EXIT.OK;
}

function tokensTable(items: readonly TokenViewT[]): string {
  if (items.length === 0) return 'no enrolment tokens\n';
  const rows = [['ID', 'AGENT', 'STATE', 'USED', 'EXPIRES', 'CREATED BY'], ...items.map((t) => [t.id, t.name ?? '(any)', t.state, `${t.used}/${t.uses}`, t.expires_at, t.created_by])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

export async function tokensListCommand(client: ApiClient, o: { json: boolean }, io: CliIO): Promise<number> {
  const list = await client.json(apiPath.tokens(), TokenList);
  if (o.json) writeJsonLines(io.stdout, list.items);
  else io.stdout.write(tokensTable(list.items));
  return EXIT.OK;
}

export async function tokensRevokeCommand(client: ApiClient, id: string, o: { json: boolean }, io: CliIO): Promise<number> {
  const t = await client.json(apiPath.token(id), TokenView, { method: 'DELETE' });
  if (o.json) writeJsonLine(io.stdout, t);
  else io.stdout.write(`enrolment token ${t.id} revoked\n`);
  return EXIT.OK;
}

export async function agentRevokeCommand(client: ApiClient, name: string, o: { json: boolean }, io: CliIO): Promise<number> {
  const r = await client.json(apiPath.agentRevoke(name), z.object({ name: z.string(), revoked: z.number() }), { method: 'POST' });
  if (o.json) writeJsonLine(io.stdout, r);
  else io.stdout.write(`agent ${r.name} revoked: its connection is closed, reconnects are refused and its running attempts are queued again\n`);
  return EXIT.OK;
}

export async function agentRotateCommand(client: ApiClient, name: string, o: { json: boolean }, io: CliIO): Promise<number> {
  const r = await client.json(apiPath.agentRotate(name), z.object({ name: z.string(), connected: z.boolean() }), { method: 'POST' });
  if (o.json) writeJsonLine(io.stdout, r);
  else io.stdout.write(r.connected ? `agent ${r.name} is rotating its credential (it reconnects with the new one; builds go on)\n` : `agent ${r.name} will rotate its credential when it next connects\n`);
  return EXIT.OK;
}
