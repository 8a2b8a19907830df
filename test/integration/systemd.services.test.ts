/**
 * kiln's agent and coordinator as systemd services, under a real systemd: a Debian 12
 * container with systemd as PID 1 (scripts/infra/systemd-host.sh: host network, the host's
 * Docker socket and node), this checkout mounted read-only at /src/kiln. Inside it
 * scripts/install-coordinator.sh and scripts/install-agent.sh install both services; from
 * outside, `kiln submit` sends builds to them. Checked: the units pass `systemd-analyze
 * verify` and rate <= 2.0 in `systemd-analyze security`; the agent connects and builds;
 * `systemctl stop` drains a running build (it finishes, Result=success); restart comes back
 * and takes work; a second install changes nothing; `--upgrade` replaces the program and
 * restarts with a drain; `--gpu` writes the device drop-in; `--tls-cert/--tls-key` hand the
 * files over as credentials; journal lines are readable,
 * JSON with one setting; SIGHUP reloads the coordinator; `--uninstall` removes what it says
 * and keeps the state and cache dirs (`--purge` removes those); bad input gets clear errors.
 * The container is removed at the end, also on failure.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import { DOCKER_HOST, REPO, freePort, kiln, removeImage, requireBuilt, sleepNeedle, waitFor } from '../helpers/cluster.js';

const run = promisify(execFile);
const HOST_SCRIPT = join(REPO, 'scripts', 'infra', 'systemd-host.sh');
const NAME = `kiln-systemd-test-${process.pid}`;
const SRC = '/src/kiln';
const AGENT = 'sd-agent';
const TOKEN_FILE = '/root/agent-token';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** A shell command inside the systemd host (never throws: the exit status is in the result). */
async function sh(cmd: string): Promise<Result> {
  try {
    const r = await run('docker', ['exec', NAME, 'bash', '-c', cmd], { maxBuffer: 32 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

/** Like sh, but a non-zero exit fails the test with the command's output. */
async function ok(cmd: string): Promise<string> {
  const r = await sh(cmd);
  if (r.code !== 0) throw new Error(`'${cmd}' exited with ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const show = async (unit: string, prop: string) => (await ok(`systemctl show -p ${prop} --value ${unit}`)).trim();

describe('agent and coordinator as systemd services (a real systemd in a container)', () => {
  let port = 0;
  let url = '';
  let apiToken = '';
  let work = '';
  let installArgs = '';
  const images: string[] = [];

  const api = async <T>(path: string): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${apiToken}` } });
    return { status: res.status, body: (await res.json()) as T };
  };
  const cliEnv = () => ({ KILN_COORDINATOR: url, KILN_TOKEN_FILE: join(work, 'api-token') });

  /** `kiln submit` from outside (this host), of a one-node build; returns the build id. */
  async function submit(dockerfile: string): Promise<string> {
    const spec = join(work, `spec-${Date.now()}-${images.length}.json`);
    await writeFile(spec, JSON.stringify({ nodes: { step: { dockerfile_inline: dockerfile, no_cache: true } } }));
    const r = await kiln(['submit', spec], cliEnv());
    expect(r.code, r.stderr).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(/^[A-Za-z0-9_-]+$/);
    images.push(`kiln-build/${id}:step`);
    return id;
  }

  interface NodeView {
    state: string;
    agent: string | null;
    attempts: Array<{ agent: string; state: string }>;
  }
  const buildOf = async (id: string) => (await api<{ state: string; nodes: NodeView[] }>(apiPath.build(id))).body;
  const waitBuild = (id: string, pred: (b: { state: string; nodes: NodeView[] }) => boolean) =>
    waitFor(`build ${id}`, async () => {
      const b = await buildOf(id);
      return pred(b) ? b : null;
    });
  const done = (b: { state: string }) => ['success', 'failed', 'partial', 'cancelled'].includes(b.state);
  const agentView = async () => (await api<{ items: Array<{ name: string; state: string; connected_at: string | null }> }>(apiPath.agents())).body.items.find((a) => a.name === AGENT);
  /** Waits until the agent is connected by a connection other than `before` (its connected_at). */
  const waitConnected = (before: string | null) =>
    waitFor(`agent ${AGENT} to connect`, async () => {
      const a = await agentView();
      return a?.state === 'connected' && a.connected_at !== before ? a.connected_at : null;
    });
  const logOf = async (id: string) => {
    const res = await fetch(`${url}${apiPath.nodeLogs(id, 'step')}`, { headers: { authorization: `Bearer ${apiToken}` } });
    return res.text();
  };

  /**
   * The token the agent is installed with. With agent enrolment (`kiln tokens create --agent`)
   * an enrolment token the agent trades for its own credential; before that command exists,
   * the coordinator's shared agent token. Both go into the same file and credential.
   */
  async function agentTokenForInstall(name: string): Promise<string> {
    const r = await kiln(['tokens', 'create', '--agent', '--name', name], cliEnv());
    const enrol = r.stdout.trim();
    if (r.code === 0 && /^kiln_enrol_[A-Za-z0-9_-]{43}$/.test(enrol)) return enrol;
    return (await ok('cat /var/lib/kiln-coordinator/data/tokens/agent')).trim();
  }

  beforeAll(async () => {
    requireBuilt();
    work = await mkdtemp(join(tmpdir(), 'kiln-systemd-'));
    await run('bash', [HOST_SCRIPT, 'start', NAME], { env: { ...process.env, SYSTEMD_HOST_RUN_OPTS: `-v ${REPO}:${SRC}:ro` } });
  });

  afterAll(async () => {
    await run('bash', [HOST_SCRIPT, 'stop', NAME]).catch(() => {});
    for (const ref of images) await removeImage(DOCKER_HOST, ref);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('both units pass systemd-analyze verify and rate at most 2.0 in systemd-analyze security', async () => {
    for (const unit of ['kiln-agent.service', 'kiln-coordinator.service']) {
      const v = await sh(`systemd-analyze verify ${SRC}/config/${unit}`);
      expect(v.code, `${unit}: ${v.stderr}`).toBe(0);
      expect(v.stderr.trim(), unit).toBe('');
      const s = await sh(`systemd-analyze security --offline=yes --no-pager ${SRC}/config/${unit}`);
      const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(s.stdout + s.stderr);
      expect(m, `${unit}: ${s.stdout}${s.stderr}`).not.toBeNull();
      expect(Number(m![1]), unit).toBeLessThanOrEqual(2.0);
    }
  });

  it('refuses bad input with clear errors and a non-zero exit', async () => {
    await ok(`printf '' >/tmp/empty; printf 'x\\n' >/tmp/tok; chmod 644 /tmp/tok`);
    const cases: Array<[string, number, RegExp]> = [
      ['install-agent.sh', 2, /--coordinator URL is required/],
      ['install-agent.sh --coordinator ftp://x --token-file /tmp/tok', 2, /is not an http\(s\):\/\/ or ws\(s\):\/\/ URL/],
      ['install-agent.sh --coordinator http://x:1 --token-file /tmp/missing', 1, /token file '\/tmp\/missing' does not exist/],
      ['install-agent.sh --coordinator http://x:1 --token-file /tmp/empty', 1, /token file '\/tmp\/empty' is empty/],
      ['install-agent.sh --coordinator http://x:1 --token-file /tmp/tok --max-jobs 0', 2, /--max-jobs '0' must be an integer in 1..1024/],
      ['install-agent.sh --coordinator http://x:1 --token-file /tmp/tok --bogus', 2, /unknown argument '--bogus'/],
      ['install-coordinator.sh --listen nope', 2, /--listen 'nope' must be HOST:PORT/],
      ['install-coordinator.sh --tls-cert /tmp/tok', 2, /--tls-cert and --tls-key go together/],
    ];
    for (const [cmd, code, msg] of cases) {
      const r = await sh(`${SRC}/scripts/${cmd}`);
      expect([r.code, r.stderr], cmd).toEqual([code, expect.stringMatching(msg)]);
    }
    const user = await sh(`setpriv --reuid=65534 --regid=65534 --clear-groups ${SRC}/scripts/install-agent.sh --coordinator http://x:1 --token-file /tmp/tok`);
    expect([user.code, user.stderr]).toEqual([1, expect.stringMatching(/must run as root/)]);
    // a checkout without a build: the scripts copied next to an empty dist/
    const bare = await sh(`rm -rf /root/bare && mkdir -p /root/bare/scripts && cp -r ${SRC}/scripts/install-agent.sh ${SRC}/scripts/install /root/bare/scripts/ && /root/bare/scripts/install-agent.sh --coordinator http://x:1 --token-file /tmp/tok`);
    expect([bare.code, bare.stderr]).toEqual([1, expect.stringMatching(/no built program in \/root\/bare\/dist \(run: npm ci && npm run build/)]);
    expect((await sh('test -e /opt/kiln || getent passwd kiln-agent')).code).not.toBe(0); // nothing installed
  });

  it('installs the coordinator (state in StateDirectory, readable journal lines, SIGHUP reloads)', async () => {
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const out = await sh(`${SRC}/scripts/install-coordinator.sh --listen 127.0.0.1:${port}`);
    expect(out.code, out.stderr).toBe(0);
    expect(await show('kiln-coordinator', 'ActiveState')).toBe('active');
    apiToken = (await waitFor('the API token', async () => (await sh('cat /var/lib/kiln-coordinator/data/tokens/api')).stdout.trim())).trim();
    await writeFile(join(work, 'api-token'), `${apiToken}\n`, { mode: 0o600 });
    await waitFor('the coordinator to answer', async () => (await fetch(`${url}/healthz`).catch(() => null))?.ok);
    expect(await ok('stat -c %U:%a /var/lib/kiln-coordinator/data /etc/kiln-coordinator/coordinator.env')).toBe('kiln-coordinator:700\nroot:600\n');
    expect(await ok('cat /etc/kiln-coordinator/coordinator.env')).toContain(`KILN_LISTEN=127.0.0.1:${port}`);
    const pid = await show('kiln-coordinator', 'MainPID');
    const journal = await ok(`journalctl -u kiln-coordinator _PID=${pid} -o cat --no-pager`);
    expect(journal).toMatch(new RegExp(`^info coordinator listening url=${url.replace(/[.]/g, '\\.')} data_dir=/var/lib/kiln-coordinator/data `, 'm'));

    await ok('systemctl reload kiln-coordinator');
    await waitFor('the reload line', async () => /^info reload: log level re-read/m.test(await ok(`journalctl -u kiln-coordinator _PID=${pid} -o cat --no-pager`)));
    expect(await show('kiln-coordinator', 'MainPID')).toBe(pid);
    expect(await show('kiln-coordinator', 'ActiveState')).toBe('active');
  });

  it('installs the agent: it connects and runs a build submitted from outside; journal lines readable, JSON with one setting', async () => {
    const token = await agentTokenForInstall(AGENT);
    expect(token).toMatch(/^[A-Za-z0-9_-]{16,}$/);
    await ok(`printf '%s\\n' '${token}' >${TOKEN_FILE}`);
    installArgs = `--coordinator ${url} --token-file ${TOKEN_FILE} --name ${AGENT} --labels pool=systemd,zone=test --max-jobs 2`;
    const out = await sh(`${SRC}/scripts/install-agent.sh ${installArgs}`);
    expect(out.code, out.stderr).toBe(0);
    await waitConnected(null);

    expect(await ok('stat -c %n:%U:%a /etc/kiln-agent/token /etc/kiln-agent/agent.env')).toBe('/etc/kiln-agent/token:root:600\n/etc/kiln-agent/agent.env:root:600\n');
    expect(await ok('id -nG kiln-agent')).toMatch(/\bdocker\b/);
    const env = await ok('cat /etc/kiln-agent/agent.env');
    for (const line of [`KILN_COORDINATOR=${url}`, `KILN_AGENT_NAME=${AGENT}`, 'KILN_AGENT_LABELS=pool=systemd,zone=test', 'KILN_AGENT_MAX_JOBS=2', 'KILN_AGENT_WORK_DIR=/var/cache/kiln-agent']) {
      expect(env.split('\n')).toContain(line);
    }
    expect(env).not.toContain(token); // the token is a credential, not in the environment
    expect(await ok('test -d /opt/kiln/node_modules/pino && test ! -e /opt/kiln/node_modules/vitest && echo prod-only')).toBe('prod-only\n');

    const id = await submit('FROM kiln/busybox:1\nRUN echo "built-under-$((6*7))-systemd"');
    const b = await waitBuild(id, done);
    expect([b.state, b.nodes[0]!.agent]).toEqual(['success', AGENT]);
    expect(await logOf(id)).toContain('built-under-42-systemd');

    let pid = await show('kiln-agent', 'MainPID');
    const lines = (await ok(`journalctl -u kiln-agent _PID=${pid} -o cat --no-pager`)).split('\n');
    expect(lines).toContainEqual(expect.stringMatching(/^info connected to coordinator coordinator=\S+ heartbeat_ms=\d+/));
    const prio = (await ok(`journalctl -u kiln-agent _PID=${pid} -o json --no-pager`)).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { MESSAGE: string; PRIORITY: string });
    expect(prio.find((e) => e.MESSAGE.startsWith('info connected'))?.PRIORITY).toBe('6');

    // JSON: one line in agent.env (kept by the installer, which manages only its own settings)
    await ok(`echo KILN_LOG_FORMAT=json >>/etc/kiln-agent/agent.env && systemctl restart kiln-agent`);
    pid = await show('kiln-agent', 'MainPID');
    const json = await waitFor('a JSON journal line', async () =>
      (await ok(`journalctl -u kiln-agent _PID=${pid} -o cat --no-pager`))
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg: string; level: number })
        .find((r) => r.msg === 'connected to coordinator'),
    );
    expect(json.level).toBe(30);
    await ok(`sed -i '/^KILN_LOG_FORMAT=json$/d' /etc/kiln-agent/agent.env && systemctl restart kiln-agent`);
    await waitFor('the agent back', async () => (await agentView())?.state === 'connected');
  });

  it('systemctl stop drains: the running build finishes, the unit stops with Result=success', async () => {
    const needle = sleepNeedle(5);
    const id = await submit(`FROM kiln/busybox:1\nRUN echo drain-begin && ${needle} && echo "drain-end-$((40+2))"`);
    await waitBuild(id, (b) => b.nodes[0]!.state === 'running');
    await waitFor('the RUN step to start', async () => (await logOf(id)).includes('drain-begin'));
    const stopping = sh('systemctl stop kiln-agent');
    // while the build runs, the unit waits for the agent's drain
    await waitFor('the unit to be deactivating', async () => (await show('kiln-agent', 'ActiveState')) === 'deactivating');
    expect((await buildOf(id)).state).toBe('running');
    const stopped = await stopping;
    expect(stopped.code, stopped.stderr).toBe(0);
    const b = await buildOf(id);
    expect([b.state, b.nodes[0]!.attempts.map((a) => [a.agent, a.state])]).toEqual(['success', [[AGENT, 'success']]]);
    expect(await logOf(id)).toContain('drain-end-42');
    expect([await show('kiln-agent', 'ActiveState'), await show('kiln-agent', 'Result')]).toEqual(['inactive', 'success']);
  });

  it('start and restart come back and take work', async () => {
    const before = (await agentView())?.connected_at ?? null;
    await ok('systemctl start kiln-agent');
    const first = await waitConnected(before);
    await ok('systemctl restart kiln-agent');
    await waitConnected(first);
    const id = await submit('FROM kiln/busybox:1\nRUN echo "after-restart-$((2*21))"');
    const b = await waitBuild(id, done);
    expect([b.state, b.nodes[0]!.agent]).toEqual(['success', AGENT]);
    expect(await show('kiln-agent', 'NRestarts')).toBe('0');
  });

  it('installing again changes nothing and restarts nothing', async () => {
    const pid = await show('kiln-agent', 'MainPID');
    const stamp = await ok('stat -c %Y:%i /etc/kiln-agent/agent.env /etc/kiln-agent/token /etc/systemd/system/kiln-agent.service /opt/kiln/dist/cli/main.js');
    const out = await sh(`${SRC}/scripts/install-agent.sh ${installArgs}`);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stderr).toContain('nothing changed; kiln-agent.service keeps running');
    expect(out.stderr).not.toMatch(/wrote|installed|replaced|created|restarting/);
    expect(await show('kiln-agent', 'MainPID')).toBe(pid);
    expect(await ok('stat -c %Y:%i /etc/kiln-agent/agent.env /etc/kiln-agent/token /etc/systemd/system/kiln-agent.service /opt/kiln/dist/cli/main.js')).toBe(stamp);
    const c = await sh(`${SRC}/scripts/install-coordinator.sh --listen 127.0.0.1:${port}`);
    expect([c.code, c.stderr]).toEqual([0, expect.stringContaining('nothing changed; kiln-coordinator.service keeps running')]);
  });

  it('--upgrade stops the kiln units (the agent with a drain: a running build finishes), replaces the program, starts them', async () => {
    // an installed program that differs from this checkout's (an older version, say)
    await ok(`echo '// older' >>/opt/kiln/dist/cli/main.js`);
    const pid = await show('kiln-agent', 'MainPID');
    const needle = sleepNeedle(4);
    const id = await submit(`FROM kiln/busybox:1\nRUN echo up-begin && ${needle} && echo "up-end-$((40+2))"`);
    await waitFor('the RUN step to start', async () => (await logOf(id)).includes('up-begin'));
    const out = await sh(`${SRC}/scripts/install-agent.sh --upgrade`);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stderr).toMatch(/replaced the program in \/opt\/kiln/);
    // both stopped before the program is replaced (the agent first, with a drain), started after:
    // no running process loads a module of another version
    const lines = out.stderr.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const order = [at(/stopping kiln-agent.service before replacing the program \(running builds finish first\)/), at(/stopping kiln-coordinator.service before replacing/), at(/replaced the program/), at(/started kiln-agent.service/), at(/starting kiln-coordinator.service again/)];
    expect(order.every((i) => i >= 0), out.stderr).toBe(true);
    expect(order.slice(0, 3)).toEqual([...order.slice(0, 3)].sort((x, y) => x - y));
    expect((await sh(`cmp /opt/kiln/dist/cli/main.js ${SRC}/dist/cli/main.js`)).code).toBe(0);
    // the coordinator runs the same program: it was restarted too
    const b = await waitFor('the coordinator back', () => buildOf(id).catch(() => null));
    expect([b.state, b.nodes[0]!.attempts.map((a) => [a.agent, a.state])]).toEqual(['success', [[AGENT, 'success']]]);
    expect(await logOf(id)).toContain('up-end-42');
    expect(await show('kiln-agent', 'MainPID')).not.toBe(pid);
    expect(await ok('cat /etc/kiln-agent/agent.env')).toContain('KILN_AGENT_LABELS=pool=systemd,zone=test'); // settings kept
    await waitFor('the agent back', async () => (await agentView())?.state === 'connected');
    const after = await submit('FROM kiln/busybox:1\nRUN echo "after-upgrade-$((2*21))"');
    expect((await waitBuild(after, done)).state).toBe('success');
  });

  it('--gpu adds the device drop-in (PrivateDevices=no, DeviceAllow= the NVIDIA devices); --no-gpu removes it', async () => {
    expect(await show('kiln-agent', 'PrivateDevices')).toBe('yes');
    const out = await sh(`${SRC}/scripts/install-agent.sh ${installArgs} --gpu`);
    expect(out.code, out.stderr).toBe(0);
    const conf = await ok('cat /etc/systemd/system/kiln-agent.service.d/gpu.conf');
    const settings = conf.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(settings).toEqual(['[Service]', 'PrivateDevices=no', 'DevicePolicy=closed', 'DeviceAllow=/dev/nvidiactl rw', 'DeviceAllow=/dev/nvidia-uvm rw', 'DeviceAllow=/dev/nvidia-uvm-tools rw', 'DeviceAllow=/dev/nvidia0 rw']);
    expect(await show('kiln-agent', 'PrivateDevices')).toBe('no');
    expect(await show('kiln-agent', 'DeviceAllow')).toContain('/dev/nvidiactl rw');
    expect(await show('kiln-agent', 'ActiveState')).toBe('active');
    const off = await sh(`${SRC}/scripts/install-agent.sh ${installArgs} --no-gpu`);
    expect(off.code, off.stderr).toBe(0);
    expect((await sh('test -e /etc/systemd/system/kiln-agent.service.d/gpu.conf')).code).not.toBe(0);
    expect(await show('kiln-agent', 'PrivateDevices')).toBe('yes');
  });

  it('--tls-cert/--tls-key hand the files over as credentials and set KILN_TLS_CERT/KILN_TLS_KEY; the agent follows over wss with --ca-file; --no-tls takes them away', async () => {
    // a real self-signed certificate, so a coordinator that serves TLS starts with it
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(work, 'key.pem'), '-out', join(work, 'cert.pem')]);
    await run('docker', ['cp', join(work, 'cert.pem'), `${NAME}:/root/cert.pem`]);
    await run('docker', ['cp', join(work, 'key.pem'), `${NAME}:/root/key.pem`]);
    const out = await sh(`${SRC}/scripts/install-coordinator.sh --listen 127.0.0.1:${port} --tls-cert /root/cert.pem --tls-key /root/key.pem`);
    expect(out.code, out.stderr).toBe(0);
    expect(await ok('stat -c %U:%a /etc/kiln-coordinator/tls-cert /etc/kiln-coordinator/tls-key')).toBe('root:600\nroot:600\n');
    const conf = (await ok('cat /etc/systemd/system/kiln-coordinator.service.d/tls.conf')).split('\n').filter((l) => l && !l.startsWith('#'));
    expect(conf).toEqual(['[Service]', 'LoadCredential=tls-cert:/etc/kiln-coordinator/tls-cert', 'LoadCredential=tls-key:/etc/kiln-coordinator/tls-key', 'Environment=KILN_TLS_CERT=%d/tls-cert KILN_TLS_KEY=%d/tls-key']);
    const env = await show('kiln-coordinator', 'Environment');
    expect(env).toContain('KILN_TLS_CERT=/run/credentials/kiln-coordinator.service/tls-cert');
    expect(env).toContain('KILN_TLS_KEY=/run/credentials/kiln-coordinator.service/tls-key');
    expect(await show('kiln-coordinator', 'ActiveState')).toBe('active');
    expect((await sh('cmp /run/credentials/kiln-coordinator.service/tls-key /root/key.pem')).code).toBe(0);

    // the agent follows the coordinator to https:// with --ca-file (the CA reaches it as a credential)
    const httpsUrl = url.replace(/^http:/, 'https:');
    const agentsOverTls = async () => {
      const r = await kiln(['agents', '--json', '--ca-file', join(work, 'cert.pem')], { ...cliEnv(), KILN_COORDINATOR: httpsUrl });
      if (r.code !== 0) return null;
      return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { name: string; state: string; connected_at: string | null });
    };
    const tlsBefore = (await waitFor('the coordinator to answer over https', agentsOverTls)).find((a) => a.name === AGENT)?.connected_at ?? null;
    const agentArgs = installArgs.replace(`--coordinator ${url}`, `--coordinator ${httpsUrl}`);
    const withCa = await sh(`${SRC}/scripts/install-agent.sh ${agentArgs} --ca-file /root/cert.pem`);
    expect(withCa.code, withCa.stderr).toBe(0);
    const caConf = (await ok('cat /etc/systemd/system/kiln-agent.service.d/ca.conf')).split('\n').filter((l) => l && !l.startsWith('#'));
    expect(caConf).toEqual(['[Service]', 'LoadCredential=ca:/etc/kiln-agent/ca.pem', 'Environment=KILN_CA_FILE=%d/ca']);
    expect(await ok('stat -c %U:%a /etc/kiln-agent/ca.pem')).toBe('root:600\n');
    await waitFor(`agent ${AGENT} to connect over wss`, async () => {
      const a = (await agentsOverTls())?.find((x) => x.name === AGENT);
      return a?.state === 'connected' && a.connected_at !== tlsBefore ? a : null;
    });
    const noCa = await sh(`${SRC}/scripts/install-agent.sh ${installArgs} --no-ca`);
    expect(noCa.code, noCa.stderr).toBe(0);
    expect((await sh('test -e /etc/systemd/system/kiln-agent.service.d/ca.conf')).code).not.toBe(0);

    const off = await sh(`${SRC}/scripts/install-coordinator.sh --listen 127.0.0.1:${port} --no-tls`);
    expect(off.code, off.stderr).toBe(0);
    for (const gone of ['/etc/systemd/system/kiln-coordinator.service.d/tls.conf', '/etc/kiln-coordinator/tls-cert', '/etc/kiln-coordinator/tls-key']) {
      expect((await sh(`test -e ${gone}`)).code, gone).not.toBe(0);
    }
    expect(await show('kiln-coordinator', 'Environment')).not.toContain('KILN_TLS_CERT');
    await waitFor('the coordinator to answer', async () => (await fetch(`${url}/healthz`).catch(() => null))?.ok);
    await waitConnected(null); // back on ws:// without the CA
  });

  it('--uninstall removes unit, program, settings, credential and user, and keeps state and cache unless --purge', async () => {
    await ok('touch /var/lib/kiln-agent/kept /var/cache/kiln-agent/kept');
    const out = await sh(`${SRC}/scripts/install-agent.sh --uninstall`);
    expect(out.code, out.stderr).toBe(0);
    for (const gone of ['/etc/systemd/system/kiln-agent.service', '/etc/systemd/system/kiln-agent.service.d', '/etc/kiln-agent']) {
      expect((await sh(`test -e ${gone}`)).code, gone).not.toBe(0);
    }
    expect((await sh('getent passwd kiln-agent')).code).not.toBe(0);
    expect(await show('kiln-agent', 'LoadState')).toBe('not-found');
    await ok('test -f /var/lib/kiln-agent/kept && test -f /var/cache/kiln-agent/kept');
    expect(out.stderr).toContain('kept /opt/kiln (used by kiln-coordinator.service');
    await ok('test -f /opt/kiln/dist/cli/main.js'); // the coordinator still runs from it
    expect(await show('kiln-coordinator', 'ActiveState')).toBe('active');

    const coord = await sh(`${SRC}/scripts/install-coordinator.sh --uninstall`);
    expect(coord.code, coord.stderr).toBe(0);
    for (const gone of ['/etc/systemd/system/kiln-coordinator.service', '/etc/kiln-coordinator', '/opt/kiln']) {
      expect((await sh(`test -e ${gone}`)).code, gone).not.toBe(0);
    }
    expect((await sh('getent passwd kiln-coordinator')).code).not.toBe(0);
    await ok('test -f /var/lib/kiln-coordinator/data/state.json');

    const purge = await sh(`${SRC}/scripts/install-agent.sh --uninstall --purge && ${SRC}/scripts/install-coordinator.sh --uninstall --purge`);
    expect(purge.code, purge.stderr).toBe(0);
    for (const gone of ['/var/lib/kiln-agent', '/var/cache/kiln-agent', '/var/lib/kiln-coordinator']) {
      expect((await sh(`test -e ${gone}`)).code, gone).not.toBe(0);
    }
  });
});
