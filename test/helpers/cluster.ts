/**
 * Test helpers that run the real thing: the compiled `kiln` binary (dist/cli/main.js)
 * as coordinator and agent processes on loopback ports, real Docker engines, real files.
 * Time limits here are hang guards (a test that waits forever is a failure), never
 * performance assertions.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll } from 'vitest';
import { apiPath, coerceError } from '../../shared/index.js';

export const REPO = resolve(import.meta.dirname, '..', '..');
export const KILN_BIN = join(REPO, 'dist', 'cli', 'main.js');
export const DOCKER_HOST = process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
export const DOCKER_HOST_SECOND = process.env.KILN_DOCKER_HOST_SECOND;

export function requireBuilt(): void {
  if (!existsSync(KILN_BIN)) throw new Error(`${KILN_BIN} is missing: run \`npm run build\` (scripts/test.sh does) before the integration tests`);
}

/** A TCP port free on 127.0.0.1 right now (for a server the test starts as a separate process). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
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
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}${lastErr ? ` (last error: ${coerceError(lastErr).message})` : ''}`);
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

  /** SIGSTOP was sent and no SIGCONT since. */
  paused = false;

  get running(): boolean {
    return this.exitCode === null && this.signal === null;
  }

  /** Sends a signal without waiting for anything (e.g. a first SIGTERM that only drains). */
  kill(signal: NodeJS.Signals): void {
    if (!this.running) return;
    this.child.kill(signal);
    if (signal === 'SIGSTOP') this.paused = true;
    if (signal === 'SIGCONT') this.paused = false;
  }

  /** SIGSTOP: the process freezes (its sockets stay open, nothing is read or sent). */
  pause(): void {
    this.kill('SIGSTOP');
  }

  /** SIGCONT after pause(). */
  resume(): void {
    this.kill('SIGCONT');
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    // a stopped process only sees the signal once continued
    if (this.paused) this.resume();
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
  /** The extra arguments and environment it was started with (restartCoordinator reuses them). */
  args: string[];
  env: Record<string, string>;
  apiToken: string;
  agentTokenFile: string;
  apiTokenFile: string;
  /** env for CLI commands against this coordinator */
  cliEnv: Record<string, string>;
  api: <T = unknown>(path: string, init?: RequestInit) => Promise<{ status: number; body: T; headers: Headers }>;
}

/**
 * Writes a coordinator config file (JSON is YAML) next to the data dir, for settings that
 * have no flag (e.g. `reconnect_grace`), and returns its path.
 */
export async function writeCoordinatorConfig(dataDir: string, config: Record<string, unknown>): Promise<string> {
  const path = `${dataDir}.config.yaml`;
  await writeFile(path, JSON.stringify(config, null, 2) + '\n');
  return path;
}

export async function startCoordinator(opts: { dataDir: string; port?: number; args?: string[]; env?: Record<string, string>; config?: Record<string, unknown> }): Promise<CoordinatorHandle> {
  const args = [...(opts.args ?? [])];
  if (opts.config) args.push('--config', await writeCoordinatorConfig(opts.dataDir, opts.config));
  const proc = spawnKiln(['coordinator', '--data-dir', opts.dataDir, '--listen', `127.0.0.1:${opts.port ?? 0}`, ...args], opts.env);
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
    args,
    env: opts.env ?? {},
    apiToken,
    agentTokenFile,
    apiTokenFile,
    cliEnv: { KILN_COORDINATOR: url, KILN_TOKEN_FILE: apiTokenFile },
    api,
  };
}

/**
 * Stops a coordinator (`kill9: true` for SIGKILL, else SIGTERM) and starts it again on the
 * same data dir, port, arguments and environment.
 */
