/**
 * A matrix, for real: `matrix: {py: [...], variant: [...]}` expands a node into one node
 * per combination with `${{ matrix.* }}` substituted in build args and output names; a
 * node with the same `py` axis takes the matching combination's output; `kiln status`
 * shows each expanded node with its axis values, and `--json` carries them as `matrix`.
 * An expansion over the limit is a 400 at submit naming the node.
 */
import { describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import { inline, kiln, nodeLog, submitSpec, useCluster, waitForBuild } from '../helpers/cluster.js';

describe('matrix expansion', () => {
  const c = useCluster('matrix', { agents: [{ name: 'm', maxJobs: 2 }] });
  const uniq = `${process.pid}-${Date.now().toString(36)}`;

  it('builds one node per combination with the values substituted, and shows them in kiln status', async () => {
    const id = await submitSpec(c.coord, {
      name: 'matrix',
      nodes: {
        py: inline(`FROM kiln/busybox:1\nARG PY\nARG V\nRUN mkdir /out && echo "py=$PY v=$V ${uniq}" | tee /out/which\n`, {
          matrix: { py: ['3.11', '3.12'], variant: ['slim'] },
          build_args: { PY: '${{ matrix.py }}', V: '${{ matrix.variant }}' },
          outputs: { 'out-${{ matrix.variant }}': '/out' },
        }),
        use: inline('FROM kiln/busybox:1\nRUN cat /opt/in/which\n', { matrix: { py: ['3.12'] }, inputs: { in: { from: 'py.out-slim', mount: '/opt/in' } } }),
      },
    });
    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes.map((n) => n.name)).toEqual(['py.3.11-slim', 'py.3.12-slim', 'use.3.12']);
    expect(await nodeLog(c.coord, id, 'py.3.11-slim')).toContain(`py=3.11 v=slim ${uniq}`);
    expect(await nodeLog(c.coord, id, 'use.3.12')).toContain(`py=3.12 v=slim ${uniq}`);

    const status = await kiln(['status', id], c.coord.cliEnv);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/py\.3\.11-slim\s+success.*\[py=3\.11 variant=slim\]/);
    expect(status.stdout).toMatch(/use\.3\.12\s+success.*\[py=3\.12\]/);
    const json = JSON.parse((await kiln(['status', id, '--json'], c.coord.cliEnv)).stdout) as { nodes: Array<{ name: string; matrix: Record<string, string>; origin: string | null }> };
    expect(json.nodes.map((n) => [n.name, n.matrix, n.origin])).toEqual([
      ['py.3.11-slim', { py: '3.11', variant: 'slim' }, 'py'],
      ['py.3.12-slim', { py: '3.12', variant: 'slim' }, 'py'],
      ['use.3.12', { py: '3.12' }, 'use'],
    ]);
  });

  it('refuses an expansion over the limit with a 400 naming the node', async () => {
    const values = Array.from({ length: 20 }, (_, i) => `v${i}`);
    const r = await c.coord.api<{ errors: Array<{ path: string; message: string }> }>(apiPath.builds(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nodes: { wide: inline('FROM kiln/busybox:1\n', { matrix: { a: values, b: values } }) } }),
    });
    expect(r.status).toBe(400);
    expect(r.body.errors).toEqual([{ path: 'nodes.wide.matrix', message: "node 'wide': field 'matrix': expands to 400 nodes (at most 256 per node)" }]);
  });
});
