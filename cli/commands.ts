/**
 * The CLI's client commands: submit, logs, status, builds, cancel (the fleet's are in
 * fleet-commands.ts). Each returns its exit code (exit-codes.ts); output for people goes
 * to stdout, progress, hints and errors to stderr, and `--json` gives JSON Lines
 * (json-lines.ts): one object per list item, or exactly one line for a single object.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import {
  BuildPage,
  BuildView,
  CreatedBuild,
  apiPath,
  coerceError,
  decodeSpecBytes,
  isBuildTerminal,
  isNodeTerminal,
  MAX_SPEC_BYTES,
  SLOT_HOLDING_ATTEMPT_STATES,
  packDir,
  parseSpecText,
  validateSpec,
  withQuery,
  type BuildState,
  type BuildViewT,
  type FieldError,
  type FollowEvent,
  type NodeViewT,
  type PackedDir,
} from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import { CliError, EXIT, exitCodeForBuildState } from './exit-codes.js';
import { followBuildLogs } from './follow.js';
import { jsonLine, writeJsonLine, writeJsonLines } from './json-lines.js';
import { LinePrinter, buildSummary, useColour, type Output } from './render.js';

export interface CliIO {
  stdout: Output;
  stderr: Output;
  env: Record<string, string | undefined>;
  /** Registers a Ctrl-C handler; returns a function that removes it. */
  onInterrupt: (handler: () => void) => () => void;
}

function specError(path: string, errors: FieldError[]): CliError {
  return new CliError(`invalid spec ${path}: ${errors[0]?.message ?? 'invalid'}`, EXIT.USAGE, errors.length > 1 ? errors.map((e) => e.message) : []);
}

/** Packs and uploads each node's context directory; returns the spec with digests. */
async function resolveContexts(client: ApiClient, specPath: string, raw: Record<string, unknown>, io: CliIO): Promise<Record<string, unknown>> {
  const nodes = (raw.nodes ?? {}) as Record<string, Record<string, unknown>>;
  const packed = new Map<string, PackedDir>();
  const where = new Map<string, string>();
  const errors: FieldError[] = [];
  const out: Record<string, Record<string, unknown>> = {};
  try {
    for (const [name, node] of Object.entries(nodes)) {
      out[name] = { ...node };
      if (typeof node.context !== 'string') continue;
      const dir = resolve(dirname(specPath), node.context);
      const st = await stat(dir).catch(() => null);
      if (!st?.isDirectory()) {
        errors.push({ path: `nodes.${name}.context`, message: `node '${name}': field 'context': directory ${node.context} (${dir}) does not exist` });
        continue;
      }
      if (node.dockerfile_inline === undefined) {
        const df = typeof node.dockerfile === 'string' ? node.dockerfile : 'Dockerfile';
        const dfStat = await stat(join(dir, df)).catch(() => null);
        if (!dfStat?.isFile()) {
          errors.push({ path: `nodes.${name}.dockerfile`, message: `node '${name}': field 'dockerfile': ${df} not found in context ${node.context} (${dir})` });
          continue;
        }
      }
      let p = packed.get(dir);
      if (!p) {
        p = await packDir(dir);
        packed.set(dir, p);
      }
      where.set(p.digest, node.context);
      out[name]!.context = p.digest;
    }
    if (errors.length === 0 && packed.size > 0) await uploadMissing(client, [...packed.values()], where, io);
  } finally {
    for (const p of packed.values()) await p.cleanup();
  }
  if (errors.length > 0) throw specError(specPath, errors);
  return { ...raw, nodes: out };
}

