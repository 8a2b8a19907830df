/**
 * Tracing behind a tiny interface of kiln's own, so that the engine and the agent's job
 * code never import OpenTelemetry: a `Tracer` starts spans (`startSpan`), a span takes
 * attributes (`setAttributes`), is marked failed (`fail`) and ends (`end`). Tracing is off
 * unless an OTLP endpoint is configured; then `openTracer` (tracing-open.ts) loads the
 * OpenTelemetry SDK (tracing-otel.ts) with a dynamic import, so a process without tracing never loads it and
 * its hooks cost one null check.
 *
 * Ids: a build's trace id is derived from its build id (`traceIdOf`), and the coordinator
 * derives the span ids of builds, nodes and attempts from their ids (`spanIdOf`), so a
 * span can be recorded whole when it ends, with its recorded start time, and spans made by
 * a restarted coordinator (or by the agent, from the `traceparent` in the assign frame)
 * still join the same trace and parents. `traceparent` is the W3C Trace Context header.
 *
 * `PhaseSpans` is the agent's use: one child span per phase of a job (input fetch, build,
 * test, ...), each ended when the next begins, the last one when the job ends.
 */
import { createHash } from 'node:crypto';
import { configError } from './config-values.js';
import { settingTypes, type SettingRow, type SettingsReader } from './settings.js';

/** Span attribute values (undefined ones are left out). */
export type SpanAttributes = Readonly<Record<string, string | number | boolean | undefined>>;

export interface SpanHandle {
  setAttributes(attributes: SpanAttributes): void;
  /** Marks the span as failed (status ERROR) with a message. */
  fail(message: string): void;
  /** Ends the span (at `endTime`, ms since the epoch; default now). Later calls do nothing. */
  end(endTime?: number): void;
}

export interface SpanStart {
  name: string;
  /** The parent as a W3C traceparent; null: a new trace (with `traceId`, or a random one). */
  parent: string | null;
  /** ms since the epoch; default now. */
  startTime?: number;
  attributes?: SpanAttributes;
  /** The trace id of a span without a parent (32 hex digits). */
  traceId?: string;
  /** This span's own id (16 hex digits; see spanIdOf); default random. */
  spanId?: string;
}

export interface Tracer {
  startSpan(start: SpanStart): SpanHandle;
  /** Sends what is left and stops, within `timeoutMs` at most. */
  shutdown(timeoutMs: number): Promise<void>;
}

export interface TracingOptions {
  /** Where traces go: the OTLP/HTTP traces URL (…/v1/traces). */
  url: string;
  serviceName: string;
  serviceVersion: string;
  /** How often finished spans are sent (the batch delay), ms. */
  exportIntervalMs: number;
  /** Resource attributes of this process (e.g. the agent's name). */
  resource?: Readonly<Record<string, string>>;
  /** Export failures (at most one a minute is reported). */
  onExportError?: (message: string) => void;
}

export const NOOP_SPAN: SpanHandle = Object.freeze({ setAttributes: () => {}, fail: () => {}, end: () => {} });

/**
 * The tracing settings, rows of both processes' tables. The endpoint also comes from the
 * standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) and OTEL_EXPORTER_OTLP_ENDPOINT
 * (`/v1/traces` added), as environment: below KILN_OTLP_ENDPOINT and the flag, above the file.
 */
export function tracingSettings(serviceName: string) {
  return {
    otlpEndpoint: {
      type: settingTypes.text('url'),
      key: 'tracing.otlp_endpoint',
      env: 'KILN_OTLP_ENDPOINT',
      defaultText: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; none: tracing off',
      description: 'OpenTelemetry: OTLP/HTTP collector for build traces, http(s)://host:4318 (/v1/traces is added); empty: off',
    },
    tracingServiceName: { type: settingTypes.text('name'), key: 'tracing.service_name', env: 'OTEL_SERVICE_NAME', default: serviceName, description: 'OpenTelemetry service.name of this process' },
    tracingExportInterval: { type: settingTypes.duration(), key: 'tracing.export_interval', env: 'KILN_TRACING_EXPORT_INTERVAL', default: '5s', description: 'how often finished spans are sent to the collector' },
  } as const satisfies Record<string, SettingRow<any>>;
}

/** What `openTracer` needs from the settings, or null when no endpoint is configured (tracing off). */
export type TracingConfig = Omit<TracingOptions, 'serviceVersion' | 'resource' | 'onExportError'>;

