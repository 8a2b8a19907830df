/**
 * OpenTelemetry traces end to end (issue 12): a small OTLP/HTTP receiver in the test (a
 * node:http server on port 0 taking POST /v1/traces as JSON), the compiled coordinator
 * (endpoint by flag) and an agent (endpoint by the standard OTEL_EXPORTER_OTLP_ENDPOINT)
 * on the real dockerd, and a real build: a node with a test and an output, a node that
 * takes it as input, and a node whose RUN fails.
 *
 * Checked: one trace for the build, its id what the error report names; spans for the
 * build, each node, queue wait, attempt (coordinator) and input fetch, build, test, output
 * export (agent); parent links across the two processes (the agent's phases are children
 * of the coordinator's attempt span, by the traceparent in the assign frame); attributes
 * (build id, node, attempt, agent, platform, cache hit, failure kind) and the failed
 * spans' status; the log lines around a node carry the build id. A coordinator killed
 * mid-build: the restarted one records the rest of the build into the same trace, under
 * the parents the spans sent before the kill and the agent's spans name.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiPath, traceIdOf } from '../../shared/index.js';
import { getBuild, inline, jsonLogLines, restartCoordinator, startAgent, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';

/** One span as the receiver decoded it (OTLP/JSON). */
interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  start: bigint;
  end: bigint;
  status: number;
  attributes: Map<string, string | number | boolean>;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpBody {
  resourceSpans: Array<{
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans: Array<{
      spans: Array<{ traceId: string; spanId: string; parentSpanId?: string; name: string; startTimeUnixNano: string; endTimeUnixNano: string; status?: { code?: number }; attributes?: OtlpAttribute[] }>;
    }>;
  }>;
}

function valueOf(v: OtlpValue): string | number | boolean {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.boolValue !== undefined) return v.boolValue;
  return v.doubleValue ?? NaN;
}

function attributes(list: OtlpAttribute[] | undefined): Map<string, string | number | boolean> {
  return new Map((list ?? []).map((a) => [a.key, valueOf(a.value)]));
}

/** A minimal OTLP/HTTP receiver: JSON bodies only (what @opentelemetry/exporter-trace-otlp-http sends). */
class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly contentTypes = new Set<string>();
  private server: Server | null = null;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req).then((status) => res.writeHead(status, { 'content-type': 'application/json' }).end('{}')));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  private async handle(req: IncomingMessage): Promise<number> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (req.method !== 'POST' || req.url !== '/v1/traces') return 404;
    this.contentTypes.add(String(req.headers['content-type']));
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpBody;
    for (const rs of body.resourceSpans) {
      const service = String(attributes(rs.resource?.attributes).get('service.name'));
      for (const ss of rs.scopeSpans) {
        for (const s of ss.spans) {
          this.spans.push({
            service,
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId ?? '',
            name: s.name,
            start: BigInt(s.startTimeUnixNano),
            end: BigInt(s.endTimeUnixNano),
            status: s.status?.code ?? 0,
            attributes: attributes(s.attributes),
          });
        }
      }
    }
    return 200;
  }

  async stop(): Promise<void> {
    await new Promise((r) => this.server?.close(r));
  }
}

