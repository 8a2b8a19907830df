/**
 * Per-agent credentials with real coordinator and agent processes and real builds: an
 * agent enrols with a one-use enrolment token (`kiln tokens create --agent`), stores its
 * credential and builds; a later start needs no enrolment token. Reused, expired and
 * unknown tokens are refused, as is a name bound to another agent or already enrolled.
 * `kiln agents revoke` during a build: the agent's connection closes, it exits 78 and is
 * not let back in, the attempt runs again on another agent, which is untouched.
 * `kiln agents rotate`: the agent takes a new credential and reconnects, its build goes on,
 * the old credential is refused. The data dir and the agents' dirs hold no secret (only
 * hashes); a corrupt credentials file stops the coordinator naming the file.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  agentInfo,
  inline,
  kiln,
  sleepNeedle,
  spawnKiln,
  startCoordinator,
  submitSpec,
  tempDir,
  useCluster,
  waitFor,
  waitForAgent,
  waitForBuild,
  type Proc,
} from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

const AGENT_RE = /^kiln_agent_[A-Za-z0-9_-]{43}$/;
const EX_CONFIG = 78;

describe('agent enrolment and per-agent credentials', () => {
  const c = useCluster('enrol', { coordinatorArgs: ['--heartbeat-interval', '300ms'] });
  /** Every secret this suite saw: none may be found at rest except each agent's own credential file. */
  const secrets: string[] = [];
  /** Every agent process started, whose logs must not hold a secret either. */
  const agents: Proc[] = [];

  async function createToken(...args: string[]): Promise<string> {
    const r = await kiln(['tokens', 'create', '--agent', ...args], c.coord.cliEnv);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^kiln_enrol_[A-Za-z0-9_-]{43}\n$/);
    const token = r.stdout.trim();
    secrets.push(token);
    return token;
  }

  /** Starts an agent whose token file holds `token`; work dir `<suite>/agent-<name>`. */
  async function spawnWith(name: string, token: string | null, opts: { workDir?: string; tokenFile?: string } = {}): Promise<{ proc: Proc; workDir: string; tokenFile: string }> {
    const workDir = opts.workDir ?? join(c.dir, `agent-${name}`);
    const tokenFile = opts.tokenFile ?? join(c.dir, `token-${name}`);
    if (token !== null) await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const proc = c.track(
      spawnKiln(['agent', '--coordinator', c.coord.url, '--token-file', tokenFile, '--name', name, '--work-dir', workDir, '--docker-host', DOCKER_HOST, '--log-level', 'debug']),
    );
    agents.push(proc);
    return { proc, workDir, tokenFile };
  }

  async function enrolHttp(token: string, name: string) {
    const res = await fetch(`${c.coord.url}${apiPath.agentEnrol()}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name }),
    });
    const body = (await res.json()) as { credential?: string; detail?: string; code?: string };
    if (body.credential) secrets.push(body.credential);
    return { status: res.status, type: res.headers.get('content-type'), body };
  }

  async function storedCredential(workDir: string): Promise<string> {
    return (await readFile(join(workDir, 'agent-credential'), 'utf8')).trim();
  }

  it('enrols with a one-use token, builds, and later starts with its stored credential alone', async () => {
    const token = await createToken('--name', 'enrolled-1');
    const a = await spawnWith('enrolled-1', token);
    await waitForAgent(c.coord, 'enrolled-1', 'connected', a.proc);
    const credential = await storedCredential(a.workDir);
    secrets.push(credential);
    expect(credential).toMatch(AGENT_RE);
    expect((await stat(join(a.workDir, 'agent-credential'))).mode & 0o777).toBe(0o600);

    const id = await submitSpec(c.coord, { nodes: { hello: inline('FROM kiln/busybox:1\nRUN echo enrolled-build', { no_cache: true }) } });
    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes[0]!.agent).toBe('enrolled-1');

    // Restarted without its enrolment token (used up anyway): the stored credential is enough.
    await a.proc.stop();
    await writeFile(a.tokenFile, 'not-a-token-any-more\n');
    const before = (await agentInfo(c.coord, 'enrolled-1'))?.connected_at ?? null;
    const again = await spawnWith('enrolled-1', null, { workDir: a.workDir, tokenFile: a.tokenFile });
    await waitFor('enrolled-1 to reconnect with its credential', async () => {
      if (!again.proc.running) throw new Error(`agent exited ${again.proc.exitCode}: ${again.proc.stderr.slice(-1500)}`);
      const info = await agentInfo(c.coord, 'enrolled-1');
      return info?.state === 'connected' && info.connected_at !== before;
    });
    expect(await storedCredential(a.workDir)).toBe(credential);
    // A credential may use the CAS as the shared agent token does, but not the API.
    const cas = await fetch(`${c.coord.url}${apiPath.casBlob(`sha256:${'0'.repeat(64)}`)}`, { method: 'HEAD', headers: { authorization: `Bearer ${credential}` } });
    expect(cas.status).toBe(404);
    const builds = await fetch(`${c.coord.url}${apiPath.builds()}`, { headers: { authorization: `Bearer ${credential}` } });
    expect(builds.status).toBe(403);
  });

  it('refuses an enrolment token used up, expired, unknown or revoked, naming why', async () => {
    const once = await createToken();
    expect((await enrolHttp(once, 'reuse-a')).status).toBe(200);
    const reused = await enrolHttp(once, 'reuse-b');
    expect(reused.status).toBe(403);
    expect(reused.type).toContain('application/problem+json');
    expect(reused.body.detail).toMatch(/already used \(1 of 1 use\)/);

    // An agent process given the used token exits with EX_CONFIG, naming where the token is.
    const a = await spawnWith('reuse-c', once);
    expect(await a.proc.exited).toBe(EX_CONFIG);
    expect(a.proc.stderr).toContain('already used');
    expect(a.proc.stderr).toContain(a.tokenFile);

    // Bad usage is refused before any request.
    for (const args of [[], ['--agent', '--expires', 'soon'], ['--agent', '--uses', '0'], ['--agent', '--name', 'no/slash']]) {
      const bad = await kiln(['tokens', 'create', ...args], c.coord.cliEnv);
      expect(bad.code, args.join(' ')).toBe(2);
      expect(bad.stdout).toBe('');
    }

    const brief = await createToken('--expires', '1s');
    await waitFor('the token to expire', async () => {
      const r = await kiln(['tokens', 'list', '--json'], c.coord.cliEnv);
      return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { state: string; id: string }).some((t) => t.state === 'expired');
    });
    const expired = await enrolHttp(brief, 'late');
    expect(expired.status).toBe(403);
    expect(expired.body.detail).toMatch(/expired at/);

    const unknown = await enrolHttp(`kiln_enrol_${'A'.repeat(43)}`, 'stranger');
    expect(unknown.status).toBe(401);
    expect(unknown.body.detail).toMatch(/unknown enrolment token/);

    const bare = await fetch(`${c.coord.url}${apiPath.agentEnrol()}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"no-token"}' });
    expect(bare.status).toBe(401);
    expect(((await bare.json()) as { detail: string }).detail).toMatch(/no enrolment token/);

    const revokedToken = await createToken('--uses', '3');
    const table = await kiln(['tokens', 'list'], c.coord.cliEnv);
    expect(table.stdout).toMatch(/^ID +AGENT +STATE +USED +EXPIRES +CREATED BY\n/);
    expect(table.stdout).toMatch(/et-\S+ +\(any\) +active +0\/3 /);
    expect(table.stdout).not.toContain('kiln_enrol_');
    const list = await kiln(['tokens', 'list', '--json'], c.coord.cliEnv);
    const rows = list.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: string; uses: number; state: string });
    expect(JSON.stringify(rows)).not.toContain('kiln_enrol_');
    const row = rows.find((t) => t.uses === 3 && t.state === 'active')!;
    expect((await kiln(['tokens', 'revoke', row.id], c.coord.cliEnv)).code).toBe(0);
    const refused = await enrolHttp(revokedToken, 'after-revoke');
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toMatch(/was revoked/);
  });

  it('enforces the name a token binds and refuses a name already enrolled or a hello naming another agent', async () => {
    const bound = await createToken('--name', 'bound-x', '--uses', '2');
    const wrong = await enrolHttp(bound, 'bound-y');
    expect(wrong.status).toBe(403);
    expect(wrong.body.detail).toContain("is for agent 'bound-x', not 'bound-y'");
    const ok = await enrolHttp(bound, 'bound-x');
    expect(ok.status).toBe(200);
    const twice = await enrolHttp(bound, 'bound-x');
    expect(twice.status).toBe(409);
    expect(twice.body.detail).toMatch(/already enrolled.*kiln agents revoke bound-x/);

    // bound-x's credential in the state dir of an agent that calls itself impostor: refused, exit 78.
    const workDir = join(c.dir, 'agent-impostor');
    await mkdir(workDir, { recursive: true });
    await writeFile(join(workDir, 'agent-credential'), `${ok.body.credential}\n`, { mode: 0o600 });
    const imp = await spawnWith('impostor', 'unused-legacy-token-xxxxxxxx', { workDir });
    expect(await imp.proc.exited).toBe(EX_CONFIG);
    expect(imp.proc.stderr).toContain("issued to agent 'bound-x', not 'impostor'");
    expect(imp.proc.stderr).toContain(join(workDir, 'agent-credential'));
  });

  it('revoking an agent during a build cuts it off; the attempt finishes on another agent', async () => {
    const victim = await spawnWith('victim', await createToken('--name', 'victim'));
    await waitForAgent(c.coord, 'victim', 'connected', victim.proc);
    // Only the victim may take the build at first (enrolled-1 from the first test is drained).
    await kiln(['agents', 'drain', 'enrolled-1'], c.coord.cliEnv);
    const id = await submitSpec(c.coord, { nodes: { slow: inline(`FROM kiln/busybox:1\nRUN ${sleepNeedle(6)} && echo survived`, { no_cache: true }) } });
    await waitForBuild(c.coord, id, (b) => b.nodes[0]!.state === 'running' && b.nodes[0]!.agent === 'victim');
    const steady = await spawnWith('steady', await createToken('--name', 'steady'));
    await waitForAgent(c.coord, 'steady', 'connected', steady.proc);
    const steadyInfo = await agentInfo(c.coord, 'steady');

    const r = await kiln(['agents', 'revoke', 'victim'], c.coord.cliEnv);
    expect(r.code, r.stderr).toBe(0);
    expect(await victim.proc.exited).toBe(EX_CONFIG);
    expect(victim.proc.stderr).toContain('credential revoked');
    expect(victim.proc.stderr).toContain(join(victim.workDir, 'agent-credential'));

    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes[0]!.attempts.map((a) => [a.agent, a.state])).toEqual([
      ['victim', 'lost'],
      ['steady', 'success'],
    ]);
    expect(b.nodes[0]!.attempts[0]!.reason).toMatch(/victim's credential was revoked/);
    // Not let back in: a restart with its stored credential is refused at once.
    const back = await spawnWith('victim', null, { workDir: victim.workDir, tokenFile: victim.tokenFile });
    expect(await back.proc.exited).toBe(EX_CONFIG);
    expect(back.proc.stderr).toMatch(/HTTP 401 agent credential refused: the credential of agent 'victim' was revoked/);
    expect((await agentInfo(c.coord, 'victim'))?.state).toBe('lost');
    // The other agent was untouched: the same connection, still up.
    expect(steady.proc.running).toBe(true);
    expect((await agentInfo(c.coord, 'steady'))?.connected_at).toBe(steadyInfo?.connected_at);
  });

  it('rotates a credential while a build runs: the agent reconnects with the new one, the old is refused', async () => {
    const rot = await spawnWith('rotator', await createToken('--name', 'rotator'));
    await waitForAgent(c.coord, 'rotator', 'connected', rot.proc);
    const old = await storedCredential(rot.workDir);
    secrets.push(old);
    await kiln(['agents', 'drain', 'steady'], c.coord.cliEnv);
    const id = await submitSpec(c.coord, { nodes: { long: inline(`FROM kiln/busybox:1\nRUN ${sleepNeedle(4)} && echo rotated-through`, { no_cache: true }) } });
    await waitForBuild(c.coord, id, (b) => b.nodes[0]!.state === 'running' && b.nodes[0]!.agent === 'rotator');
    const before = (await agentInfo(c.coord, 'rotator'))?.connected_at;

    const r = await kiln(['agents', 'rotate', 'rotator'], c.coord.cliEnv);
    expect(r.code, r.stderr).toBe(0);
    const fresh = await waitFor('a new credential', async () => {
      const now = await storedCredential(rot.workDir).catch(() => old);
      return now !== old ? now : null;
    });
    secrets.push(fresh);
    expect(fresh).toMatch(AGENT_RE);
    await waitFor('rotator to reconnect', async () => {
      const info = await agentInfo(c.coord, 'rotator');
      return info?.state === 'connected' && info.connected_at !== before;
    });
    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    expect(b.nodes[0]!.attempts.map((a) => [a.agent, a.state])).toEqual([['rotator', 'success']]);
    expect(rot.proc.running).toBe(true);

    const probe = (cred: string) => fetch(`${c.coord.url}${apiPath.casBlob(`sha256:${'0'.repeat(64)}`)}`, { method: 'HEAD', headers: { authorization: `Bearer ${cred}` } });
    expect((await probe(old)).status).toBe(401);
    expect((await probe(fresh)).status).toBe(404);
  });

  it('keeps only hashes at rest: no secret in the data dir or in an agent dir but its own credential file', async () => {
    expect(secrets.length).toBeGreaterThan(8);
    const agentsJson = await readFile(join(c.coord.dataDir, 'access', 'agents.json'), 'utf8');
    for (const s of secrets) expect(agentsJson).toContain(createHash('sha256').update(s).digest('hex'));
    expect((await stat(join(c.coord.dataDir, 'access', 'agents.json'))).mode & 0o777).toBe(0o600);

    const files: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) files.push(p);
      }
    };
    await walk(c.dir);
    let scanned = 0;
    for (const f of files) {
      // The token files the test wrote and each agent's own credential file may hold one secret.
      if (/\/token-[^/]+$/.test(f) || f.endsWith('/agent-credential')) continue;
      const text = await readFile(f, 'latin1');
      scanned++;
      for (const s of secrets) expect(text.includes(s), `${s.slice(0, 16)}... found in ${f}`).toBe(false);
      expect(/kiln_(enrol|agent)_[A-Za-z0-9_-]{43}/.test(text), `a secret in ${f}`).toBe(false);
    }
    expect(scanned).toBeGreaterThan(3);
    // Nor in the logs (journald keeps them).
    for (const p of [c.coord.proc, ...agents]) {
      const logs = p.stdout + p.stderr;
      expect(logs.length).toBeGreaterThan(0);
      for (const s of secrets) expect(logs.includes(s), `${s.slice(0, 16)}... in a log`).toBe(false);
    }
  });

  it('refuses to start on a corrupt credentials file, naming it', async () => {
    const d = await tempDir('enrol-corrupt');
    try {
      const dataDir = join(d.path, 'data');
      const first = await startCoordinator({ dataDir });
      await first.proc.stop();
      await mkdir(join(dataDir, 'access'), { recursive: true });
      const file = join(dataDir, 'access', 'agents.json');
      await writeFile(file, '{"kind":"kiln-agent-credentials","version":1,"tokens":[');
      await expect(startCoordinator({ dataDir })).rejects.toThrow(`agent credentials file ${file} is corrupt`);
      expect(await readFile(file, 'utf8')).toBe('{"kind":"kiln-agent-credentials","version":1,"tokens":[');
    } finally {
      await d.cleanup();
    }
  });
});