/** Uploads the packed contexts the coordinator does not have yet (one find-missing call). */
async function uploadMissing(client: ApiClient, packs: PackedDir[], where: Map<string, string>, io: CliIO): Promise<void> {
  const { missing } = await client.json(apiPath.casFindMissing(), z.object({ missing: z.array(z.string()) }), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ digests: packs.map((p) => p.digest) }),
  });
  const want = new Set(missing);
  for (const p of packs) {
    if (!want.has(p.digest)) continue;
    io.stderr.write(`uploading context ${where.get(p.digest) ?? ''} (${p.files} files, ${formatBytes(p.size)}) as ${p.digest.slice(0, 19)}…\n`);
    const res = await client.raw(apiPath.casBlob(p.digest), {
      method: 'PUT',
      headers: { 'content-type': 'application/x-tar', 'content-length': String(p.size) },
      body: Readable.toWeb(createReadStream(p.path)) as ReadableStream,
      duplex: 'half',
    } as RequestInit);
    if (!res.ok) throw await client.failure(res);
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** The spec file's bytes, at most MAX_SPEC_BYTES + 1 of them (so an oversized file is refused, not read whole). */
async function readSpecBytes(specPath: string): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of createReadStream(specPath, { end: MAX_SPEC_BYTES })) chunks.push(chunk as Buffer);
  } catch (err) {
    throw new CliError(`cannot read spec ${specPath}: ${(err as NodeJS.ErrnoException).code ?? coerceError(err).message}`, EXIT.USAGE);
  }
  return Buffer.concat(chunks);
}

/** `transform`/`onBuild`: hooks for commands that submit a derived spec (kiln prewarm). */
export interface SubmitOptions {
  follow: boolean;
  json: boolean;
  reuse?: boolean;
  transform?: (raw: Record<string, unknown>) => Record<string, unknown>;
  onBuild?: (build: BuildViewT) => void;
}

export async function submitCommand(client: ApiClient, specPath: string, opts: SubmitOptions, io: CliIO): Promise<number> {
  // Decoded strictly: bytes that are not UTF-8 are refused with their offset, not replaced.
  const text = decodeSpecBytes(await readSpecBytes(specPath));
  if (!text.ok) throw specError(specPath, text.errors);
  const parsed = parseSpecText(text.value);
  if (!parsed.ok) throw specError(specPath, parsed.errors);
  if (opts.transform) {
    try {
      parsed.value = opts.transform(parsed.value as Record<string, unknown>);
    } catch (err) {
      throw new CliError(coerceError(err).message, EXIT.USAGE);
    }
  }
  // Validate locally first (the coordinator validates again, with its default platform).
  const local = validateSpec(parsed.value, { form: 'file', defaultPlatform: 'linux/amd64' });
  if (!local.ok) throw specError(specPath, local.errors);
  const body = await resolveContexts(client, specPath, parsed.value as Record<string, unknown>, io);
  if (body.name === undefined) body.name = local.value.name === 'build' ? (specPath.split('/').slice(-2, -1)[0] ?? 'build') : local.value.name;
  const created = await client.json(withQuery(apiPath.builds(), { reuse: opts.reuse === false ? 'false' : undefined }), CreatedBuild, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!opts.follow) {
    io.stdout.write(opts.json ? jsonLine(created) : `${created.id}\n`);
    return EXIT.OK;
  }
  if (!opts.json) io.stderr.write(`build ${created.id} submitted (${Object.keys(local.value.nodes).length} nodes); following its logs (Ctrl-C detaches)\n`);
  return followAndSummarize(client, created.id, null, opts.json, io, { reached: true, ...(opts.onBuild ? { onBuild: opts.onBuild } : {}) });
}

export interface FollowAndSummarizeOptions {
  /** Node log offsets to start at (what was printed before, e.g. before a retry). */
  from?: ReadonlyMap<string, number>;
  /** The coordinator already answered this command: ride out a failure to connect (followBuildLogs). */
  reached?: boolean;
  /** Called with the finished build's view, before the summary. */
  onBuild?: (build: BuildViewT) => void;
}

/**
 * Follows logs until the end, prints the summary, returns the exit code for the build.
 * With `json`: the FollowEvents (`log`, `status`, `end`) one per line, then
 * `{"type":"build","build":{...}}`.
 */
