/**
 * `kiln images BUILD`: the images a build pushed to registries (each node's `image:` refs,
 * and the multi-platform indexes of fanned nodes) as a table of node, ref, digest,
 * platform, size and SBOM (the digest of the image's CycloneDX SBOM in the CAS; for an
 * index, how many platform SBOMs it lists); `--json` prints JSON Lines, one image per line.
 *
 * `kiln images BUILD --sbom REF [--platform P] [-o FILE]` prints (or writes) the SBOM of
 * the image pushed at REF, fetched from the coordinator's CAS and checked against its
 * digest; for an index ref, `--platform` picks the platform image.
 */
import { writeFile } from 'node:fs/promises';
import { ImageList, apiPath, hasherDigest, newHasher, type ImageViewT } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { formatBytes } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { writeJsonLines } from './json-lines.js';

/** Largest SBOM the CLI reads (the agent bounds its packages well below this). */
const MAX_SBOM_BYTES = 512 * 1024 * 1024;

function sbomCell(i: ImageViewT): string {
  if (i.platform_sboms) return `${i.platform_sboms.filter((p) => p.sbom !== null).length} platform SBOMs`;
  return i.sbom ?? '-';
}

export async function imagesCommand(client: ApiClient, buildId: string, opts: { json: boolean; sbom?: string; platform?: string; out?: string }, io: CliIO): Promise<number> {
  const list = await client.json(apiPath.buildImages(buildId), ImageList);
  if (opts.sbom !== undefined) return sbomCommand(client, buildId, list.items, { ...opts, sbom: opts.sbom }, io);
  if (opts.json) {
    writeJsonLines(io.stdout, list.items);
    return EXIT.OK;
  }
  if (list.items.length === 0) {
    io.stdout.write(`build ${buildId} has pushed no images (yet)\n`);
    return EXIT.OK;
  }
  const rows = [['NODE', 'REF', 'DIGEST', 'PLATFORM', 'SIZE', 'SBOM'], ...list.items.map((i) => [i.node, i.ref, i.digest, i.index ? `index: ${i.platform}` : i.platform, formatBytes(i.size), sbomCell(i)])];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) io.stdout.write(`${r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')}\n`);
  return EXIT.OK;
}

/** The SBOM digest of the image at `ref` (an index's: the `platform` one). */
function sbomDigest(buildId: string, items: readonly ImageViewT[], ref: string, platform: string | undefined): string {
  const row = items.find((i) => i.ref === ref);
  if (!row) {
    const have = items.map((i) => i.ref);
    throw new CliError(`build ${buildId} pushed no image at ${ref}${have.length ? ` (it pushed: ${have.join(', ')})` : ''}`, EXIT.USAGE);
  }
  if (row.platform_sboms) {
    const platforms = row.platform_sboms.map((p) => p.platform);
    if (platform === undefined) throw new CliError(`${ref} is a multi-platform index: choose one of its platforms with --platform (${platforms.join(', ')})`, EXIT.USAGE);
    const p = row.platform_sboms.find((x) => x.platform === platform);
    if (!p) throw new CliError(`the index ${ref} has no platform ${platform} (it has: ${platforms.join(', ')})`, EXIT.USAGE);
    if (p.sbom === null) throw new CliError(`the ${platform} image of ${ref} has no SBOM (it could not be made: see that platform node's log)`, EXIT.BUILD_FAILED);
    return p.sbom;
  }
  if (row.sbom === null) throw new CliError(`the image at ${ref} has no SBOM (it could not be made: see node '${row.node}''s log)`, EXIT.BUILD_FAILED);
  return row.sbom;
}

async function sbomCommand(client: ApiClient, buildId: string, items: readonly ImageViewT[], opts: { sbom: string; platform?: string; out?: string }, io: CliIO): Promise<number> {
  const digest = sbomDigest(buildId, items, opts.sbom, opts.platform);
  const res = await client.raw(apiPath.casBlob(digest));
  if (!res.ok || !res.body) throw await client.failure(res);
  const chunks: Buffer[] = [];
  let size = 0;
  const hash = newHasher();
  for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
    size += c.length;
    if (size > MAX_SBOM_BYTES) throw new CliError(`SBOM ${digest} is larger than ${MAX_SBOM_BYTES} bytes; not read`, EXIT.USAGE);
    hash.update(c);
    chunks.push(Buffer.from(c));
  }
  if (hasherDigest(hash) !== digest) throw new CliError(`SBOM ${digest} from the coordinator does not match its digest`, EXIT.USAGE);
  const bytes = Buffer.concat(chunks);
  if (opts.out !== undefined) {
    await writeFile(opts.out, bytes);
    io.stderr.write(`SBOM of ${opts.sbom}${opts.platform ? ` (${opts.platform})` : ''}: ${digest}, ${formatBytes(size)} written to ${opts.out}\n`);
  } else {
    const text = bytes.toString('utf8');
    io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }
  return EXIT.OK;
}
