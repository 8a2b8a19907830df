/**
 * `kiln prewarm SPEC [--pool PLATFORM]`: builds a spec's nodes so the first real build hits
 * the fleet-wide layer cache. With a cache registry on the coordinator (`cache.registry`),
 * one build per node and platform is enough: every agent of the pool imports the cache ref
 * it exports. So prewarm submits the spec itself (same build name, hence the same cache
 * refs), result reuse off (every node really builds), the layer cache in `readwrite` for
 * every node that does not turn it `off`, follows it to the end and prints the usual summary
 * with each node's cache figures.
 *
 * `--pool PLATFORM` prewarms only the nodes of that platform (nodes naming no platform are
 * left out then), with the upstream nodes they need (`needs`, inputs `from`).
 *
 * Without a cache registry the coordinator builds each node once, on the agent it picks,
 * whose engine alone is warm then; prewarm says so (it cannot place a node on every agent).
 */
import type { ApiClient } from './api-client.js';
import { submitCommand, type CliIO } from './commands.js';

type RawNode = Record<string, unknown>;

/** The spec to submit for a prewarm: filtered to the pool (with upstream nodes), cache readwrite. */
export function prewarmSpec(raw: Record<string, unknown>, pool: string | null): Record<string, unknown> {
  const nodes = new Map(Object.entries((raw.nodes ?? {}) as Record<string, RawNode>));
  let keep = new Set(nodes.keys());
  if (pool !== null) {
    keep = new Set([...nodes].filter(([, n]) => n.platform === pool).map(([k]) => k));
    // upstream nodes the kept ones need, transitively
    const todo = [...keep];
    while (todo.length > 0) {
      const n = nodes.get(todo.pop()!)!;
      const ups = [...(Array.isArray(n.needs) ? (n.needs as string[]) : [])];
      for (const i of Object.values((n.inputs ?? {}) as Record<string, { from?: string }>)) {
        if (typeof i.from === 'string' && i.from.lastIndexOf('.') > 0) ups.push(i.from.slice(0, i.from.lastIndexOf('.')));
      }
      for (const u of ups) {
        if (nodes.has(u) && !keep.has(u)) {
          keep.add(u);
          todo.push(u);
        }
      }
    }
  }
  const out: Record<string, RawNode> = {};
  for (const [name, n] of nodes) {
    if (!keep.has(name)) continue;
    const off = n.cache === 'off' || (typeof n.cache === 'object' && n.cache !== null && (n.cache as { mode?: unknown }).mode === 'off');
    out[name] = { ...n, reuse: false, ...(off ? {} : { cache: { mode: 'readwrite' } }) };
  }
  return { ...raw, nodes: out };
}

export async function prewarmCommand(client: ApiClient, specPath: string, opts: { pool: string | null; json: boolean }, io: CliIO): Promise<number> {
  let kept = 0;
  const code = await submitCommand(
    client,
    specPath,
    {
      follow: true,
      json: opts.json,
      reuse: false,
      transform: (raw) => {
        const spec = prewarmSpec(raw, opts.pool);
        kept = Object.keys(spec.nodes as object).length;
        if (kept === 0) throw new Error(`no node of ${specPath} builds for ${opts.pool ?? 'any platform'} (--pool takes a platform, e.g. linux/amd64)`);
        return spec;
      },
      onBuild: (build) => {
        // readwrite everywhere, yet nothing pushed: the coordinator has no cache registry.
        const built = build.nodes.filter((n) => n.state === 'success' && n.cache);
        if (!opts.json && built.length > 0 && built.every((n) => n.cache!.push === 'none')) {
          io.stderr.write('note: the coordinator has no cache registry (cache.registry): only the agents that built these nodes are warm\n');
        }
      },
    },
    io,
  );
  return code;
}
