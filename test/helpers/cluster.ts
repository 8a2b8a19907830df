/**
 * Test helpers that run the real thing: the compiled `kiln` binary (dist/cli/main.js)
 * as coordinator and agent processes on loopback ports, real Docker engines, real files.
 * Time limits here are hang guards (a test that waits forever is a failure), never
 * performance assertions.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll } from 'vitest';

export const REPO = resolve(import.meta.dirname, '..', '..');
export const KILN_BIN = join(REPO, 'dist', 'cli', 'main.js');
export const DOCKER_HOST = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
export const DOCKER_HOST_SECOND = process.env.KILN_DOCKER_HOST_SECOND;

export function requireBuilt(): void {
  if (!existsSync(KILN_BIN)) throw new Error(`${KILN_BIN} is missing: run \`npm run build\` (scripts/test.sh does) before the integration tests`);
}

export async function tempDir(prefix: string): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `kiln-${prefix}-`));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/** Thrown inside a waitFor predicate to stop waiting at once (e.g. the process died). */
export class StopWaiting extends Error {}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (err) {
      if (err instanceof StopWaiting) throw err;
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export class Proc {
  stdout = '';
  stderr = '';
  exitCode: number | null = null;
  signal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((res) =>
      child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.signal = signal;
        res(code);
      }),
    );
  }

  get running(): boolean {
    return this.exitCode === null && this.signal === null;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
    await this.exited;
    clearTimeout(t);
  }

  async kill9(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

export function spawnKiln(args: string[], env: Record<string, string | undefined> = {}): Proc {
  requireBuilt();
  const child = spawn(process.execPath, [KILN_BIN, ...args], {
    env: { ...process.env, NO_COLOR: '1', KILN_LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Proc(child);
}

/** Runs a kiln CLI command to completion. */
export async function kiln(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawnKiln(args, env);
  const code = await p.exited;
  return { code, stdout: p.stdout, stderr: p.stderr };
}

export interface CoordinatorHandle {
  proc: Proc;
  url: string;
  port: number;
  dataDir: string;
  apiToken: string;
  agentTokenFile: string;
  apiTokenFile: string;
  /** env for CLI commands against this coordinator */
  cliEnv: Record<string, string>;
  api: <T = unknown>(path: string, init?: RequestInit) => Promise<{ status: number; body: T; headers: Headers }>;
}

export async function startCoordinator(opts: { dataDir: string; port?: number; args?: string[]; env?: Record<string, string> }): Promise<CoordinatorHandle> {
  const proc = spawnKiln(['coordinator', '--data-dir', opts.dataDir, '--listen', `127.0.0.1:${opts.port ?? 0}`, ...(opts.args ?? [])], opts.env);
  const m = await waitFor(
    'the coordinator to listen',
    () => {
      if (!proc.running) throw new StopWaiting(`coordinator exited with ${proc.exitCode}: ${proc.stderr}`);
      return /listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(proc.stderr);
    },
    30_000,
    50,
  );
  const url = m[1]!;
  const agentTokenFile = join(opts.dataDir, 'tokens', 'agent');
  const apiTokenFile = join(opts.dataDir, 'tokens', 'api');
  const apiToken = (await readFile(apiTokenFile, 'utf8')).trim();
  const api = async <T>(path: string, init: RequestInit = {}) => {
    const res = await fetch(`${url}${path}`, { ...init, headers: { authorization: `Bearer ${apiToken}`, ...((init.headers as Record<string, string>) ?? {}) } });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* text */
    }
    return { status: res.status, body: body as T, headers: res.headers };
  };
  return {
    proc,
    url,
    port: Number(m[2]),
    dataDir: opts.dataDir,
    apiToken,
    agentTokenFile,
    apiTokenFile,
    cliEnv: { KILN_COORDINATOR: url, KILN_TOKEN_FILE: apiTokenFile },
    api,
  };
}

export interface AgentOpts {
  coordinator: CoordinatorHandle;
  name: string;
  workDir: string;
  dockerHost?: string;
  platforms?: string[];
  labels?: string;
  maxJobs?: number;
  executor?: 'docker' | 'noop';
  /** Override the coordinator URL (e.g. a proxy). */
  url?: string;
  env?: Record<string, string>;
}

export function spawnAgent(o: AgentOpts): Proc {
  const args = ['agent', '--coordinator', o.url ?? o.coordinator.url, '--token-file', o.coordinator.agentTokenFile, '--name', o.name, '--work-dir', o.workDir, '--docker-host', o.dockerHost ?? DOCKER_HOST];
  if (o.platforms?.length) args.push('--platforms', o.platforms.join(','));
  if (o.labels) args.push('--labels', o.labels);
  if (o.maxJobs) args.push('--max-jobs', String(o.maxJobs));
  if (o.executor) args.push('--executor', o.executor);
  return spawnKiln(args, o.env);
}

interface AgentsPage {
  items: Array<{ name: string; state: string; running: string[] }>;
}

/** Starts an agent and waits until the coordinator lists it as connected. */
export async function startAgent(o: AgentOpts): Promise<Proc> {
  const proc = spawnAgent(o);
  await waitForAgent(o.coordinator, o.name, 'connected', proc);
  return proc;
}

export async function waitForAgent(c: CoordinatorHandle, name: string, state: string, proc?: Proc): Promise<void> {
  await waitFor(`agent ${name} to be ${state}`, async () => {
    if (proc && !proc.running) throw new StopWaiting(`agent ${name} exited with ${proc.exitCode}: ${proc.stderr.slice(-2000)}`);
    const r = await c.api<AgentsPage>('/api/v1/agents');
    return r.body.items?.some((a) => a.name === name && a.state === state);
  });
}

export interface BuildBody {
  id: string;
  state: string;
  nodes: Array<{
    name: string;
    state: string;
    agent: string | null;
    exit_code: number | null;
    error: string | null;
    failed_step: string | null;
    image_id: string | null;
    attempts: Array<{ id: string; agent: string; state: string; reason: string | null; number: number }>;
  }>;
}

export async function submitSpec(c: CoordinatorHandle, spec: unknown): Promise<string> {
  const r = await c.api<{ id: string }>('/api/v1/builds', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
  if (r.status !== 201) throw new Error(`submit failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.id;
}

export async function waitForBuild(c: CoordinatorHandle, id: string, pred: (b: BuildBody) => boolean = (b) => ['success', 'failed', 'partial', 'cancelled'].includes(b.state), timeoutMs = 120_000): Promise<BuildBody> {
  return waitFor(
    `build ${id}`,
    async () => {
      const r = await c.api<BuildBody>(`/api/v1/builds/${id}`);
      return r.status === 200 && pred(r.body) ? r.body : null;
    },
    timeoutMs,
    100,
  );
}

export async function nodeLog(c: CoordinatorHandle, id: string, node: string): Promise<string> {
  const r = await c.api<string>(`/api/v1/builds/${id}/nodes/${node}/logs`);
  return typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
}

/** A Dockerfile-inline node spec. */
export function inline(dockerfile: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { dockerfile_inline: dockerfile, ...extra };
}

export interface ClusterContext {
  /** A temp dir for this suite (removed afterwards). */
  dir: string;
  /** The suite's coordinator; a test may replace it (e.g. after a restart). */
  coord: CoordinatorHandle;
  /** Stops `p` when the suite ends (last started, first stopped). */
  track(p: Proc): Proc;
  /** Starts a tracked agent against `coord`, work dir under `dir`. */
  agent(o: Omit<AgentOpts, 'coordinator' | 'workDir'> & { workDir?: string }): Promise<Proc>;
}

/**
 * Registers beforeAll/afterAll hooks that give a suite a temp dir, a coordinator process
 * and the listed agents, and stop every tracked process and remove the dir afterwards.
 */
export function useCluster(prefix: string, opts: { coordinatorArgs?: string[]; agents?: Array<Omit<AgentOpts, 'coordinator' | 'workDir'>> } = {}): ClusterContext {
  const procs: Proc[] = [];
  let cleanup: () => Promise<void> = async () => {};
  const ctx: ClusterContext = {
    dir: '',
    coord: undefined as unknown as CoordinatorHandle,
    track: (p) => {
      procs.push(p);
      return p;
    },
    agent: async (o) => ctx.track(await startAgent({ ...o, coordinator: ctx.coord, workDir: o.workDir ?? join(ctx.dir, `agent-${o.name}`) })),
  };
  beforeAll(async () => {
    const d = await tempDir(prefix);
    ctx.dir = d.path;
    cleanup = d.cleanup;
    ctx.coord = await startCoordinator({ dataDir: join(d.path, 'data'), args: opts.coordinatorArgs ?? [] });
    ctx.track(ctx.coord.proc);
    for (const a of opts.agents ?? []) await ctx.agent(a);
  });
  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await cleanup();
  });
  return ctx;
}
