/**
 * The CLI's artifact commands: `kiln artifacts BUILD` lists a build's artifacts,
 * `kiln artifacts get BUILD NODE OUTPUT -o DIR` downloads one, verifies its digest and
 * size, and extracts it into DIR (contained: nothing is written outside DIR, whatever the
 * archive holds), `kiln provenance BUILD NODE` prints the provenance record of a node's
 * result, and `kiln pin|unpin BUILD` keeps a build's artifacts past retention or not.
 * `--json` is JSON Lines: one line per artifact for the list, one line otherwise.
 */
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ArtifactPage, BuildView, apiPath, coerceError, extractTarContained, hasherDigest, newHasher, type ArtifactViewT } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { formatBytes } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { jsonLine, writeJsonLine, writeJsonLines } from './json-lines.js';

export async function artifactsListCommand(client: ApiClient, buildId: string, opts: { json: boolean }, io: CliIO): Promise<number> {
  const page = await client.json(apiPath.buildArtifacts(buildId), ArtifactPage);
  // The route lists every artifact of a build (next_cursor is null); should that change, say so.
  if (page.next_cursor) io.stderr.write(`the coordinator listed only the first ${page.items.length} artifacts of ${buildId}\n`);
  if (opts.json) {
    writeJsonLines(io.stdout, page.items);
    return EXIT.OK;
  }
  if (page.items.length === 0) io.stdout.write(`build ${buildId} has no artifacts (yet)\n`);
  for (const a of page.items) {
    const expiry = a.url === null ? 'expired' : a.expires_at ? `expires ${a.expires_at}` : 'kept (pinned or running)';
    io.stdout.write(`${a.node}  ${a.name}  ${a.digest}  ${formatBytes(a.size_bytes)}  ${expiry}${a.reused ? '  (reused)' : ''}\n`);
  }
  return EXIT.OK;
}

async function findArtifact(client: ApiClient, buildId: string, node: string, output: string): Promise<ArtifactViewT> {
  const page = await client.json(apiPath.buildArtifacts(buildId), ArtifactPage);
  const a = page.items.find((x) => x.node === node && x.name === output);
  if (!a) {
    const have = page.items.map((x) => `${x.node}.${x.name}`);
    throw new CliError(`build ${buildId} has no artifact ${node}.${output}${have.length ? ` (it has: ${have.join(', ')})` : ''}`, EXIT.USAGE);
  }
  return a;
}

/** Downloads `a` to a temp file, checking size and sha256 while writing; returns the path. */
async function download(client: ApiClient, a: ArtifactViewT, dir: string): Promise<string> {
  if (a.url === null) throw new CliError(`artifact ${a.node}.${a.name} (${a.digest}) has expired and was deleted`, EXIT.BUILD_FAILED);
  // The coordinator's own CAS route needs the token; a presigned link must not get it.
  const ownPath = client.ownPath(a.url);
  const own = ownPath !== null;
  let res: Response;
  try {
    res = own ? await client.raw(ownPath) : await fetch(a.url);
  } catch (err) {
    throw new CliError(`downloading ${a.digest} failed: ${coerceError(err).message}`, EXIT.USAGE);
  }
  if (!res.ok || !res.body) throw own ? await client.failure(res) : new CliError(`downloading ${a.digest} from ${a.url} failed: HTTP ${res.status}`, EXIT.USAGE);
  const path = join(dir, 'artifact.tar');
  const fh = await open(path, 'w');
  const hash = newHasher();
  let size = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      if (size > a.size_bytes) throw new CliError(`${a.digest}: got more than the ${a.size_bytes} bytes the artifact has; discarded`, EXIT.USAGE);
      hash.update(chunk);
      await fh.write(chunk);
    }
  } finally {
    await fh.close();
  }
  const got = hasherDigest(hash);
  if (size !== a.size_bytes || got !== a.digest) throw new CliError(`downloaded ${size} bytes hash to ${got}, not ${a.digest} (${a.size_bytes} bytes); nothing was extracted`, EXIT.USAGE);
  return path;
}

export async function artifactsGetCommand(client: ApiClient, buildId: string, node: string, output: string, opts: { out: string; json: boolean }, io: CliIO): Promise<number> {
  const a = await findArtifact(client, buildId, node, output);
  const tmp = await mkdtemp(join(tmpdir(), 'kiln-artifact-'));
  try {
    const tar = await download(client, a, tmp);
    const target = resolve(opts.out);
    await mkdir(target, { recursive: true });
    let r;
    try {
      r = await extractTarContained(createReadStream(tar), target);
    } catch (err) {
      throw new CliError(`extracting ${a.digest} into ${target} failed: ${coerceError(err).message}`, EXIT.USAGE);
    }
    if (opts.json) io.stdout.write(jsonLine({ ...a, extracted_to: target, files: r.files, bytes: r.bytes }));
    else io.stdout.write(`${a.node}.${a.name} ${a.digest}: ${r.files} files, ${formatBytes(r.bytes)} extracted to ${target}\n`);
    return EXIT.OK;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The record, indented for people; with `json`, as one compact line. */
export async function provenanceCommand(client: ApiClient, buildId: string, node: string, opts: { json: boolean }, io: CliIO): Promise<number> {
  const build = await client.json(apiPath.build(buildId), BuildView);
  const n = build.nodes.find((x) => x.name === node);
  if (!n) throw new CliError(`build ${buildId} has no node '${node}'`, EXIT.USAGE);
  const digest = n.provenance ?? n.attempts[n.attempts.length - 1]?.provenance ?? null;
  if (!digest) throw new CliError(`node '${node}' of build ${buildId} has no provenance record (it did not finish a build)`, EXIT.USAGE);
  const res = await client.raw(apiPath.casBlob(digest));
  if (!res.ok) throw await client.failure(res);
  const bytes = Buffer.from(await res.arrayBuffer());
  const hash = newHasher().update(bytes);
  if (hasherDigest(hash) !== digest) throw new CliError(`provenance record ${digest} does not match its digest`, EXIT.USAGE);
  let record: unknown;
  try {
    record = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new CliError(`provenance record ${digest} is not JSON`, EXIT.USAGE);
  }
  if (opts.json) writeJsonLine(io.stdout, record);
  else io.stdout.write(`${JSON.stringify(record, null, 2)}\n`);
  return EXIT.OK;
}

/** `kiln pin|unpin BUILD`; with `json`, the build as one line. */
export async function pinCommand(client: ApiClient, buildId: string, pinned: boolean, opts: { json: boolean }, io: CliIO): Promise<number> {
  const b = await client.json(apiPath.buildPin(buildId), BuildView, { method: pinned ? 'POST' : 'DELETE' });
  if (opts.json) writeJsonLine(io.stdout, b);
  else io.stdout.write(`${b.id}: ${b.pinned ? 'pinned (artifacts kept until unpinned)' : 'unpinned (artifacts expire with the retention period)'}\n`);
  return EXIT.OK;
}