/** Reads the tracing rows (and the standard OTEL_ variables, see tracingSettings); errors name the setting. */
export function loadTracingConfig(s: SettingsReader<ReturnType<typeof tracingSettings>>, env: Readonly<Record<string, string | undefined>>): TracingConfig | null {
  const picked = s.pick('otlpEndpoint');
  let endpoint: string | undefined;
  let url: string | undefined;
  if (picked !== undefined && (picked.layer === 'flag' || picked.layer === 'env')) endpoint = s.get('otlpEndpoint');
  else if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) url = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  else if (env.OTEL_EXPORTER_OTLP_ENDPOINT) endpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  else endpoint = s.get('otlpEndpoint');
  if (url === undefined) {
    if (endpoint === undefined || endpoint.trim() === '') return null;
    url = otlpTracesUrl(endpoint.trim());
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw configError('tracing.otlp_endpoint', `'${url.slice(0, 200)}' is not a URL (use http://host:4318)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw configError('tracing.otlp_endpoint', `unsupported scheme '${parsed.protocol}' in '${url.slice(0, 200)}' (OTLP over HTTP: http:// or https://)`);
  if (parsed.username || parsed.password) throw configError('tracing.otlp_endpoint', 'must not hold credentials (give them in OTEL_EXPORTER_OTLP_HEADERS)');
  const serviceName = s.need('tracingServiceName');
  if (!/^[\x21-\x7e]{1,128}$/.test(serviceName)) throw configError('tracing.service_name', `'${serviceName.slice(0, 80)}' must be 1..128 printable characters without spaces`);
  return { url, serviceName, exportIntervalMs: s.need('tracingExportInterval') };
}

/** The OTLP/HTTP traces URL of an endpoint: a base URL gets `/v1/traces`; one ending in it is kept. */
export function otlpTracesUrl(endpoint: string): string {
  const trimmed = endpoint.replace(/\/+$/, '');
  return trimmed.endsWith('/v1/traces') ? trimmed : `${trimmed}/v1/traces`;
}

function hexOf(key: string, chars: number): string {
  const hex = createHash('sha256').update(key).digest('hex').slice(0, chars);
  // all zeros is an invalid id in W3C Trace Context (sha256 practically never gives it)
  return /^0+$/.test(hex) ? `${hex.slice(0, -1)}1` : hex;
}

/** The trace id of a build: 32 hex digits derived from its id. */
export function traceIdOf(buildId: string): string {
  return hexOf(`kiln-trace:${buildId}`, 32);
}

/** A span id derived from a key (a build id, `<build>/<node>#<n>`, an attempt id): 16 hex digits. */
export function spanIdOf(key: string): string {
  return hexOf(`kiln-span:${key}`, 16);
}

/** The W3C traceparent of a sampled span. */
export function traceparent(traceId: string, spanId: string): string {
  return `00-${traceId}-${spanId}-01`;
}

const TRACEPARENT_RE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The parts of a W3C traceparent (version 00), or null when it is not one. */
export function parseTraceparent(text: string): { traceId: string; spanId: string; sampled: boolean } | null {
  const m = TRACEPARENT_RE.exec(text);
  if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return null;
  return { traceId: m[1]!, spanId: m[2]!, sampled: (parseInt(m[3]!, 16) & 1) === 1 };
}

/**
 * Consecutive child spans of one parent, one per phase: `phase(name)` ends the current
 * phase and starts the next one, `phase(null)` only ends it, `end()` ends the last one
 * (marked failed when a message is given).
 */
export class PhaseSpans {
  private current: SpanHandle | null = null;

  constructor(
    private readonly tracer: Tracer,
    private readonly parent: string,
    private readonly attributes: SpanAttributes,
  ) {}

  phase(name: string | null, attributes?: SpanAttributes): void {
    this.current?.end();
    this.current = name === null ? null : this.tracer.startSpan({ name, parent: this.parent, attributes: attributes ? { ...this.attributes, ...attributes } : this.attributes });
  }

  /** Attributes of the current phase (e.g. a test's exit code). */
  note(attributes: SpanAttributes): void {
    this.current?.setAttributes(attributes);
  }

  end(failure?: { message: string; attributes?: SpanAttributes }): void {
    if (this.current && failure) {
      if (failure.attributes) this.current.setAttributes(failure.attributes);
      this.current.fail(failure.message);
    }
    this.current?.end();
    this.current = null;
  }
}
