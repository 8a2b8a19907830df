/**
 * `openTracer`: loads the OpenTelemetry SDK (tracing-otel.ts) with a dynamic import, only
 * when a process is configured to trace, and returns kiln's `Tracer` (tracing.ts) over it.
 * A module of its own so that the import graph has no cycle (tracing-otel.ts implements
 * the interfaces of tracing.ts).
 */
import type { Tracer, TracingOptions } from './tracing.js';

/** Loads the OpenTelemetry SDK and returns a tracer exporting OTLP/HTTP (JSON) to `options.url`. */
export async function openTracer(options: TracingOptions): Promise<Tracer> {
  const { otelTracer } = await import('./tracing-otel.js');
  return otelTracer(options);
}
