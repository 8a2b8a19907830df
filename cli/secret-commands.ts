/**
 * The CLI's build-secret commands (issue 12), for admins: `kiln secrets set NAME` (the
 * value from stdin, or `--from-file F`, taken byte for byte), `kiln secrets list` (names,
 * sizes, versions, times; never values) and `kiln secrets rm NAME`. The value is sent as
 * the body of `PUT /api/v1/secrets/NAME` and never printed.
 */
import { readFile, stat } from 'node:fs/promises';
import { MAX_SECRET_BYTES, SECRET_NAME_RE, SECRET_NAME_RULE, SecretList, SecretView, apiPath, errnoCode, type SecretViewT } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { writeJsonLine, writeJsonLines } from './json-lines.js';

/** Where `set` reads the value from when no file is given. */
export interface SecretInput {
  isTTY: boolean;
  chunks: AsyncIterable<Uint8Array>;
}

function checkName(name: string): void {
  if (!SECRET_NAME_RE.test(name)) throw new CliError(`invalid secret name '${name.slice(0, 80)}' (use ${SECRET_NAME_RULE})`, EXIT.USAGE);
}

async function readValue(opts: { fromFile?: string }, input: SecretInput): Promise<Buffer> {
  if (opts.fromFile !== undefined) {
    const s = await stat(opts.fromFile).catch((err: unknown) => {
      throw new CliError(`--from-file ${opts.fromFile}: ${errnoCode(err) ?? 'cannot be read'}`, EXIT.USAGE);
    });
    if (!s.isFile()) throw new CliError(`--from-file ${opts.fromFile}: not a file`, EXIT.USAGE);
    if (s.size > MAX_SECRET_BYTES) throw new CliError(`--from-file ${opts.fromFile}: ${s.size} bytes; a secret holds at most ${MAX_SECRET_BYTES}`, EXIT.USAGE);
    return readFile(opts.fromFile);
  }
  if (input.isTTY) throw new CliError('pipe the value in (e.g. printf %s "$TOKEN" | kiln secrets set NAME) or give --from-file FILE', EXIT.USAGE);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of input.chunks) {
    size += c.length;
    if (size > MAX_SECRET_BYTES) throw new CliError(`the value on stdin is larger than ${MAX_SECRET_BYTES} bytes (the most a secret holds)`, EXIT.USAGE);
    chunks.push(Buffer.from(c));
  }
  return Buffer.concat(chunks);
}

export async function secretSetCommand(client: ApiClient, name: string, opts: { fromFile?: string; json: boolean }, input: SecretInput, io: CliIO): Promise<number> {
  checkName(name);
  const value = await readValue(opts, input);
  if (value.length === 0) throw new CliError(`the value is empty (nothing on ${opts.fromFile !== undefined ? opts.fromFile : 'stdin'})`, EXIT.USAGE);
  const s = await client.json(apiPath.secret(name), SecretView, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: value });
  value.fill(0);
  if (opts.json) writeJsonLine(io.stdout, s);
  else io.stdout.write(`secret ${s.name} set (${s.size} bytes, version ${s.version})\n`);
  return EXIT.OK;
}

export function secretsTable(items: readonly SecretViewT[]): string {
  if (items.length === 0) return 'no secrets (set one with: kiln secrets set NAME < file)\n';
  const rows = [['NAME', 'SIZE', 'VERSION', 'UPDATED'], ...items.map((s) => [s.name, String(s.size), String(s.version), s.updated_at])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

export async function secretListCommand(client: ApiClient, opts: { json: boolean }, io: CliIO): Promise<number> {
  const { items } = await client.json(apiPath.secrets(), SecretList);
  if (opts.json) writeJsonLines(io.stdout, items);
  else io.stdout.write(secretsTable(items));
  return EXIT.OK;
}

export async function secretRemoveCommand(client: ApiClient, name: string, io: CliIO): Promise<number> {
  checkName(name);
  const res = await client.raw(apiPath.secret(name), { method: 'DELETE' });
  if (!res.ok) throw await client.failure(res);
  io.stdout.write(`secret ${name} removed\n`);
  return EXIT.OK;
}