describe('OpenTelemetry traces of a build (OTLP/HTTP)', () => {
  const receiver = new OtlpReceiver();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let coord: CoordinatorHandle;
  let agent: Proc;

  beforeAll(async () => {
    await receiver.start();
    dir = await tempDir('tracing');
    coord = await startCoordinator({ dataDir: join(dir.path, 'data'), args: ['--otlp-endpoint', receiver.url], env: { KILN_TRACING_EXPORT_INTERVAL: '100ms' } });
    agent = await startAgent({ coordinator: coord, name: 'tracer-agent', workDir: join(dir.path, 'agent'), maxJobs: 2, env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, KILN_TRACING_EXPORT_INTERVAL: '100ms' } });
  });

  afterAll(async () => {
    await agent?.stop();
    await coord?.proc.stop();
    await receiver.stop();
    await dir?.cleanup();
  });

  it('records one trace per build, across coordinator and agent, with linked spans and attributes', async () => {
    const marker = `${Date.now()}`;
    const id = await submitSpec(coord, {
      name: 'traced',
      nodes: {
        produce: inline(`FROM kiln/busybox:1\nRUN mkdir /out && echo "made ${marker}" > /out/made.txt`, {
          no_cache: true,
          outputs: { tree: '/out' },
          test: { command: 'cat /out/made.txt' },
        }),
        consume: inline(`FROM kiln/busybox:1\nRUN --mount=type=bind,from=tree,target=/in cat /in/made.txt`, { no_cache: true, inputs: { tree: { from: 'produce.tree' } } }),
        broken: inline(`FROM kiln/busybox:1\nRUN echo "failing ${marker}"; exit 3`, { no_cache: true }),
      },
    });
    const b = await waitForBuild(coord, id);
    expect(b.state).toBe('partial');
    const traceId = traceIdOf(id);

    // Every span of the build arrives: the root last (it ends with the build), and the
    // agent's phases of every node.
    const agentPhases = (node: string) => receiver.spans.filter((s) => s.service === 'kiln-agent' && s.attributes.get('kiln.node') === node);
    await waitFor('the build span and the agent phases of every node', () =>
      receiver.spans.some((s) => s.name === 'build traced' && s.traceId === traceId) && ['produce', 'consume', 'broken'].every((n) => agentPhases(n).some((s) => s.name === 'build')),
    );
    const mine = receiver.spans.filter((s) => s.attributes.get('kiln.build.id') === id);
    expect([...receiver.contentTypes].every((t) => t.startsWith('application/json'))).toBe(true);

    // One trace id for the build, derived from the build id, named by the error report.
    expect(new Set(mine.map((s) => s.traceId))).toEqual(new Set([traceId]));
    const report = await coord.api<{ build_id: string; trace_id?: string }>(apiPath.buildError(id));
    expect(report.status).toBe(200);
    expect(report.body.trace_id).toBe(traceId);

    const one = (name: string, pred: (s: ReceivedSpan) => boolean = () => true): ReceivedSpan => {
      const found = mine.filter((s) => s.name === name && pred(s));
      expect(found, `${name}: ${found.length} spans`).toHaveLength(1);
      return found[0]!;
    };
    const root = one('build traced');
    expect(root.parentSpanId).toBe('');
    expect(root.service).toBe('kiln-coordinator');
    expect(root.attributes.get('kiln.build.state')).toBe('partial');
    expect(root.status).toBe(2); // ERROR: a node failed

    for (const node of ['produce', 'consume', 'broken']) {
      const byNode = (s: ReceivedSpan) => s.attributes.get('kiln.node') === node;
      const nodeSpan = one(`node ${node}`);
      expect(nodeSpan.parentSpanId).toBe(root.spanId);
      expect(nodeSpan.start).toBeGreaterThanOrEqual(root.start);
      expect(nodeSpan.end).toBeLessThanOrEqual(root.end);
      const wait = one('queue wait', byNode);
      expect(wait.parentSpanId).toBe(nodeSpan.spanId);
      expect(wait.attributes.get('kiln.queue.outcome')).toBe('assigned');
      const attempt = one('attempt 1', byNode);
      expect(attempt.parentSpanId).toBe(nodeSpan.spanId);
      expect(attempt.service).toBe('kiln-coordinator');
      expect(attempt.attributes.get('kiln.attempt')).toBe(1);
      expect(attempt.attributes.get('kiln.agent')).toBe('tracer-agent');
      expect(String(attempt.attributes.get('kiln.platform'))).toMatch(/^linux\//);
      expect(attempt.attributes.get('kiln.cache_hit')).toBe(false);
      expect(wait.end).toBeLessThanOrEqual(attempt.start + 1_000_000n); // assigned when the wait ended (ms clock)

      // The agent's phases: children of the coordinator's attempt span, across processes.
      const phases = agentPhases(node).filter((s) => s.traceId === traceId);
      expect(phases.length).toBeGreaterThanOrEqual(3);
      for (const p of phases) {
        expect(p.parentSpanId, `${node}/${p.name}`).toBe(attempt.spanId);
        expect(p.attributes.get('kiln.build.id')).toBe(id);
        expect(p.attributes.get('kiln.agent')).toBe('tracer-agent');
        expect(p.attributes.get('kiln.attempt.id')).toBe(attempt.attributes.get('kiln.attempt.id'));
        expect(p.start).toBeGreaterThanOrEqual(attempt.start - 1_000_000n);
      }
      const names = phases.map((p) => p.name);
      expect(names).toContain('input fetch');
      expect(names).toContain('build');
      if (node === 'produce') {
        expect(names).toContain('test');
        expect(names).toContain('output export');
        expect(nodeSpan.status).toBe(0);
      }
      if (node === 'broken') {
        expect(nodeSpan.status).toBe(2);
        expect(nodeSpan.attributes.get('kiln.failure_kind')).toBe('build');
        expect(attempt.status).toBe(2);
        expect(attempt.attributes.get('kiln.failure_kind')).toBe('build');
        expect(attempt.attributes.get('kiln.exit_code')).toBe(3);
        const failedPhase = phases.find((p) => p.name === 'build')!;
        expect(failedPhase.status).toBe(2);
        expect(failedPhase.attributes.get('kiln.failure_kind')).toBe('build');
        expect(names).not.toContain('output export');
      } else {
        expect(attempt.status).toBe(0);
        expect(attempt.attributes.get('kiln.attempt.state')).toBe('success');
      }
    }

    // Log lines around a node's life carry the build id: the agent's, and the coordinator's failure.
    const agentLines = jsonLogLines(agent.stderr + agent.stdout);
    for (const msg of ['building', 'build finished']) {
      const lines = agentLines.filter((l) => l.msg === msg && l.node === 'broken');
      expect(lines.length, msg).toBeGreaterThan(0);
      expect(lines.every((l) => l.build === id)).toBe(true);
    }
    const failedLine = jsonLogLines(coord.proc.stderr + coord.proc.stdout).find((l) => l.msg === 'node failed' && l.node === 'broken');
    expect(failedLine?.build).toBe(id);
  });

  it('a coordinator killed mid-build: the restarted one goes on with the same trace and parents', async () => {
    const id = await submitSpec(coord, { name: 'restarted', nodes: { slow: inline(`FROM kiln/busybox:1\nRUN echo "slow ${Date.now()}" && sleep 3`, { no_cache: true }) } });
    const traceId = traceIdOf(id);
    const ofBuild = () => receiver.spans.filter((s) => s.traceId === traceId);
    // running, and the queue wait (ended at dispatch) sent by the first coordinator
    await waitFor('the node to run and its queue wait to be sent', async () => (await getBuild(coord, id)).nodes[0]!.state === 'running' && ofBuild().some((s) => s.name === 'queue wait'));
    coord = await restartCoordinator(coord, { kill9: true });
    expect((await waitForBuild(coord, id)).state).toBe('success');
    await waitFor('the build span and the agent phases', () => ofBuild().some((s) => s.name === 'build restarted') && ofBuild().some((s) => s.service === 'kiln-agent' && s.name === 'build'));
    const spans = ofBuild();
    const named = (name: string) => spans.filter((s) => s.name === name);
    expect(named('build restarted')).toHaveLength(1);
    expect(named('node slow')).toHaveLength(1);
    expect(named('attempt 1')).toHaveLength(1);
    const [root, nodeSpan, attempt, wait] = [named('build restarted')[0]!, named('node slow')[0]!, named('attempt 1')[0]!, named('queue wait')[0]!];
    expect(nodeSpan.parentSpanId).toBe(root.spanId);
    expect(wait.parentSpanId).toBe(nodeSpan.spanId); // sent before the kill, under the span the restarted coordinator recorded
    expect(attempt.parentSpanId).toBe(nodeSpan.spanId);
    const phases = spans.filter((s) => s.service === 'kiln-agent');
    expect(phases.map((p) => p.name)).toEqual(expect.arrayContaining(['input fetch', 'build']));
    for (const p of phases) expect(p.parentSpanId).toBe(attempt.spanId); // the agent's spans under the adopted attempt
    expect(attempt.start).toBeLessThan(wait.end + 1_000_000n); // the attempt span starts at the recorded assignment, before the kill
  });
});