export async function followAndSummarize(client: ApiClient, buildId: string, node: string | null, json: boolean, io: CliIO, opts: FollowAndSummarizeOptions = {}): Promise<number> {
  const { from } = opts;
  const colour = !json && useColour(io.stdout, io.env);
  const printer = new LinePrinter(io.stdout, colour);
  const ac = new AbortController();
  const removeInterrupt = io.onInterrupt(() => ac.abort());
  let state: string;
  try {
    state = await followBuildLogs(client, {
      buildId,
      ...(node ? { node } : {}),
      ...(from ? { from } : {}),
      ...(opts.reached ? { reached: true } : {}),
      follow: true,
      signal: ac.signal,
      onEvent: (e: FollowEvent) => {
        if (json) return writeJsonLine(io.stdout, e);
        if (e.type === 'log') printer.log(e.node, e.text);
        else if (e.type === 'status' && ['skipped', 'cancelled', 'failed', 'success'].includes(e.state)) printer.note(e.node, `=> ${e.state}`);
      },
      onReconnect: (n, reason) => {
        if (!json && (n === 1 || n % 10 === 0)) io.stderr.write(`log stream interrupted (${reason}); resuming…\n`);
      },
      onNote: (note) => io.stderr.write(`${note}\n`),
    });
  } finally {
    removeInterrupt();
  }
  printer.flush();
  if (state === 'interrupted') {
    io.stderr.write(`detached; build ${buildId} keeps running. Re-attach: kiln logs -f ${buildId}   Cancel: kiln cancel ${buildId}\n`);
    return EXIT.INTERRUPTED;
  }
  const build = await client.json(apiPath.build(buildId), BuildView);
  opts.onBuild?.(build);
  if (json) {
    writeJsonLine(io.stdout, { type: 'build', build });
  } else {
    if (build.state !== 'success') await printFailures(client, build, io, colour);
    io.stdout.write(buildSummary(build, colour));
  }
  if (node) {
    const n = build.nodes.find((x) => x.name === node);
    return exitCodeForBuildState(n?.state ?? build.state);
  }
  return exitCodeForBuildState(build.state);
}

/** Replays the last lines of each failed node, between rulers, as BuildKit does. */
async function printFailures(client: ApiClient, build: BuildViewT, io: CliIO, colour: boolean): Promise<void> {
  for (const n of build.nodes.filter((x) => x.state === 'failed')) {
    const res = await client.raw(apiPath.nodeLogs(build.id, n.name));
    const text = res.ok ? await res.text() : '';
    const tail = text.split('\n').filter(Boolean).slice(-20);
    const red = (s: string) => (colour ? `\x1b[31m${s}\x1b[0m` : s);
    io.stdout.write(`${red(`------ ${n.name}: ${n.failed_step ?? 'failed'} ------`)}\n${tail.map((l) => `  ${l}`).join('\n')}\n${red('------')}\n`);
    if (n.error) io.stdout.write(`${n.name}: ${n.error}\n`);
  }
}

export async function logsCommand(client: ApiClient, buildId: string, node: string | undefined, opts: { follow: boolean; json: boolean }, io: CliIO): Promise<number> {
  if (opts.follow) return followAndSummarize(client, buildId, node ?? null, opts.json, io);
  if (opts.json) return storedLogEvents(client, buildId, node, io);
  const path = node ? apiPath.nodeLogs(buildId, node) : apiPath.buildLogs(buildId);
  const res = await client.raw(path);
  if (!res.ok) throw await client.failure(res);
  if (!res.body) return EXIT.OK;
  // One decoder for the whole body: a character split across chunks stays whole.
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) io.stdout.write(decoder.decode(chunk, { stream: true }));
  const rest = decoder.decode();
  if (rest) io.stdout.write(rest);
  return EXIT.OK;
}

/** followLogs' notion of done: terminal, and no attempt that could still write to the log. */
function nodeDone(n: NodeViewT): boolean {
  const last = n.attempts[n.attempts.length - 1];
  return isNodeTerminal(n.state) && (!last || !SLOT_HOLDING_ATTEMPT_STATES.has(last.state));
}

