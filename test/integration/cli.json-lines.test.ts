/**
 * `--json` of the real `kiln` binary against a real coordinator is JSON Lines everywhere:
 * `builds`, `agents`, `pools`, `dlq` and `artifacts` print one compact object per item and
 * line (a page with more behind it names the next one on stderr); `submit`, `status`,
 * `cancel`, `pin`, agent control, `provenance` and `error` print exactly one line. `kiln
 * logs --json` without -f prints the events `logs -f --json` prints (status and log per
 * node, then end and build), and `kiln error` on a build with no failed node exits 1. A
 * local error in a client command is one line and exit 2, never a stack trace.
 * A docker agent builds the nodes that log and export artifacts; a noop agent the rest.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DOCKER_HOST, inline, kiln, submitSpec, useCluster, useImageCleanup, waitForBuild } from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

type Obj = Record<string, unknown>;

/** stdout of a `--json` command: every line one JSON object (an empty list: no line). */
function jsonLines(stdout: string): Obj[] {
  if (stdout === '') return [];
  expect(stdout.endsWith('\n'), stdout).toBe(true);
  return stdout
    .slice(0, -1)
    .split('\n')
    .map((line) => {
      const v: unknown = JSON.parse(line);
      expect(v !== null && typeof v === 'object' && !Array.isArray(v), line).toBe(true);
      return v as Obj;
    });
}

