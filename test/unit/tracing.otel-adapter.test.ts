/**
 * kiln's Tracer over the real OpenTelemetry SDK (shared/tracing-otel.ts, through
 * openTracer): spans reach an OTLP/HTTP receiver (a node:http server on port 0) as JSON,
 * with the requested trace and span ids, the parent from a traceparent, start and end
 * times, attributes (undefined ones left out), ERROR status; shutdown sends what is left;
 * an unreachable collector is reported through onExportError and shutdown stays bounded.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTracer, spanIdOf, traceIdOf, traceparent } from '../../shared/index.js';

interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  status?: { code?: number; message?: string };
  attributes?: Array<{ key: string; value: Record<string, unknown> }>;
}

describe('OpenTelemetry tracer', () => {
  let server: Server;
  let url = '';
  const bodies: Array<{ contentType: string; spans: JsonSpan[]; service: unknown }> = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }; scopeSpans: Array<{ spans: JsonSpan[] }> }>;
        };
        for (const rs of body.resourceSpans) {
          bodies.push({
            contentType: String(req.headers['content-type']),
            service: rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue,
            spans: rs.scopeSpans.flatMap((s) => s.spans),
          });
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/traces`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('sends spans with the requested ids, parents, times, attributes and status as OTLP/JSON', async () => {
    const tracer = await openTracer({ url, serviceName: 'kiln-test', serviceVersion: '0.0.0', exportIntervalMs: 60_000 });
    const traceId = traceIdOf('b-x');
    tracer.startSpan({ name: 'root', parent: null, traceId, spanId: spanIdOf('b-x'), startTime: 1_000, attributes: { 'kiln.build.id': 'b-x', gone: undefined } }).end(3_000);
    const child = tracer.startSpan({ name: 'child', parent: traceparent(traceId, spanIdOf('b-x')), startTime: 1_500 });
    child.setAttributes({ n: 3, ok: false });
    child.fail('it broke');
    child.end(2_500);
    child.end(2_900); // later calls do nothing
    tracer.startSpan({ name: 'random', parent: null }).end();
    await tracer.shutdown(10_000); // sends what the batch holds (the interval is a minute)
    const spans = bodies.flatMap((b) => b.spans);
    expect(bodies.every((b) => b.contentType.startsWith('application/json') && b.service === 'kiln-test')).toBe(true);
    const by = new Map(spans.map((s) => [s.name, s]));
    expect(spans).toHaveLength(3);
    const root = by.get('root')!;
    expect([root.traceId, root.spanId, root.parentSpanId ?? '']).toEqual([traceId, spanIdOf('b-x'), '']);
    expect([root.startTimeUnixNano, root.endTimeUnixNano]).toEqual(['1000000000', '3000000000']);
    expect(root.attributes).toEqual([{ key: 'kiln.build.id', value: { stringValue: 'b-x' } }]);
    const c = by.get('child')!;
    expect([c.traceId, c.parentSpanId, c.endTimeUnixNano]).toEqual([traceId, spanIdOf('b-x'), '2500000000']);
    expect(c.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(c.status).toMatchObject({ code: 2, message: 'it broke' });
    expect(c.attributes?.map((a) => a.key).sort()).toEqual(['n', 'ok']);
    const r = by.get('random')!;
    expect(r.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(r.traceId).not.toBe(traceId);
    expect(r.spanId).not.toBe(spanIdOf('b-x'));
  });

  it('reports an unreachable collector and keeps shutdown bounded', async () => {
    const free = createServer();
    await new Promise<void>((r) => free.listen(0, '127.0.0.1', r));
    const port = (free.address() as { port: number }).port;
    await new Promise((r) => free.close(r)); // nothing listens there now
    const errors: string[] = [];
    const tracer = await openTracer({ url: `http://127.0.0.1:${port}/v1/traces`, serviceName: 's', serviceVersion: '0', exportIntervalMs: 20, onExportError: (m) => errors.push(m) });
    tracer.startSpan({ name: 'lost', parent: null }).end();
    await tracer.shutdown(1_000);
    await expect.poll(() => errors, { timeout: 30_000 }).toEqual([expect.stringContaining('ECONNREFUSED')]);
  });
});
