/**
 * The fleet routes over a real socket against a real coordinator and agents: pools, one
 * agent's detail (control, health, breaker, load), pause/drain/resume and what they do to
 * dispatch and to a waiting node's reason, the dead-letter list and the circuit breaker
 * (filled and opened by a frozen agent that never accepts its assignments), retrying a
 * failed node, and the error report of a failed build; plus the errors: unknown agent or
 * build 404, retry of a node that did not fail 409, malformed bodies 400. (Killing agents
 * mid-build until the budget is gone is fault.dead-letter.test.ts.)
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentViewT, BuildViewT, DeadLetterViewT, ErrorReportT, PoolViewT } from '../../shared/index.js';
import {
  inline,
  spawnAgent,
  startCoordinator,
  submitSpec,
  tempDir,
  useCluster,
  waitFor,
  waitForAgent,
  waitForBuild,
  type CoordinatorHandle,
  type Proc,
} from '../helpers/cluster.js';
import { AGENT_CONTROL_ACTIONS, AGENT_CONTROL_ROUTES, API_ROUTES, apiPath } from '../../shared/index.js';

interface Problem {
  status: number;
  code: string;
  detail: string;
  errors?: Array<{ path: string; message: string }>;
}

const NATIVE = `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`;
const TIMINGS = ['--heartbeat-interval', '1s', '--lost-after', '20s'];

function node(b: BuildViewT, name: string) {
  const n = b.nodes.find((x) => x.name === name);
  if (!n) throw new Error(`no node ${name} in ${JSON.stringify(b.nodes.map((x) => x.name))}`);
  return n;
}

describe('fleet API with noop agents', () => {
  const c = useCluster('fleet-http', { coordinatorArgs: TIMINGS, agents: [{ name: 'noop-a', executor: 'noop', maxJobs: 2 }] });
  const post = <T>(path: string, body?: unknown, headers: Record<string, string> = {}) =>
    c.coord.api<T>(path, {
      method: 'POST',
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } }),
    });
  const build = async (id: string) => (await c.coord.api<BuildViewT>(apiPath.build(id))).body;

  it('shows one agent with control, health, breaker, load and GPUs in use', async () => {
    const r = await c.coord.api<AgentViewT>(apiPath.agent('noop-a'));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      name: 'noop-a',
      state: 'connected',
      executor: 'noop',
      control: 'active',
      control_reason: null,
      health: { accepting: true, problem: null },
      breaker: { state: 'closed', until: null, recent_failures: 0 },
      gpus_in_use: [],
      max_jobs: 2,
    });
    // heartbeats carry the host's load
    const withLoad = await waitFor('a heartbeat with load', async () => {
      const a = (await c.coord.api<AgentViewT>(apiPath.agent('noop-a'))).body;
      return a.metrics?.load1 !== null && a.metrics?.load1 !== undefined ? a : null;
    }, 30_000);
    expect(withLoad.metrics!.cpus).toBeGreaterThanOrEqual(1);
    expect(withLoad.metrics!.mem_total_mib).toBeGreaterThan(withLoad.metrics!.mem_used_mib ?? -1);
    expect(Date.parse(withLoad.metrics!.at)).toBeGreaterThan(0);
    // the list has the same shape
    const list = await c.coord.api<{ items: AgentViewT[] }>(apiPath.agents());
    expect(list.body.items.find((a) => a.name === 'noop-a')).toMatchObject({ control: 'active', breaker: { state: 'closed' } });
  });

  it('answers 404 problems for an unknown agent, and 400 for a malformed control body', async () => {
    const get = await c.coord.api<Problem>(apiPath.agent('ghost'));
    expect(get.status).toBe(404);
    expect(get.headers.get('content-type')).toContain('application/problem+json');
    expect(get.body.code).toBe('E_NOT_FOUND');
    expect(get.body.detail).toContain("'ghost'");
    for (const action of AGENT_CONTROL_ACTIONS) {
      const r = await post<Problem>(AGENT_CONTROL_ROUTES[action].path('ghost'));
      expect(r.status, action).toBe(404);
      expect(r.body.code).toBe('E_NOT_FOUND');
      expect(r.body.detail).toContain("'ghost'");
    }
    const malformed = await post<Problem>(apiPath.agentPause('noop-a'), '{"reason": ');
    expect(malformed.status).toBe(400);
    expect(malformed.body.code).toBe('E_INVALID');
    expect(malformed.body.detail).toMatch(/JSON/i);
    const wrongType = await post<Problem>(apiPath.agentPause('noop-a'), { reason: 42 });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.code).toBe('E_INVALID');
    expect(wrongType.body.errors?.[0]?.path).toBe('reason');
    const unknownField = await post<Problem>(apiPath.agentDrain('noop-a'), { reason: 'x', until: 'tomorrow' });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.detail).toContain('until');
    // none of that changed the agent
    expect((await c.coord.api<AgentViewT>(apiPath.agent('noop-a'))).body.control).toBe('active');
  });

  it('pause holds new work with a clear waiting reason; resume lets it run', async () => {
    const paused = await post<AgentViewT>(apiPath.agentPause('noop-a'), { reason: 'kernel upgrade' });
    expect(paused.status).toBe(200);
    expect(paused.body).toMatchObject({ name: 'noop-a', control: 'paused', control_reason: 'kernel upgrade' });
    expect(Date.parse(paused.body.control_at!)).toBeGreaterThan(0);
    expect((await c.coord.api<AgentViewT>(apiPath.agent('noop-a'))).body.control).toBe('paused');

    const id = await submitSpec(c.coord, { name: 'held', nodes: { one: inline('FROM kiln/busybox:1\nRUN echo held') } });
    const waiting = await waitFor('the node to wait for the paused agent', async () => {
      const n = node(await build(id), 'one');
      return n.state === 'ready' && n.waiting ? n : null;
    });
    expect(waiting.waiting).toBe('waiting for a free slot on 1 matching agent (1 paused)');
    const pools = await c.coord.api<{ items: PoolViewT[] }>(apiPath.pools());
    expect(pools.status).toBe(200);
    const pool = pools.body.items.find((p) => p.name === NATIVE);
    expect(pool, JSON.stringify(pools.body)).toBeDefined();
    expect(pool!.agents).toMatchObject({ connected: 1, native: 1, paused: 1 });
    expect(pool!.queued).toBe(1);
    expect(pool!.oldest_wait_ms).not.toBeNull();
    // still waiting a while later: pause really holds dispatch
    await new Promise((r) => setTimeout(r, 1500));
    expect(node(await build(id), 'one').state).toBe('ready');

    const resumed = await post<AgentViewT>(apiPath.agentResume('noop-a'));
    expect(resumed.status).toBe(200);
    expect(resumed.body).toMatchObject({ control: 'active', control_reason: null, control_at: null });
    const done = await waitForBuild(c.coord, id);
    expect(done.state).toBe('success');
    const after = (await c.coord.api<{ items: PoolViewT[] }>(apiPath.pools())).body.items.find((p) => p.name === NATIVE)!;
    expect(after.dispatched).toBeGreaterThanOrEqual(1);
    expect(after.wait_p50_ms).not.toBeNull();
  });

  it('drain keeps the agent from new work until resumed', async () => {
    const drained = await post<AgentViewT>(apiPath.agentDrain('noop-a'));
    expect(drained.status).toBe(200);
    expect(drained.body).toMatchObject({ control: 'draining', control_reason: null });
    const id = await submitSpec(c.coord, { name: 'drained', nodes: { one: inline('FROM kiln/busybox:1\nRUN echo drained') } });
    const n = await waitFor('the node to wait for the draining agent', async () => {
      const x = node(await build(id), 'one');
      return x.state === 'ready' && x.waiting ? x : null;
    });
    expect(n.waiting).toBe('waiting for a free slot on 1 matching agent (1 draining)');
    expect((await post<AgentViewT>(apiPath.agentResume('noop-a'))).body.control).toBe('active');
    expect((await waitForBuild(c.coord, id)).state).toBe('success');
  });

  it('says at once when no connected agent can ever run a node', async () => {
    const id = await submitSpec(c.coord, {
      name: 'nobody',
      nodes: {
        s390x: inline('FROM kiln/busybox:1', { platform: 'linux/s390x' }),
        labelled: inline('FROM kiln/busybox:1', { labels: { zone: 'mars' } }),
      },
    });
    const b = await waitFor('both nodes to say why they wait', async () => {
      const x = await build(id);
      return x.nodes.every((n) => n.waiting) ? x : null;
    });
    expect(node(b, 's390x').waiting).toBe('no matching agent: no connected agent has platform linux/s390x');
    expect(node(b, 'labelled').waiting).toBe(`no matching agent: no connected agent with platform ${NATIVE} has label zone=mars`);
    const pools = (await c.coord.api<{ items: PoolViewT[] }>(apiPath.pools())).body.items;
    expect(pools.find((p) => p.name === 'linux/s390x')).toMatchObject({ queued: 1, agents: { connected: 0 } });
    await post(apiPath.buildCancel(id));
  });

  it('refuses retries of nodes that did not fail, and error reports of builds that did not', async () => {
    const id = await submitSpec(c.coord, { name: 'fine', nodes: { ok: inline('FROM kiln/busybox:1\nRUN echo ok') } });
    expect((await waitForBuild(c.coord, id)).state).toBe('success');

    const conflict = await post<Problem>(apiPath.nodeRetry(id, 'ok'));
    expect(conflict.status).toBe(409);
    expect(conflict.body.code).toBe('E_CONFLICT');
    expect(conflict.body.detail).toContain('success');
    const noNode = await post<Problem>(apiPath.nodeRetry(id, 'ghost'));
    expect(noNode.status).toBe(404);
    expect(noNode.body.detail).toContain("'ghost'");
    const noBuild = await post<Problem>(apiPath.nodeRetry('b-01kbx2f3q4000-7d2k9x4m', 'ok'));
    expect(noBuild.status).toBe(404);
    expect(noBuild.body.code).toBe('E_NOT_FOUND');

    const report = await c.coord.api<Problem>(apiPath.buildError(id));
    expect(report.status).toBe(404);
    expect(report.body.code).toBe('E_NOT_FOUND');
    expect(report.body.detail).toBe(`build ${id} has no error report: no node of it failed (build state: success)`);
    const unknown = await c.coord.api<Problem>(apiPath.buildError('b-01kbx2f3q4000-7d2k9x4m'));
    expect(unknown.status).toBe(404);
    expect(unknown.body.detail).toContain('b-01kbx2f3q4000-7d2k9x4m not found');

    const dlq = await c.coord.api<{ items: DeadLetterViewT[] }>(apiPath.deadLetter());
    expect(dlq.status).toBe(200);
    expect(dlq.body.items).toEqual([]);
  });

  it('keeps the fleet routes to the API token and describes them in OpenAPI', async () => {
    const agentToken = (await readFile(c.coord.agentTokenFile, 'utf8')).trim();
    for (const p of [apiPath.pools(), apiPath.deadLetter(), apiPath.agent('noop-a')]) {
      const r = await fetch(`${c.coord.url}${p}`, { headers: { authorization: `Bearer ${agentToken}` } });
      expect(r.status, p).toBe(403);
    }
    const pause = await fetch(`${c.coord.url}${apiPath.agentPause('noop-a')}`, { method: 'POST', headers: { authorization: `Bearer ${agentToken}` } });
    expect(pause.status).toBe(403);
    const doc = (await (await fetch(`${c.coord.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    for (const [p, method] of [
      [API_ROUTES.pools.template, 'get'],
      [API_ROUTES.agent.template, 'get'],
      [API_ROUTES.agentPause.template, 'post'],
      [API_ROUTES.agentResume.template, 'post'],
      [API_ROUTES.agentDrain.template, 'post'],
      [API_ROUTES.deadLetter.template, 'get'],
      [API_ROUTES.nodeRetry.template, 'post'],
      [API_ROUTES.buildError.template, 'get'],
    ] as const) {
      expect(doc.paths[p]?.[method], `${method} ${p}`).toBeDefined();
    }
  });
});

describe('fleet API with a docker agent: failures, retries, error reports', () => {
  const c = useCluster('fleet-docker', { coordinatorArgs: TIMINGS, agents: [{ name: 'docker-a', maxJobs: 2 }] });

  it('reports why a build failed: node, attempt, agent, exit code, step, log tail, provenance; also on disk', async () => {
    const id = await submitSpec(c.coord, {
      name: 'broken-build',
      nodes: {
        broken: inline('FROM kiln/busybox:1\nRUN echo "about-to-fail-$((1+2))"; exit 3', { no_cache: true }),
        after: inline('FROM kiln/busybox:1\nRUN echo never', { needs: ['broken'] }),
      },
    });
    expect((await waitForBuild(c.coord, id)).state).toBe('failed');
    const r = await c.coord.api<ErrorReportT>(apiPath.buildError(id));
    expect(r.status).toBe(200);
    const rep = r.body;
    expect(rep).toMatchObject({
      format: 'kiln-error-report',
      version: 1,
      build_id: id,
      build_name: 'broken-build',
      state: 'failed',
      node: 'broken',
      attempt: 1,
      agent: 'docker-a',
      exit_code: 3,
      infra: false,
      dead_letter: false,
      skipped: ['after'],
      logs_url: apiPath.nodeLogs(id, 'broken'),
    });
    expect(rep.failed_step).toContain('exit 3');
    expect(rep.error).toMatch(/exit code: 3/);
    // the echo's output (the command line itself says $((1+2)))
    expect(rep.log_tail.some((l) => l.includes('about-to-fail-3'))).toBe(true);
    expect(rep.failures.map((f) => f.node)).toEqual(['broken']);
    expect(rep.provenance).toMatch(/^sha256:[0-9a-f]{64}$/);
    const prov = await c.coord.api<{ build?: unknown }>(rep.provenance_url!);
    expect(prov.status).toBe(200);
    // the same report is kept in the data dir
    const file = join(c.coord.dataDir, 'builds', `error-${id}.json`);
    const onDisk = await waitFor('the error report file', async () => JSON.parse(await readFile(file, 'utf8')) as ErrorReportT, 30_000);
    expect(onDisk).toEqual(rep);
  });

  it('retries a failed node: it runs again, its skipped dependents run, the build succeeds', async () => {
    // Fails until another build has put /c/fixed into a BuildKit cache mount (a fix landed).
    const mark = `kiln-retry-${process.pid}-${Date.now()}`;
    const id = await submitSpec(c.coord, {
      name: 'second-time-lucky',
      nodes: {
        flaky: inline(`FROM kiln/busybox:1\nRUN --mount=type=cache,target=/c,id=${mark} if [ -f /c/fixed ]; then echo "second-$((40+2))"; else echo "first-$((40+2))"; exit 3; fi`),
        after: inline('FROM kiln/busybox:1\nRUN echo after', { needs: ['flaky'], no_cache: true }),
      },
    });
    const failed = await waitForBuild(c.coord, id);
    expect(failed.state).toBe('failed');
    expect(failed.nodes.map((n) => n.state)).toEqual(['failed', 'skipped']);
    const fix = await submitSpec(c.coord, { name: 'fix', nodes: { fix: inline(`FROM kiln/busybox:1\nRUN --mount=type=cache,target=/c,id=${mark} touch /c/fixed`) } });
    expect((await waitForBuild(c.coord, fix)).state).toBe('success');

    const r = await c.coord.api<BuildViewT>(apiPath.nodeRetry(id, 'flaky'), { method: 'POST' });
    expect(r.status).toBe(202);
    expect(['pending', 'running']).toContain(r.body.state);
    expect(r.body.finished_at).toBeNull();
    expect(['ready', 'assigned', 'running']).toContain(node(r.body, 'flaky').state);
    expect(node(r.body, 'after').state).toBe('pending');

    const done = await waitForBuild(c.coord, id);
    expect(done.state).toBe('success');
    const flaky = node(done as unknown as BuildViewT, 'flaky');
    expect(flaky.attempts.map((a) => a.state)).toEqual(['failed', 'success']);
    expect(node(done as unknown as BuildViewT, 'after').state).toBe('success');
    const log = await c.coord.api<string>(apiPath.nodeLogs(id, 'flaky'));
    expect(log.body).toContain('first-42');
    expect(log.body).toContain('second-42');
    // no failed node any more: no error report, and a second retry is a conflict
    expect((await c.coord.api<Problem>(apiPath.buildError(id))).status).toBe(404);
    const again = await c.coord.api<Problem>(apiPath.nodeRetry(id, 'flaky'), { method: 'POST' });
    expect(again.status).toBe(409);
  });
});

describe('fleet API: an agent that does not accept its assignments', () => {
  // Assignments not accepted within 1.5 s are infrastructure failures (accept timeout).
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  const procs: Proc[] = [];
  beforeAll(async () => {
    dir = await tempDir('fleet-breaker');
    coord = await startCoordinator({ dataDir: join(dir.path, 'data'), args: TIMINGS, env: { KILN_ACCEPT_TIMEOUT: '1500ms' } });
    procs.push(coord.proc);
  });
  afterAll(async () => {
    for (const p of procs.reverse()) {
      p.child.kill('SIGCONT');
      await p.stop();
    }
    await dir.cleanup();
  });

  it('dead-letters the node, opens the breaker; a retry takes it off the list and says it waits for the breaker', async () => {
    const hung = spawnAgent({ coordinator: coord, name: 'hung', workDir: join(dir.path, 'agent-hung'), executor: 'noop' });
    procs.push(hung);
    await waitForAgent(coord, 'hung', 'connected', hung);
    // a hung agent process: its socket stays open, nothing is read
    hung.child.kill('SIGSTOP');
    try {
      const id = await submitSpec(coord, { name: 'unaccepted', nodes: { one: inline('FROM kiln/busybox:1\nRUN echo one') } });
      await waitForBuild(coord, id, (x) => x.state === 'failed', 60_000);
      const b = (await coord.api<BuildViewT>(apiPath.build(id))).body;
      const attempts = node(b, 'one').attempts;
      expect(attempts.map((a) => a.state)).toEqual(['lost', 'lost', 'lost']);
      expect(attempts[0]!.reason).toMatch(/did not accept the assignment/);

      const a = (await coord.api<AgentViewT>(apiPath.agent('hung'))).body;
      expect(a.breaker.state).toBe('open');
      expect(a.breaker.recent_failures).toBe(3);
      expect(Date.parse(a.breaker.until!)).toBeGreaterThan(Date.parse(attempts[2]!.assigned_at));
      const pool = (await coord.api<{ items: PoolViewT[] }>(apiPath.pools())).body.items.find((p) => p.name === NATIVE);
      expect(pool?.agents.breaker_open).toBe(1);

      const dlq = (await coord.api<{ items: DeadLetterViewT[] }>(apiPath.deadLetter())).body.items;
      expect(dlq).toHaveLength(1);
      const d = dlq[0]!;
      expect(d).toMatchObject({ build_id: id, build_name: 'unaccepted', node: 'one', platform: NATIVE, retry_url: apiPath.nodeRetry(id, 'one') });
      expect(d.reason).toMatch(/^attempts exhausted/);
      expect(d.attempts.map((x) => [x.number, x.agent, x.state])).toEqual([
        [1, 'hung', 'lost'],
        [2, 'hung', 'lost'],
        [3, 'hung', 'lost'],
      ]);
      expect(d.attempts[2]!.reason).toMatch(/did not accept the assignment/);
      expect(Date.parse(d.at)).toBeGreaterThanOrEqual(Date.parse(attempts[2]!.assigned_at));

      const rep = await coord.api<ErrorReportT>(apiPath.buildError(id));
      expect(rep.status).toBe(200);
      expect(rep.body).toMatchObject({ node: 'one', attempt: 3, agent: 'hung', dead_letter: true, infra: true });
      expect(rep.body.error).toMatch(/^attempts exhausted/);

      const retry = await coord.api<BuildViewT>(d.retry_url, { method: 'POST' });
      expect(retry.status).toBe(202);
      expect(node(retry.body, 'one').state).toBe('ready');
      expect(node(retry.body, 'one').waiting).toBe('waiting for a free slot on 1 matching agent (1 breaker open)');
      expect((await coord.api<{ items: DeadLetterViewT[] }>(apiPath.deadLetter())).body.items).toEqual([]);
      await coord.api(apiPath.buildCancel(id), { method: 'POST' });
    } finally {
      hung.child.kill('SIGCONT');
    }
  });
});
