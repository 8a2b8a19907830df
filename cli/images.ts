/**
 * `kiln images BUILD`: the images a build pushed to registries (each node's `image:` refs,
 * and the multi-platform indexes of fanned nodes) as a table of node, ref, digest,
 * platform and size; `--json` prints JSON Lines, one image per line.
 */
import { ImageList, apiPath } from '../shared/index.js';
import type { ApiClient } from './api-client.js';
import type { CliIO } from './commands.js';
import { formatBytes } from './commands.js';
import { EXIT } from './exit-codes.js';
import { writeJsonLines } from './json-lines.js';

export async function imagesCommand(client: ApiClient, buildId: string, opts: { json: boolean }, io: CliIO): Promise<number> {
  const list = await client.json(apiPath.buildImages(buildId), ImageList);
  if (opts.json) {
    writeJsonLines(io.stdout, list.items);
    return EXIT.OK;
  }
  if (list.items.length === 0) {
    io.stdout.write(`build ${buildId} has pushed no images (yet)\n`);
    return EXIT.OK;
  }
  const rows = [['NODE', 'REF', 'DIGEST', 'PLATFORM', 'SIZE'], ...list.items.map((i) => [i.node, i.ref, i.digest, i.index ? `index: ${i.platform}` : i.platform, formatBytes(i.size)])];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) io.stdout.write(`${r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')}\n`);
  return EXIT.OK;
}
