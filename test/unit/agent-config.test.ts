/**
 * The agent's min_free_disk setting: 512 MiB by default, layered file < env < flag like
 * every other setting, and a bad size refused with the setting named. The token: the
 * token file and the token itself are one choice, layered like the rest. And what an
 * idle agent loads: its static imports reach no coordinator module and none of the
 * coordinator's packages, nor dockerode (loaded with the first build).
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';

describe('agent config: min_free_disk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-agent-cfg-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, KILN_AGENT_TOKEN: 't', KILN_COORDINATOR: 'https://c:8080', ...env }, hostname: 'h', isTTY: false });

  it('defaults to 512MiB and layers file < env < flag', async () => {
    expect(loadAgentConfig({}, host()).minFreeDiskBytes).toBe(512 * 1024 * 1024);
    const file = join(dir, 'a.yaml');
    await writeFile(file, 'min_free_disk: 2GiB\n');
    expect(loadAgentConfig({ config: file }, host()).minFreeDiskBytes).toBe(2 * 1024 ** 3);
    expect(loadAgentConfig({ config: file }, host({ KILN_AGENT_MIN_FREE_DISK: '100MiB' })).minFreeDiskBytes).toBe(100 * 1024 ** 2);
    expect(loadAgentConfig({ config: file, minFreeDisk: '0' }, host({ KILN_AGENT_MIN_FREE_DISK: '100MiB' })).minFreeDiskBytes).toBe(0);
    await writeFile(file, 'min_free_disk: 1048576\n');
    expect(loadAgentConfig({ config: file }, host()).minFreeDiskBytes).toBe(1048576);
  });

  it('names the setting of a bad value', () => {
    expect(() => loadAgentConfig({ minFreeDisk: 'lots' }, host())).toThrow(/config min_free_disk: 'lots' is not a byte size/);
    expect(() => loadAgentConfig({}, host({ KILN_AGENT_MIN_FREE_DISK: '-5MiB' }))).toThrow(/min_free_disk/);
  });

  it('the shipped example config sets it', async () => {
    const token = join(dir, 'token');
    await writeFile(token, 't\n');
    const c = loadAgentConfig({ config: join(import.meta.dirname, '..', '..', 'config', 'agent.example.yaml'), tokenFile: token }, host());
    expect(c.minFreeDiskBytes).toBe(1024 ** 3);
  });
});

describe('agent config: the token', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-agent-token-'));
    await writeFile(join(dir, 'token'), 'from-file\n');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, KILN_COORDINATOR: 'https://c:8080', ...env }, hostname: 'h', isTTY: false });

  it('takes the higher layer of token_file and token, the file on a tie', async () => {
    const tokenFile = join(dir, 'token');
    expect(loadAgentConfig({ tokenFile }, host({ KILN_AGENT_TOKEN: 'from-env' })).token).toBe('from-file');
    expect(loadAgentConfig({}, host({ KILN_AGENT_TOKEN_FILE: tokenFile, KILN_AGENT_TOKEN: 'from-env' })).token).toBe('from-file');
    const file = join(dir, 'a.yaml');
    await writeFile(file, `token_file: ${tokenFile}\n`);
    expect(loadAgentConfig({ config: file }, host({ KILN_AGENT_TOKEN: 'from-env' }))).toMatchObject({ token: 'from-env', tokenSource: 'KILN_AGENT_TOKEN' });
    await writeFile(file, 'token: in-the-file\n');
    expect(loadAgentConfig({ config: file }, host())).toMatchObject({ token: 'in-the-file', tokenSource: 'token (config file)' });
    // The systemd credential is the default token file: any layer that names a token wins over it.
    expect(loadAgentConfig({}, host({ CREDENTIALS_DIRECTORY: dir })).token).toBe('from-file');
    expect(loadAgentConfig({}, host({ CREDENTIALS_DIRECTORY: dir, KILN_AGENT_TOKEN: 'from-env' })).token).toBe('from-env');
  });
});

describe('what an idle agent loads', () => {
  const ROOT = join(import.meta.dirname, '..', '..');
  /** Static imports (not `import type`, not dynamic `import()`) of a source file. */
  const staticImports = (file: string): string[] =>
    [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^(?:import|export)(?!\s+type\b)[^;]*?\sfrom\s+'([^']+)';/gms)].map((m) => m[1]!);

  it('reaches no coordinator module and none of hono, prom-client, lowdb, minio or dockerode from cli/main.ts, cli/program.ts and agent/main.ts', () => {
    const seen = new Set<string>();
    const packages = new Set<string>();
    const todo = ['cli/main.ts', 'cli/program.ts', 'agent/main.ts'];
    while (todo.length > 0) {
      const file = todo.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const spec of staticImports(file)) {
        if (spec.startsWith('.')) todo.push(relative(ROOT, join(ROOT, dirname(file), spec)).replace(/\.js$/, '.ts'));
        else if (!spec.startsWith('node:')) packages.add(spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/'));
      }
    }
    expect([...seen].filter((f) => f.startsWith('coordinator/'))).toEqual([]);
    expect([...seen]).toContain('agent/agent.ts');
    for (const heavy of ['hono', '@hono/zod-openapi', '@hono/node-server', 'prom-client', 'lowdb', 'minio', 'dockerode']) expect([...packages], heavy).not.toContain(heavy);
    // nor what only a build or a config file needs, nor the HTTP API and spec schemas
    for (const later of ['yaml', 'tar-stream', 'protobufjs']) expect([...packages], later).not.toContain(later);
    expect([...seen].filter((f) => f === 'shared/index.ts' || /^shared\/(api|api-fleet|log-events)\.ts$|^shared\/spec\/(build-spec|parse-spec|spec-json-schema)\.ts$/.test(f))).toEqual([]);
  });
});
