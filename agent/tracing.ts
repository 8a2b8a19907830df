/**
 * The agent's tracer (issue 12): loaded by `kiln agent` only when an OTLP endpoint is
 * configured (a dynamic import in main.ts, so an agent without tracing loads neither this
 * module nor OpenTelemetry). Each job then records its phases (input fetch, resolve,
 * build, test, output export, cache export, push) as child spans of the attempt span whose
 * traceparent the coordinator put in the assign frame (session-job.ts); an assignment
 * without one (a coordinator that does not trace) records nothing.
 */
import type { Logger } from 'pino';
import { KILN_VERSION, openTracer, type Tracer, type TracingConfig } from '../shared/core.js';

export async function startAgentTracer(config: TracingConfig, agent: { name: string; hostname: string }, logger: Logger): Promise<Tracer> {
  const tracer = await openTracer({
    ...config,
    serviceVersion: KILN_VERSION,
    resource: { 'kiln.agent': agent.name, 'host.name': agent.hostname },
    onExportError: (message) => logger.warn({ err: message, url: config.url }, 'sending traces failed'),
  });
  logger.info({ url: config.url, service: config.serviceName }, 'tracing: sending spans over OTLP/HTTP');
  return tracer;
}