export async function restartCoordinator(c: CoordinatorHandle, opts: { kill9?: boolean } = {}): Promise<CoordinatorHandle> {
  if (opts.kill9) await c.proc.kill9();
  else await c.proc.stop();
  return startCoordinator({ dataDir: c.dataDir, port: c.port, args: c.args, env: c.env });
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

export interface AgentSummary {
  name: string;
  state: string;
  running: string[];
  connected_at: string | null;
  last_seen_at: string;
}

interface AgentsPage {
  items: AgentSummary[];
}

/** The coordinator's view of one agent (GET /api/v1/agents), or undefined when it does not know it. */
export async function agentInfo(c: CoordinatorHandle, name: string): Promise<AgentSummary | undefined> {
  const r = await c.api<AgentsPage>(apiPath.agents());
  return r.body.items?.find((a) => a.name === name);
}

/**
 * Starts an agent and waits until the coordinator lists it as connected. For a name the
 * coordinator knows already (an agent restarted under the same name) it waits for the new
 * connection, not the old entry.
 */
export async function startAgent(o: AgentOpts): Promise<Proc> {
  const before = (await agentInfo(o.coordinator, o.name).catch(() => undefined))?.connected_at ?? null;
  const proc = spawnAgent(o);
  await waitForAgent(o.coordinator, o.name, 'connected', proc, { connectedOtherThan: before });
  return proc;
}

export async function waitForAgent(c: CoordinatorHandle, name: string, state: string, proc?: Proc, opts: { connectedOtherThan?: string | null } = {}): Promise<void> {
  await waitFor(`agent ${name} to be ${state}`, async () => {
    if (proc && !proc.running) throw new StopWaiting(`agent ${name} exited with ${proc.exitCode}: ${proc.stderr.slice(-2000)}`);
    const a = await agentInfo(c, name);
    if (!a || a.state !== state) return false;
    return !opts.connectedOtherThan || a.connected_at !== opts.connectedOtherThan;
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
    attempts: Array<{ id: string; agent: string; state: string; reason: string | null; number: number; error?: string | null; image_id?: string | null; log_bytes?: number }>;
  }>;
}

export async function getBuild(c: CoordinatorHandle, id: string): Promise<BuildBody> {
  const r = await c.api<BuildBody>(apiPath.build(id));
  if (r.status !== 200) throw new Error(`GET ${apiPath.build(id)}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** A node of a build view by name (throws when the build has no such node). */
export function nodeOf(b: BuildBody, name: string): BuildBody['nodes'][number] {
  const n = b.nodes.find((x) => x.name === name);
  if (!n) throw new Error(`build ${b.id} has no node '${name}' (nodes: ${b.nodes.map((x) => x.name).join(', ')})`);
  return n;
}

export async function submitSpec(c: CoordinatorHandle, spec: unknown): Promise<string> {
  const r = await c.api<{ id: string }>(apiPath.builds(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
  if (r.status !== 201) throw new Error(`submit failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.id;
}

export async function waitForBuild(c: CoordinatorHandle, id: string, pred: (b: BuildBody) => boolean = (b) => ['success', 'failed', 'partial', 'cancelled'].includes(b.state), timeoutMs = 120_000): Promise<BuildBody> {
  return waitFor(
    `build ${id}`,
    async () => {
      const r = await c.api<BuildBody>(apiPath.build(id));
      return r.status === 200 && pred(r.body) ? r.body : null;
    },
    timeoutMs,
    100,
  );
}

export async function nodeLog(c: CoordinatorHandle, id: string, node: string): Promise<string> {
  const r = await c.api<string>(apiPath.nodeLogs(id, node));
  return typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
}

/** The numbers N of the lines `<prefix>N<suffix>` in a log, in the order they appear (each line at most once). */
export function numberedLines(log: string, prefix: string, suffix = ''): number[] {
  const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`${esc(prefix)}(\\d+)${esc(suffix)}(?!\\d)`);
  const out: number[] = [];
  for (const line of log.split('\n')) {
    const m = re.exec(line);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

/** The JSON log lines (pino) a kiln process wrote to stderr with KILN_LOG_FORMAT=json. */
export function jsonLogLines(text: string): Array<Record<string, unknown> & { msg?: string }> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* not a log line */
    }
  }
  return out;
}

/** A process started by a build step: its pid and the `--host` of the dockerd it runs under (null if none). */
export interface BuildProcess {
  pid: number;
  engine: string | null;
}

async function procText(pid: number, file: string): Promise<string> {
  return readFile(`/proc/${pid}/${file}`, 'utf8').catch(() => '');
}

/** The dockerd a process descends from (BuildKit runs RUN steps as runc children of dockerd), as its `--host` URL. */
async function engineOf(pid: number): Promise<string | null> {
  let p = pid;
  for (let depth = 0; depth < 64 && p > 1; depth++) {
    const argv = (await procText(p, 'cmdline')).split('\0');
    if (argv[0]?.endsWith('dockerd')) {
      const i = argv.indexOf('--host');
      const host = i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith('--host='))?.slice('--host='.length);
      return host ?? 'unix:///var/run/docker.sock';
    }
    const ppid = /^PPid:\s*(\d+)/m.exec(await procText(p, 'status'))?.[1];
    if (!ppid) return null;
    p = Number(ppid);
  }
  return null;
}

/**
 * Processes whose command line contains `needle` (give each RUN step a unique one, e.g.
 * `sleep 30.417`), with the Docker Engine each runs in; `engine` filters by that engine.
 */
/** How many processes on this host have `marker` in their command line (build steps and containers are visible from the host). */
export async function processesWith(marker: string): Promise<number> {
  let n = 0;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(marker)) n++;
  }
  return n;
}

/** Images a suite built, as [docker host, ref]; removed from their engines after the suite. */
export function useImageCleanup(): Array<[string, string]> {
  const images: Array<[string, string]> = [];
  afterAll(async () => {
    for (const [host, ref] of images) await removeImage(host, ref);
  });
  return images;
}

export async function buildProcesses(needle: string, engine?: string): Promise<BuildProcess[]> {
  const out: BuildProcess[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const cmd = (await procText(pid, 'cmdline')).replace(/\0/g, ' ');
    if (!cmd.includes(needle) || cmd.includes('vitest')) continue;
    const p = { pid, engine: await engineOf(pid) };
    if (p.engine === null) continue; // not a build step (e.g. a shell of this test run)
    if (engine === undefined || p.engine === engine) out.push(p);
  }
  return out;
}

function dockerFor(host: string): Docker {
  if (host.startsWith('unix://')) return new Docker({ socketPath: host.slice('unix://'.length) });
  const u = new URL(host.replace(/^tcp:/, 'http:'));
  return new Docker({ host: u.hostname, port: Number(u.port || 2375), protocol: 'http' });
}

/** true when the Docker Engine at `host` has an image by that reference (e.g. `kiln-build/<build>:<node>`). */
export async function engineHasImage(host: string, ref: string): Promise<boolean> {
  try {
    await dockerFor(host).getImage(ref).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

/** Removes an image from an engine if it is there (clean-up; never fails the test). */
export async function removeImage(host: string, ref: string): Promise<void> {
  await dockerFor(host)
    .getImage(ref)
    .remove({ force: true })
    .catch(() => {});
}

let needles = 0;

/**
 * A `sleep` command unique to this call (`sleep 4.0123...`), so buildProcesses() finds the
 * RUN step that runs it and nothing else.
 */
export function sleepNeedle(seconds: number): string {
  needles++;
  return `sleep ${Math.floor(seconds)}.${String(process.pid % 1000).padStart(3, '0')}${String(Date.now() % 1000).padStart(3, '0')}${needles}`;
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
