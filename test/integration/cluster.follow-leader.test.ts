/**
 * Agents and the CLI with a list of coordinators (issue 14), against a real coordinator
 * process: a dead port first in the list is skipped (and the agent fetches build contexts
 * from the coordinator it is connected to, not the first of its list); an emulated standby
 * (a real HTTP + WebSocket server, test/helpers/emulated-standby.ts) that closes agent
 * sockets with NOT_LEADER and answers requests with the 503 E_NOT_LEADER problem sends the
 * agent and the CLI's submission to the real one (the submission lands once); a leader the
 * list does not name is not followed; an agent whose coordinator URL goes away mid-build
 * moves to the next one and its attempt is adopted; `kiln logs -f` keeps every line exactly
 * once while it moves from a coordinator URL that goes away to the next one and rides out a
 * kill -9 and restart. Builds run on the no-op executor (what they build does not matter
 * here), but for the context fetch, which runs a real one.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import { startEmulatedStandby, type EmulatedStandby } from '../helpers/emulated-standby.js';
import {
  agentInfo,
  freePort,
  jsonLogLines,
  kiln,
  nodeLog,
  spawnAgent,
  spawnKiln,
  startCoordinator,
  StopWaiting,
  useCluster,
  waitFor,
  waitForAgent,
  waitForBuild,
  type Proc,
} from '../helpers/cluster.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

interface BuildList {
  items: Array<{ id: string }>;
}

describe('following the leader through a list of coordinators', () => {
  const c = useCluster('follow-leader');
  let standby: EmulatedStandby;
  let dead: string;

  beforeAll(async () => {
    standby = await startEmulatedStandby(c.coord.url);
    dead = `http://127.0.0.1:${await freePort()}`;
  });
  afterAll(async () => {
    await standby.close();
  });
  // Each test's agent is stopped when the test ends, passed or not (the next test's builds must not land on it).
  const started: Proc[] = [];
  const stopLater = (p: Proc) => started.push(p);
  afterEach(async () => {
    for (const p of started.splice(0)) await p.stop();
  });

  const cli = (list: string[], args: string[]) => kiln(args, { KILN_COORDINATOR: list.join(','), KILN_TOKEN_FILE: c.coord.apiTokenFile });
  const builds = async () => (await c.coord.api<BuildList>(`${apiPath.builds()}?limit=100`)).body.items.map((b) => b.id);
  const agentOn = (name: string, list: string[], env: Record<string, string> = {}, executor: 'noop' | 'docker' = 'noop'): Proc =>
    c.track(spawnAgent({ coordinator: c.coord, name, workDir: join(c.dir, `agent-${name}`), url: list.join(','), executor, env: { KILN_LOG_LEVEL: 'debug', ...env } }));
  const spec = async (name: string, extra = '') => {
    const path = join(c.dir, `${name}.yaml`);
    await writeFile(path, `name: ${name}\nnodes:\n  one:\n    dockerfile_inline: FROM kiln/busybox:1\n${extra}`);
    return path;
  };

  it('skips a dead coordinator at the head of the list: the agent connects and the CLI submits', async () => {
    const agent = agentOn('after-dead', [dead, c.coord.url]);
    stopLater(agent);
    await waitForAgent(c.coord, 'after-dead', 'connected', agent);
    const r = await cli([dead, c.coord.url], ['submit', await spec('after-dead'), '--follow']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/build b-\S+ \(after-dead\): success/);
    const connected = jsonLogLines(agent.stderr).filter((l) => l.msg === 'connection to coordinator open');
    expect(connected.map((l) => l.url)).toEqual([c.coord.url]);
    const moved = jsonLogLines(agent.stderr).find((l) => l.msg === 'disconnected from coordinator; trying the next one');
    expect(moved).toMatchObject({ url: dead, next_url: c.coord.url });
    await agent.stop();
  });

  it('fetches a build context from the coordinator it is connected to, not the first of its list', async () => {
    const agent = agentOn('fetcher', [dead, c.coord.url], {}, 'docker');
    stopLater(agent);
    await waitForAgent(c.coord, 'fetcher', 'connected', agent);
    const ctx = join(c.dir, 'ctx-fetcher');
    await mkdir(ctx, { recursive: true });
    const marker = `fetched-${Date.now()}`;
    await writeFile(join(ctx, 'note.txt'), `${marker}\n`);
    await writeFile(join(ctx, 'Dockerfile'), 'FROM kiln/busybox:1\nCOPY note.txt /note.txt\nRUN cat /note.txt\n');
    const path = join(c.dir, 'fetcher.yaml');
    await writeFile(path, 'name: fetcher\nnodes:\n  one:\n    no_cache: true\n    context: ./ctx-fetcher\n');
    const r = await cli([dead, c.coord.url], ['submit', path, '--follow']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(marker);
  });

  it('follows a standby to the leader it names: the agent runs a build there and the submission lands once', async () => {
    const agent = agentOn('via-standby', [standby.url, c.coord.url]);
    stopLater(agent);
    await waitForAgent(c.coord, 'via-standby', 'connected', agent);
    expect(standby.agentSockets).toBeGreaterThanOrEqual(1);
    const followed = jsonLogLines(agent.stderr).find((l) => l.msg === 'disconnected from coordinator; trying the next one');
    expect(followed).toMatchObject({ url: standby.url, next_url: c.coord.url, reason: `leader ${c.coord.url}` });
    expect(String(followed?.why)).toMatch(/is not the leader; it names/);

    const before = await builds();
    const asked = standby.requests.length;
    // A spec with a context: the CLI asks which blobs are missing, uploads the context (a stream) and submits.
    const ctx = join(c.dir, 'ctx-via-standby');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), `FROM kiln/busybox:1\nCOPY . /src\n# ${Date.now()}\n`);
    const path = join(c.dir, 'via-standby.yaml');
    await writeFile(path, 'name: via-standby\nnodes:\n  one:\n    context: ./ctx-via-standby\n');
    const r = await cli([standby.url, c.coord.url], ['submit', path, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const id = (JSON.parse(r.stdout) as { id: string }).id;
    const after = await builds();
    expect(after.filter((b) => !before.includes(b))).toEqual([id]); // exactly one new build
    // The standby was asked once (refused); everything after went to the leader it named.
    expect(standby.requests.slice(asked)).toEqual([`POST ${apiPath.casFindMissing()}`]);
    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes[0]!.agent, JSON.stringify((await c.coord.api(apiPath.agents())).body)).toBe('via-standby');
    await agent.stop();
  });

  it('follows a standby that refuses the upgrade itself with the E_NOT_LEADER problem', async () => {
    const refusing = await startEmulatedStandby(c.coord.url, { refuseUpgrade: true });
    try {
      // The dead URL between them is not tried: the refusal names the leader.
      const agent = agentOn('via-refusal', [refusing.url, dead, c.coord.url]);
      stopLater(agent);
      await waitForAgent(c.coord, 'via-refusal', 'connected', agent);
      expect(refusing.agentSockets).toBe(1);
      const moves = jsonLogLines(agent.stderr).filter((l) => typeof l.why === 'string');
      expect(moves).toHaveLength(1);
      expect(moves[0]).toMatchObject({ url: refusing.url, next_url: c.coord.url });
      expect(String(moves[0]!.reason)).toMatch(/HTTP 503 this coordinator is a standby/);
    } finally {
      await refusing.close();
    }
  });

  it('does not follow a leader the list does not name', async () => {
    const elsewhere = await startEmulatedStandby(c.coord.url); // names the real coordinator, which the list leaves out
    try {
      const agent = agentOn('not-listed', [elsewhere.url, dead]);
      stopLater(agent);
      // Through the whole list and back at least twice: it never went to the coordinator it was told about.
      await waitFor('the agent to come back to the standby', () => {
        if (!agent.running) throw new StopWaiting(`agent exited: ${agent.stderr.slice(-2000)}`);
        return elsewhere.agentSockets >= 3;
      });
      expect(await agentInfo(c.coord, 'not-listed')).toBeUndefined();
      const refused = jsonLogLines(agent.stderr).filter((l) => l.url === elsewhere.url && typeof l.why === 'string');
      expect(refused[0]).toMatchObject({ next_url: dead });
      expect(String(refused[0]!.why)).toMatch(/not in the coordinator list/);
      await agent.stop();

      const before = await builds();
      const r = await cli([elsewhere.url, dead], ['submit', await spec('not-listed')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`the leader is ${c.coord.url}, which is not in the coordinator list`);
      expect(await builds()).toEqual(before);
    } finally {
      await elsewhere.close();
    }
  });

  it('an agent that loses its coordinator URL mid-build moves to the next one and its attempt is adopted, the log whole', async () => {
    const lines = 40;
    const proxy = await startTcpProxy({ port: c.coord.port });
    try {
      const agent = agentOn('mover', [proxy.url, c.coord.url], { KILN_NOOP_LOG: `${lines}/10` });
      stopLater(agent);
      await waitForAgent(c.coord, 'mover', 'connected', agent);
      const submitted = await cli([c.coord.url], ['submit', await spec('mover'), '--json']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = (JSON.parse(submitted.stdout) as { id: string }).id;
      await waitFor('some log lines', async () => (await nodeLog(c.coord, id, 'one')).split('\n').length > 8);
      proxy.refuse();
      proxy.cut();
      const b = await waitForBuild(c.coord, id);
      expect(b.state).toBe('success');
      expect(b.nodes[0]!.attempts).toHaveLength(1); // adopted on the new connection, not re-run
      const opened = jsonLogLines(agent.stderr).filter((l) => l.msg === 'connection to coordinator open').map((l) => l.url);
      expect(opened).toEqual([proxy.url, c.coord.url]);
      const numbers = (await nodeLog(c.coord, id, 'one')).split('\n').flatMap((l) => {
        const m = /line (\d+)\/\d+ t=/.exec(l);
        return m ? [Number(m[1])] : [];
      });
      expect(numbers).toEqual(Array.from({ length: lines }, (_, i) => i + 1));
    } finally {
      await proxy.close();
    }
  });

  it('kiln logs -f moves to the next coordinator URL and through a kill -9 and restart, every line exactly once', async () => {
    const lines = 60;
    const agent = agentOn('talker', [dead, c.coord.url], { KILN_NOOP_LOG: `${lines}/8` });
    stopLater(agent);
    await waitForAgent(c.coord, 'talker', 'connected', agent);
    const proxy = await startTcpProxy({ port: c.coord.port });
    try {
      const submitted = await cli([c.coord.url], ['submit', await spec('talker'), '--json']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = (JSON.parse(submitted.stdout) as { id: string }).id;
      // The follower starts on the proxy (first in its list), the coordinator itself second.
      const follower = c.track(spawnKiln(['logs', '-f', id], { KILN_COORDINATOR: `${proxy.url},${c.coord.url}`, KILN_TOKEN_FILE: c.coord.apiTokenFile }));
      const printed = () => follower.stdout.split('\n').filter((l) => /^one +\| noop/.test(l)).length;
      await waitFor('the follower to print some lines', () => printed() >= 5);
      proxy.refuse();
      proxy.cut();
      await waitFor('the follower to resume on the coordinator itself', () => follower.stderr.includes(`resumed the log stream on ${c.coord.url}`));
      const before = printed();
      await waitFor('more lines after the move', () => printed() > before + 3);

      await c.coord.proc.kill9();
      const restarted = await startCoordinator({ dataDir: c.coord.dataDir, port: c.coord.port });
      c.track(restarted.proc);
      c.coord = restarted;

      const b = await waitForBuild(c.coord, id);
      expect(b.state).toBe('success');
      expect(b.nodes[0]!.attempts).toHaveLength(1); // adopted after the restart, not re-run
      expect(await follower.exited).toBe(0);
      expect(follower.stderr).toMatch(/log stream interrupted/);
      const shown = follower.stdout
        .split('\n')
        .filter((l) => /^one +\| /.test(l))
        .map((l) => l.replace(/^one +\| /, ''))
        .filter((l) => l !== '=> success');
      const stored = (await nodeLog(c.coord, id, 'one')).split('\n');
      if (stored[stored.length - 1] === '') stored.pop();
      expect(shown).toEqual(stored);
      const numbers = shown.flatMap((l) => {
        const m = /line (\d+)\/\d+ t=/.exec(l);
        return m ? [Number(m[1])] : [];
      });
      expect(numbers).toEqual(Array.from({ length: lines }, (_, i) => i + 1));
    } finally {
      await proxy.close();
      await agent.stop();
    }
  });
});