/** Exactly one line, one JSON object. */
function oneLine(stdout: string): Obj {
  const lines = jsonLines(stdout);
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

/** Log events merged per run of one node (chunking differs between the modes), builds reduced to id and state. */
function shape(events: Obj[]): Obj[] {
  const out: Obj[] = [];
  for (const e of events) {
    const last = out[out.length - 1];
    if (e.type === 'log' && last?.type === 'log' && last.node === e.node) last.text = `${String(last.text)}${String(e.text)}`;
    else if (e.type === 'build') out.push({ type: 'build', id: (e.build as Obj).id, state: (e.build as Obj).state });
    else out.push({ ...e });
  }
  return out;
}

describe('kiln --json is JSON Lines', () => {
  const c = useCluster('cli-json', {
    agents: [
      { name: 'json-docker', labels: 'kind=docker' },
      { name: 'json-noop', executor: 'noop', labels: 'kind=noop' },
    ],
  });
  const images = useImageCleanup();
  const run = (...args: string[]) => kiln(args, c.coord.cliEnv);
  const api = async <T>(path: string) => (await c.coord.api<T>(path)).body;

  it('lists print one object per item; single objects one line', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const id = await submitSpec(c.coord, { name: `noop-${i}`, nodes: { n: inline('FROM kiln/busybox:1', { labels: { kind: 'noop' } }) } });
      expect((await waitForBuild(c.coord, id)).state).toBe('success');
      ids.push(id);
    }

    const all = await run('builds', '--json');
    expect(all.code, all.stderr).toBe(0);
    const listed = (await api<{ items: Obj[] }>(`${apiPath.builds()}?limit=20`)).items;
    expect(jsonLines(all.stdout)).toEqual(listed);
    expect(listed.map((b) => b.id)).toEqual(expect.arrayContaining(ids));
    expect(all.stderr).toBe(''); // no more pages

    const page1 = await run('builds', '--json', '--limit', '2');
    expect(page1.code, page1.stderr).toBe(0);
    const first = jsonLines(page1.stdout);
    expect(first.map((b) => b.id)).toEqual(listed.slice(0, 2).map((b) => b.id));
    expect(page1.stderr).toBe(`older builds: kiln builds --limit 2 --cursor ${String(first[1]!.id)} --json\n`);
    const page2 = await run('builds', '--json', '--limit', '2', '--cursor', String(first[1]!.id));
    expect(page2.code, page2.stderr).toBe(0);
    expect(jsonLines(page2.stdout).map((b) => b.id)).toEqual(listed.slice(2, 4).map((b) => b.id));

    const agents = await run('agents', '--json');
    expect(agents.code, agents.stderr).toBe(0);
    expect(jsonLines(agents.stdout).map((a) => a.name)).toEqual(['json-docker', 'json-noop']);

    const pools = await run('pools', '--json');
    expect(pools.code, pools.stderr).toBe(0);
    const poolItems = (await api<{ items: Obj[] }>(apiPath.pools())).items;
    expect(poolItems.length).toBeGreaterThan(0);
    expect(jsonLines(pools.stdout).map((p) => p.name)).toEqual(poolItems.map((p) => p.name));

    const dlq = await run('dlq', '--json');
    expect(dlq.code, dlq.stderr).toBe(0);
    expect(jsonLines(dlq.stdout)).toEqual((await api<{ items: Obj[] }>(apiPath.deadLetter())).items);

    const status = await run('status', ids[0]!, '--json');
    expect(status.code, status.stderr).toBe(0);
    expect(oneLine(status.stdout)).toMatchObject({ id: ids[0], state: 'success' });
    const pin = await run('pin', ids[0]!, '--json');
    expect(pin.code, pin.stderr).toBe(0);
    expect(oneLine(pin.stdout)).toMatchObject({ id: ids[0], pinned: true });
    const unpin = await run('unpin', ids[0]!, '--json');
    expect(oneLine(unpin.stdout)).toMatchObject({ id: ids[0], pinned: false });

    const paused = await run('agents', 'pause', 'json-noop', '--json');
    expect(paused.code, paused.stderr).toBe(0);
    expect(oneLine(paused.stdout)).toMatchObject({ name: 'json-noop', control: 'paused' });
    expect(oneLine((await run('agents', 'resume', 'json-noop', '--json')).stdout)).toMatchObject({ name: 'json-noop', control: 'active' });

    // a build no agent can take waits; cancelling it prints the build
    const spec = join(c.dir, 'nobody.yaml');
    await writeFile(spec, 'nodes:\n  n:\n    labels: { kind: nobody }\n    dockerfile_inline: FROM kiln/busybox:1\n');
    const submitted = await run('submit', spec, '--json');
    expect(submitted.code, submitted.stderr).toBe(0);
    const created = oneLine(submitted.stdout);
    expect(created).toMatchObject({ id: expect.stringMatching(/^b-/), url: apiPath.build(String(created.id)) });
    const cancel = await run('cancel', String(created.id), '--json');
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(oneLine(cancel.stdout)).toMatchObject({ id: created.id, cancel_requested: true });
  });

  it('logs --json without -f prints the events of logs -f --json; artifacts, provenance and error too', async () => {
    const mark = `json-${process.pid}-${Date.now()}`;
    const spec = join(c.dir, 'logged.yaml');
    await writeFile(
      spec,
      [
        'name: logged',
        'nodes:',
        '  make:',
        '    labels: { kind: docker }',
        '    no_cache: true',
        '    dockerfile_inline: |',
        '      FROM kiln/busybox:1',
        `      RUN mkdir /out && echo "made-$((6*7)) ${mark}" && echo one > /out/a.txt && echo two > /out/b.txt`,
        '    outputs: { a: /out/a.txt, b: /out/b.txt }',
        '  check:',
        '    needs: [make]',
        '    labels: { kind: docker }',
        '    no_cache: true',
        '    dockerfile_inline: |',
        '      FROM kiln/busybox:1',
        `      RUN echo "checked-$((5*5)) ${mark}"`,
        '',
      ].join('\n'),
    );
    const submitted = await run('submit', spec, '--json');
    expect(submitted.code, submitted.stderr).toBe(0);
    const id = String(oneLine(submitted.stdout).id);
    images.push([DOCKER_HOST, `kiln-build/${id}:make`], [DOCKER_HOST, `kiln-build/${id}:check`]);
    expect((await waitForBuild(c.coord, id)).state).toBe('success');

    const stored = await run('logs', id, '--json');
    expect(stored.code, stored.stderr).toBe(0);
    const events = jsonLines(stored.stdout);
    const merged = shape(events);
    expect(merged.map((e) => [e.type, e.node ?? e.id ?? e.state])).toEqual([
      ['status', 'make'],
      ['log', 'make'],
      ['status', 'check'],
      ['log', 'check'],
      ['end', 'success'],
      ['build', id],
    ]);
    expect(merged[0]).toEqual({ type: 'status', node: 'make', state: 'success', attempt: 1 });
    // one event per line; the lines of a node are exactly its stored log
    for (const e of events.filter((x) => x.type === 'log')) expect(String(e.text)).toMatch(/^[^\n]*\n$/);
    for (const node of ['make', 'check']) {
      const res = await fetch(`${c.coord.url}${apiPath.nodeLogs(id, node)}`, { headers: { authorization: `Bearer ${c.coord.apiToken}` } });
      expect(merged.find((e) => e.type === 'log' && e.node === node)?.text).toBe(await res.text());
    }
    expect(String(merged[1]!.text)).toContain(`made-42 ${mark}`);
    expect(String(merged[3]!.text)).toContain(`checked-25 ${mark}`);

    const followed = await run('logs', id, '-f', '--json');
    expect(followed.code, followed.stderr).toBe(0);
    expect(shape(jsonLines(followed.stdout))).toEqual(merged);

    const one = await run('logs', id, 'check', '--json');
    expect(one.code, one.stderr).toBe(0);
    expect(shape(jsonLines(one.stdout)).map((e) => [e.type, e.node ?? e.id ?? e.state])).toEqual([
      ['status', 'check'],
      ['log', 'check'],
      ['end', 'success'],
      ['build', id],
    ]);
    const noNode = await run('logs', id, 'nope', '--json');
    expect(noNode.code).toBe(2);
    expect(noNode.stderr).toBe(`kiln: build ${id} has no node 'nope'\n`);

    const artifacts = await run('artifacts', id, '--json');
    expect(artifacts.code, artifacts.stderr).toBe(0);
    const items = (await api<{ items: Obj[] }>(apiPath.buildArtifacts(id))).items;
    expect(items.map((a) => a.name)).toEqual(['a', 'b']);
    expect(jsonLines(artifacts.stdout)).toEqual(items);

    // a local error (here: -o under a regular file) is one line and exit 2, not a stack trace and 70
    const notDir = await run('artifacts', 'get', id, 'make', 'a', '-o', join(spec, 'out'));
    expect(notDir.code).toBe(2);
    expect(notDir.stderr).toBe(`kiln: ENOTDIR: not a directory, mkdir '${join(spec, 'out')}'\n`);

    const prov = await run('provenance', id, 'make', '--json');
    expect(prov.code, prov.stderr).toBe(0);
    expect(Object.keys(oneLine(prov.stdout)).length).toBeGreaterThan(0);

    for (const args of [['error', id], ['error', id, '--json']]) {
      const noReport = await run(...args);
      expect(noReport.code).toBe(1);
      expect(noReport.stdout).toBe('');
      expect(noReport.stderr).toBe(`build ${id} has no error report: no node failed (state: success)\n`);
    }
    const unknown = await run('error', 'b-01kbx2f3q4000-7d2k9x4m', '--json');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('b-01kbx2f3q4000-7d2k9x4m not found');
  });
});
