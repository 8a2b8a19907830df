/**
 * The OpenTelemetry implementation of kiln's `Tracer` (tracing.ts): the maintained SDK
 * (`@opentelemetry/sdk-trace-base`) with a batch span processor and the OTLP/HTTP exporter
 * (`@opentelemetry/exporter-trace-otlp-http`, JSON bodies). Loaded only by `openTracer`,
 * i.e. only when an OTLP endpoint is configured; the packages load with `require` (they
 * are CommonJS, as ws and pino, see logger.ts).
 *
 * Explicit ids: kiln records some spans whole when they end, with ids derived from build,
 * node and attempt ids (tracing.ts). The SDK takes ids only from its id generator, so the
 * generator here hands out a requested id once (set just before the synchronous
 * `startSpan` call) and random ids otherwise.
 *
 * The exporter also honours the standard OTEL_EXPORTER_OTLP_HEADERS / _TIMEOUT /
 * _COMPRESSION variables and the SDK OTEL_TRACES_SAMPLER, read by the SDK itself.
 */
import { createRequire } from 'node:module';
import type * as OtelApi from '@opentelemetry/api';
import type * as OtelSdk from '@opentelemetry/sdk-trace-base';
import type * as OtelExporter from '@opentelemetry/exporter-trace-otlp-http';
import type * as OtelResources from '@opentelemetry/resources';
import { parseTraceparent, type SpanAttributes, type SpanHandle, type SpanStart, type Tracer, type TracingOptions } from './tracing.js';

const require = createRequire(import.meta.url);

/** Hands out the next requested ids once, random ones otherwise. */
class RequestedIds implements OtelSdk.IdGenerator {
  nextTraceId: string | null = null;
  nextSpanId: string | null = null;

  constructor(private readonly random: OtelSdk.IdGenerator) {}

  generateTraceId(): string {
    const id = this.nextTraceId ?? this.random.generateTraceId();
    this.nextTraceId = null;
    return id;
  }

  generateSpanId(): string {
    const id = this.nextSpanId ?? this.random.generateSpanId();
    this.nextSpanId = null;
    return id;
  }
}

function clean(attributes: SpanAttributes | undefined): OtelApi.Attributes | undefined {
  if (!attributes) return undefined;
  const out: OtelApi.Attributes = {};
  for (const [k, v] of Object.entries(attributes)) if (v !== undefined) out[k] = v;
  return out;
}

/** One argument of a diagnostic message as text (errors come as JSON, plain objects or Errors). */
function describe(a: unknown): string {
  if (typeof a === 'string') {
    // the SDK's error handler sends an exception as its JSON
    if (!a.startsWith('{')) return a;
    try {
      return describe(JSON.parse(a) as unknown);
    } catch {
      return a;
    }
  }
  if (a instanceof Error) return a.message;
  if (a !== null && typeof a === 'object' && 'message' in a) return String((a as { message: unknown }).message);
  return JSON.stringify(a) ?? String(a);
}

let diagInstalled = false;
let diagTarget: (...args: unknown[]) => void = () => {};

/** Batches of at most this many spans wait for export; more are dropped (the SDK counts them). */
const MAX_QUEUED_SPANS = 16_384;
const ERROR_REPORT_EVERY_MS = 60_000;

export function otelTracer(options: TracingOptions): Tracer {
  const api = require('@opentelemetry/api') as typeof OtelApi;
  const sdk = require('@opentelemetry/sdk-trace-base') as typeof OtelSdk;
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as typeof OtelExporter;
  const { resourceFromAttributes } = require('@opentelemetry/resources') as typeof OtelResources;

  // Export failures come through OpenTelemetry's diagnostic logger (one per process: the
  // latest tracer's handler gets them), reported at most once a minute.
  let lastReport = 0;
  const report = (...args: unknown[]): void => {
    const now = Date.now();
    if (!options.onExportError || now - lastReport < ERROR_REPORT_EVERY_MS) return;
    lastReport = now;
    options.onExportError(args.map(describe).join(' ').slice(0, 500));
  };
  diagTarget = report;
  if (!diagInstalled) {
    diagInstalled = true;
    const forward = (...args: unknown[]): void => diagTarget(...args);
    api.diag.setLogger({ error: forward, warn: forward, info: () => {}, debug: () => {}, verbose: () => {} }, api.DiagLogLevel.WARN);
  }

  const ids = new RequestedIds(new sdk.RandomIdGenerator());
  const exporter = new OTLPTraceExporter({ url: options.url });
  const processor = new sdk.BatchSpanProcessor(exporter, {
    scheduledDelayMillis: options.exportIntervalMs,
    maxQueueSize: MAX_QUEUED_SPANS,
    maxExportBatchSize: 512,
  });
  const provider = new sdk.BasicTracerProvider({
    // service.name, service.version (semantic conventions) and the process's own attributes
    resource: resourceFromAttributes({ 'service.name': options.serviceName, 'service.version': options.serviceVersion, ...options.resource }),
    idGenerator: ids,
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer('kiln', options.serviceVersion);

  return {
    startSpan(start: SpanStart): SpanHandle {
      let ctx = api.ROOT_CONTEXT;
      const parent = start.parent === null ? null : parseTraceparent(start.parent);
      if (parent) ctx = api.trace.setSpanContext(ctx, { traceId: parent.traceId, spanId: parent.spanId, traceFlags: parent.sampled ? api.TraceFlags.SAMPLED : api.TraceFlags.NONE, isRemote: true });
      else if (start.traceId !== undefined) ids.nextTraceId = start.traceId;
      if (start.spanId !== undefined) ids.nextSpanId = start.spanId;
      let span: OtelApi.Span;
      try {
        // a Date: the SDK reads a small number as performance.now() time, not epoch ms
        span = tracer.startSpan(start.name, { startTime: start.startTime === undefined ? undefined : new Date(start.startTime), attributes: clean(start.attributes) }, ctx);
      } finally {
        ids.nextTraceId = null;
        ids.nextSpanId = null;
      }
      return {
        setAttributes: (a) => void span.setAttributes(clean(a) ?? {}),
        fail: (message) => void span.setStatus({ code: api.SpanStatusCode.ERROR, message: message.slice(0, 1000) }),
        end: (endTime) => span.end(endTime === undefined ? undefined : new Date(endTime)),
      };
    },
    async shutdown(timeoutMs: number): Promise<void> {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
        timer.unref();
      });
      await Promise.race([provider.shutdown().catch((err: unknown) => report(err)), bound]);
      clearTimeout(timer);
    },
  };
}