/**
 * `kiln logs BUILD [NODE] --json`: what is stored now, as the events `logs -f --json`
 * prints. Per node, in the build's order: `{"type":"status","node","state","attempt"}`,
 * then `{"type":"log","node","text"}` per line (text keeps its newline; the lines of a
 * node joined are its log). When the build (or NODE) was finished before its logs were
 * read, `{"type":"end","state"}` and `{"type":"build","build"}` follow, as with `-f`; a
 * running build's output simply stops after what is stored.
 */
async function storedLogEvents(client: ApiClient, buildId: string, node: string | undefined, io: CliIO): Promise<number> {
  const build = await client.json(apiPath.build(buildId), BuildView);
  const nodes = node === undefined ? build.nodes : build.nodes.filter((n) => n.name === node);
  if (node !== undefined && nodes.length === 0) throw new CliError(`build ${buildId} has no node '${node}'`, EXIT.USAGE);
  // Decided before reading: a node done now has its whole log stored.
  const done = nodes.every(nodeDone);
  for (const n of nodes) {
    writeJsonLine(io.stdout, { type: 'status', node: n.name, state: n.state, attempt: n.attempts.length } satisfies FollowEvent);
    const res = await client.raw(apiPath.nodeLogs(buildId, n.name));
    if (!res.ok) throw await client.failure(res);
    if (!res.body) continue;
    const decoder = new TextDecoder();
    let pending = '';
    const emit = (text: string, final: boolean) => {
      const all = pending + text;
      const cut = final ? all.length : all.lastIndexOf('\n') + 1;
      pending = all.slice(cut);
      const lines = all.slice(0, cut).split(/(?<=\n)/).filter((l) => l !== '');
      writeJsonLines(io.stdout, lines.map((l): FollowEvent => ({ type: 'log', node: n.name, text: l })));
    };
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) emit(decoder.decode(chunk, { stream: true }), false);
    emit(decoder.decode(), true);
  }
  if (done) {
    const state = node === undefined ? build.state : nodes[0]!.state;
    writeJsonLine(io.stdout, { type: 'end', state } satisfies FollowEvent);
    writeJsonLine(io.stdout, { type: 'build', build });
  }
  return EXIT.OK;
}

export async function statusCommand(client: ApiClient, buildId: string, opts: { json: boolean }, io: CliIO): Promise<number> {
  const build = await client.json(apiPath.build(buildId), BuildView);
  if (opts.json) writeJsonLine(io.stdout, build);
  else io.stdout.write(buildSummary(build, useColour(io.stdout, io.env)));
  return isBuildTerminal(build.state as BuildState) ? exitCodeForBuildState(build.state) : EXIT.OK;
}

/**
 * `kiln builds`: one page of builds, newest first (`--json`: one build summary per line).
 * When there are older builds, the command for the next page goes to stderr.
 */
export async function buildsCommand(client: ApiClient, opts: { json: boolean; limit: number; cursor?: string }, io: CliIO): Promise<number> {
  const page = await client.json(withQuery(apiPath.builds(), { limit: opts.limit, cursor: opts.cursor || undefined }), BuildPage);
  if (opts.json) {
    writeJsonLines(io.stdout, page.items);
  } else {
    if (page.items.length === 0) io.stdout.write(opts.cursor ? 'no older builds\n' : 'no builds yet\n');
    for (const b of page.items) {
      const counts = Object.entries(b.node_counts).map(([s, n]) => `${n} ${s}`).join(', ');
      io.stdout.write(`${b.id}  ${b.state.padEnd(9)}  ${b.created_at}  ${b.name}  (${counts})\n`);
    }
  }
  if (page.next_cursor) io.stderr.write(`older builds: kiln builds --limit ${opts.limit} --cursor ${page.next_cursor}${opts.json ? ' --json' : ''}\n`);
  return EXIT.OK;
}

export async function cancelCommand(client: ApiClient, buildId: string, opts: { json: boolean }, io: CliIO): Promise<number> {
  const build = await client.json(apiPath.buildCancel(buildId), BuildView, { method: 'POST' });
  io.stdout.write(opts.json ? jsonLine(build) : `cancelling ${build.id}: ${build.state}\n`);
  return EXIT.OK;
}

export const LimitOption = z.coerce.number().int().min(1).max(500);
