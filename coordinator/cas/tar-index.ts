/**
 * Reads the entry names of a tar blob (a build context), so the coordinator can check at
 * submit time that a node's Dockerfile is in its context. Results are cached per digest:
 * a digest's content never changes.
 */
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';
import type { Readable } from 'node:stream';

const cache = new Map<string, Set<string>>();

export function normalizeTarPath(name: string): string {
  let p = name.replace(/\\/g, '/');
  while (p.startsWith('./')) p = p.slice(2);
  p = p.replace(/^\/+/, '');
  return p.replace(/\/+$/, '');
}

/** Entry paths (normalised, no leading ./) of the tar read from `open()`. */
export async function tarEntries(key: string, open: () => Readable | Promise<Readable>): Promise<Set<string>> {
  const hit = cache.get(key);
  if (hit) return hit;
  const names = new Set<string>();
  const ex = extract();
  ex.on('entry', (header, stream, next) => {
    names.add(normalizeTarPath(header.name));
    stream.on('end', next);
    stream.resume();
  });
  await pipeline(await open(), ex);
  if (cache.size > 1000) cache.clear();
  cache.set(key, names);
  return names;
}
