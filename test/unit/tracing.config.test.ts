/**
 * The tracing settings of both processes (issue 12): off by default; the endpoint from
 * kiln's own setting (flag, KILN_OTLP_ENDPOINT, file) or the standard
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT with one precedence;
 * `/v1/traces` added to a base URL; bad values refused naming the setting. And that
 * neither process loads OpenTelemetry (or kiln's modules around it) up front: only
 * through a dynamic import behind the setting.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { loadCoordinatorConfig } from '../../coordinator/config.js';

describe('tracing settings', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-tracing-cfg-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));
  const agentHost = (env: Record<string, string> = {}) => ({ env: { HOME: dir, KILN_AGENT_TOKEN: 't', KILN_COORDINATOR: 'https://c:8080', ...env }, hostname: 'h', isTTY: false });
  const coordHost = (env: Record<string, string> = {}) => ({ env: { HOME: dir, ...env }, arch: 'x64', isTTY: false });

  it('is off unless an endpoint is configured', () => {
    expect(loadAgentConfig({}, agentHost()).tracing).toBeNull();
    expect(loadCoordinatorConfig({}, coordHost()).tracing).toBeNull();
  });

  it('takes the endpoint from every layer and the standard variables, with one precedence', async () => {
    const file = join(dir, 'c.yaml');
    await writeFile(file, 'tracing:\n  otlp_endpoint: http://from-file:4318\n  export_interval: 250ms\n');
    const url = (flags: Record<string, string>, env: Record<string, string> = {}) => loadCoordinatorConfig({ config: file, ...flags }, coordHost(env)).tracing?.url;
    expect(url({})).toBe('http://from-file:4318/v1/traces');
    expect(url({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel:4318/' })).toBe('http://otel:4318/v1/traces');
    expect(url({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces:443/custom/path' })).toBe('https://traces:443/custom/path');
    expect(url({}, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:1/x', KILN_OTLP_ENDPOINT: 'http://kiln:4318/v1/traces' })).toBe('http://kiln:4318/v1/traces');
    expect(url({ otlpEndpoint: 'http://flag:4318' }, { KILN_OTLP_ENDPOINT: 'http://kiln:4318' })).toBe('http://flag:4318/v1/traces');
    // an empty value turns it off, also over the standard variables
    expect(url({ otlpEndpoint: '' }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel:4318' })).toBeUndefined();
    const c = loadCoordinatorConfig({ config: file }, coordHost());
    expect(c.tracing).toEqual({ url: 'http://from-file:4318/v1/traces', serviceName: 'kiln-coordinator', exportIntervalMs: 250 });
    const a = loadAgentConfig({}, agentHost({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel:4318', OTEL_SERVICE_NAME: 'gpu-agents' }));
    expect(a.tracing).toEqual({ url: 'http://otel:4318/v1/traces', serviceName: 'gpu-agents', exportIntervalMs: 5000 });
    expect(loadAgentConfig({ otlpEndpoint: 'http://x:4318' }, agentHost()).tracing?.serviceName).toBe('kiln-agent');
  });

  it('refuses a bad endpoint, service name or interval, naming the setting', () => {
    expect(() => loadAgentConfig({ otlpEndpoint: 'collector:4318' }, agentHost())).toThrow(/config tracing.otlp_endpoint: unsupported scheme 'collector:'/);
    expect(() => loadAgentConfig({ otlpEndpoint: 'not a url' }, agentHost())).toThrow(/config tracing.otlp_endpoint: 'not a url\/v1\/traces' is not a URL/);
    expect(() => loadAgentConfig({}, agentHost({ OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://c:4317' }))).toThrow(/tracing.otlp_endpoint: unsupported scheme 'grpc:'/);
    expect(() => loadCoordinatorConfig({ otlpEndpoint: 'http://user:pw@c:4318' }, coordHost())).toThrow(/tracing.otlp_endpoint: must not hold credentials/);
    expect(() => loadCoordinatorConfig({ otlpEndpoint: 'http://c:4318', tracingServiceName: 'two words' }, coordHost())).toThrow(/config tracing.service_name/);
    expect(() => loadCoordinatorConfig({ otlpEndpoint: 'http://c:4318', tracingExportInterval: 'often' }, coordHost())).toThrow(/tracing.export_interval/);
  });
});

describe('what is loaded without tracing', () => {
  const ROOT = join(import.meta.dirname, '..', '..');
  const staticImports = (file: string): string[] =>
    [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^(?:import|export)(?!\s+type\b)[^;]*?\sfrom\s+'([^']+)';/gms)].map((m) => m[1]!);

  it('neither process reaches OpenTelemetry or the modules loading it through static imports', () => {
    for (const main of ['agent/main.ts', 'coordinator/main.ts']) {
      const seen = new Set<string>();
      const packages = new Set<string>();
      const todo = ['cli/main.ts', 'cli/program.ts', main];
      while (todo.length > 0) {
        const file = todo.pop()!;
        if (seen.has(file)) continue;
        seen.add(file);
        for (const spec of staticImports(file)) {
          if (spec.startsWith('.')) todo.push(relative(ROOT, join(ROOT, dirname(file), spec)).replace(/\.js$/, '.ts'));
          else packages.add(spec);
        }
      }
      expect(seen.size, main).toBeGreaterThan(20);
      expect([...packages].filter((p) => p.startsWith('@opentelemetry/')), main).toEqual([]);
      expect([...seen].filter((f) => f === 'shared/tracing-otel.ts' || f === 'agent/tracing.ts'), main).toEqual([]);
    }
    // and the module that does load it is reached only by a dynamic import
    expect(readFileSync(join(ROOT, 'shared/tracing-open.ts'), 'utf8')).toContain("await import('./tracing-otel.js')");
  });
});
