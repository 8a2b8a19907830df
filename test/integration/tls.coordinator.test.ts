/**
 * TLS end to end, with real processes and a throwaway CA made in the test: the
 * coordinator serves HTTPS and WSS with --tls-cert/--tls-key; the CLI and an agent verify
 * it with --ca-file (a build with a context goes CLI -> CAS -> agent over https and wss);
 * a wrong CA is refused with an error naming the CA file (CLI exit 2, the agent logs it
 * and retries); rotating the certificate (same CA, new key) with SIGHUP serves the new one
 * to new connections while the connected agent keeps its WebSocket; a bad pair is refused
 * and the old one keeps serving; plain http:// and ws:// to a non-loopback address are
 * refused before connecting, unless --insecure.
 */
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { connect, type PeerCertificate } from 'node:tls';
import { copyFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent as UndiciAgent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import { DOCKER_HOST, jsonLogLines, kiln, spawnKiln, StopWaiting, tempDir, waitFor, type Proc } from '../helpers/cluster.js';
import { issueServerCert, makeCa, type ServerCert, type TestCa } from '../helpers/tls-ca.js';

/** The certificate a new TLS connection to 127.0.0.1:port is served (verified with `ca`). */
function servedCert(port: number, ca: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const cert = s.getPeerCertificate();
      s.end();
      resolve(cert);
    });
    s.on('error', reject);
  });
}

/** Replaces a file the way rotation tools do: write aside, rename over. */
async function replaceFile(path: string, text: string): Promise<void> {
  await writeFile(`${path}.new`, text);
  await rename(`${path}.new`, path);
}

/** A non-loopback IPv4 address of this machine, if it has one. */
function hostAddress(): string | null {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}

describe('TLS', () => {
  let dir: string;
  let cleanup: () => Promise<void> = async () => {};
  let ca: TestCa;
  let wrongCa: TestCa;
  let first: ServerCert;
  let certFile: string;
  let keyFile: string;
  let coord: Proc;
  let url: string;
  let port: number;
  let apiTokenFile: string;
  let agentTokenFile: string;
  let apiToken: string;
  let dispatcher: UndiciAgent;
  const procs: Proc[] = [];

  const api = async <T>(path: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: T }> => {
    const res = await undiciFetch(`${url}${path}`, { ...init, headers: { authorization: `Bearer ${apiToken}`, ...(init.headers ?? {}) }, dispatcher });
    const text = await res.text();
    return { status: res.status, body: (text.startsWith('{') ? JSON.parse(text) : text) as T };
  };
  const agentState = async (name: string) => (await api<{ items: Array<{ name: string; state: string; connected_at: string | null }> }>(apiPath.agents())).body.items.find((a) => a.name === name);
  const cli = (args: string[], env: Record<string, string> = {}) => kiln(args, { KILN_COORDINATOR: url, KILN_TOKEN_FILE: apiTokenFile, KILN_CA_FILE: '', ...env });

  beforeAll(async () => {
    const d = await tempDir('tls');
    dir = d.path;
    cleanup = d.cleanup;
    const pki = join(dir, 'pki');
    await mkdir(pki);
    ca = await makeCa(pki, 'ca');
    wrongCa = await makeCa(pki, 'other-ca');
    first = await issueServerCert(ca, pki, 'first');
    // The files the coordinator serves: copies, replaced in place when rotated.
    certFile = join(dir, 'server.crt');
    keyFile = join(dir, 'server.key');
    await copyFile(first.certFile, certFile);
    await copyFile(first.keyFile, keyFile);
    const dataDir = join(dir, 'data');
    coord = spawnKiln(['coordinator', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--tls-cert', certFile, '--tls-key', keyFile]);
    procs.push(coord);
    const m = await waitFor('the coordinator to listen', () => {
      if (!coord.running) throw new StopWaiting(`coordinator exited with ${coord.exitCode}: ${coord.stderr}`);
      return /listening on (https:\/\/127\.0\.0\.1:(\d+))/.exec(coord.stderr);
    });
    url = m[1]!;
    port = Number(m[2]);
    apiTokenFile = join(dataDir, 'tokens', 'api');
    agentTokenFile = join(dataDir, 'tokens', 'agent');
    apiToken = (await readFile(apiTokenFile, 'utf8')).trim();
    dispatcher = new UndiciAgent({ connect: { ca: ca.pem } });
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await dispatcher?.close();
    await cleanup();
  });

  const startAgent = async (name: string, extra: string[] = [], env: Record<string, string> = {}): Promise<Proc> => {
    const p = spawnKiln(['agent', '--coordinator', url, '--token-file', agentTokenFile, '--name', name, '--work-dir', join(dir, `agent-${name}`), '--docker-host', DOCKER_HOST, ...extra], { KILN_CA_FILE: '', ...env });
    procs.push(p);
    return p;
  };

  it('serves HTTPS with the configured certificate and says so', async () => {
    const cert = await servedCert(port, ca.pem);
    expect(cert.serialNumber).toBe(first.serial);
    const line = jsonLogLines(coord.stderr).find((l) => l.msg === 'serving HTTPS and WSS');
    expect(line).toMatchObject({ serial: first.serial, cert_file: certFile });
    // Plain HTTP on the TLS port is not served.
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
  });

  it('runs a build with a context: CLI and agent verify the coordinator with --ca-file, over https and wss', async () => {
    const agent = await startAgent('tls-agent', ['--ca-file', ca.certFile]);
    await waitFor('the agent to connect over wss', async () => {
      if (!agent.running) throw new StopWaiting(`agent exited with ${agent.exitCode}: ${agent.stderr.slice(-2000)}`);
      return (await agentState('tls-agent'))?.state === 'connected';
    });
    const app = join(dir, 'app');
    await mkdir(app);
    const marker = `tls-ctx-${Date.now()}`;
    await writeFile(join(app, 'greeting.txt'), `${marker}\n`);
    await writeFile(join(app, 'Dockerfile'), 'FROM kiln/busybox:1\nCOPY greeting.txt /greeting.txt\nRUN cat /greeting.txt\n');
    const spec = join(dir, 'kiln.yaml');
    await writeFile(spec, 'name: tls\nnodes:\n  greet:\n    context: ./app\n    no_cache: true\n');
    const r = await cli(['submit', spec, '--follow', '--ca-file', ca.certFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(marker); // the context went CLI -> CAS -> agent, all over TLS
    const status = await cli(['builds', '--json'], { KILN_CA_FILE: ca.certFile });
    expect(status.code, status.stderr).toBe(0);
  });

  it('refuses a coordinator certificate the CA file does not vouch for: the CLI exits 2 naming the CA file, the agent logs it and retries', async () => {
    const r = await cli(['builds', '--ca-file', wrongCa.certFile]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`TLS: the certificate of the coordinator at ${url} is not trusted by the CA file ${wrongCa.certFile}`);
    // No CA file: Node's built-in store does not know the test CA either.
    const none = await cli(['builds']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/TLS: .* is not trusted by the system store \(give the CA with --ca-file or KILN_CA_FILE\)/);

    const agent = await startAgent('wrong-ca-agent', [], { KILN_CA_FILE: wrongCa.certFile });
    // Two attempts refused: it retries (a certificate being rotated can come right), never connects.
    const refusals = await waitFor('the agent to refuse the certificate twice', () => {
      if (!agent.running) throw new StopWaiting(`agent exited with ${agent.exitCode}: ${agent.stderr.slice(-2000)}`);
      const lines = jsonLogLines(agent.stderr).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('TLS: the certificate of the coordinator'));
      return lines.length >= 2 ? lines : null;
    });
    expect(refusals[0]).toMatchObject({ level: 50, ca_file: wrongCa.certFile });
    expect(String(refusals[0]!.msg)).toContain(`not trusted by the CA file ${wrongCa.certFile}`);
    expect(jsonLogLines(agent.stderr).some((l) => l.msg === 'disconnected from coordinator' && String(l.reason).startsWith('TLS: '))).toBe(true);
    expect(await agentState('wrong-ca-agent')).toBeUndefined();
    await agent.stop();
  });

  it('rotates the certificate on SIGHUP without dropping the connected agent; refuses a bad pair and keeps serving the last good one', async () => {
    const before = await agentState('tls-agent');
    expect(before?.state).toBe('connected');
    const agent = procs.find((p) => p.child.spawnargs.includes('tls-agent'))!;
    const connectedLines = () => jsonLogLines(agent.stderr).filter((l) => l.msg === 'connected to coordinator').length;
    const connectedBefore = connectedLines();

    const second = await issueServerCert(ca, join(dir, 'pki'), 'second');
    expect(second.serial).not.toBe(first.serial);
    await replaceFile(keyFile, second.key);
    await replaceFile(certFile, second.cert);
    coord.kill('SIGHUP');
    await waitFor('new connections to get the new certificate', async () => (await servedCert(port, ca.pem)).serialNumber === second.serial);
    expect(jsonLogLines(coord.stderr).some((l) => l.msg === 'TLS certificate reloaded' && l.serial === second.serial && l.previous_serial === first.serial)).toBe(true);
    expect(coord.running).toBe(true);

    // The agent kept its connection: same connected_at, no reconnect in its log.
    const after = await agentState('tls-agent');
    expect(after).toMatchObject({ state: 'connected', connected_at: before!.connected_at });
    expect(connectedLines()).toBe(connectedBefore);
    expect(jsonLogLines(agent.stderr).filter((l) => l.msg === 'disconnected from coordinator')).toEqual([]);

    // And work still flows over it.
    const spec = join(dir, 'after-rotation.yaml');
    await writeFile(spec, `nodes:\n  after:\n    no_cache: true\n    dockerfile_inline: |\n      FROM kiln/busybox:1\n      RUN echo rotated-${Date.now()}\n`);
    const r = await cli(['submit', spec, '--follow'], { KILN_CA_FILE: ca.certFile });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rotated-\d+/);

    // A key that is not the certificate's: refused, named, the second pair keeps serving.
    const third = await issueServerCert(ca, join(dir, 'pki'), 'third');
    await replaceFile(keyFile, third.key);
    coord.kill('SIGHUP');
    const refused = await waitFor('the bad pair to be refused', () =>
      jsonLogLines(coord.stderr).find((l) => typeof l.msg === 'string' && l.msg.startsWith('TLS reload refused') && l.reason === 'SIGHUP'),
    );
    expect(refused).toMatchObject({ level: 50 });
    expect(String(refused.msg)).toContain(`TLS key file ${keyFile} does not match the certificate in ${certFile}`);
    expect((await servedCert(port, ca.pem)).serialNumber).toBe(second.serial);
    // Not PEM at all: named too.
    await replaceFile(certFile, 'not a certificate\n');
    coord.kill('SIGHUP');
    await waitFor('the non-PEM certificate to be refused', () =>
      jsonLogLines(coord.stderr).some((l) => typeof l.msg === 'string' && l.msg.includes(`TLS certificate file ${certFile} is not PEM`)),
    );
    expect((await servedCert(port, ca.pem)).serialNumber).toBe(second.serial);

    // Fixed without a signal: the file watch picks up the good pair.
    await replaceFile(keyFile, third.key);
    await replaceFile(certFile, third.cert);
    await waitFor('the watched files to be reloaded', async () => (await servedCert(port, ca.pem)).serialNumber === third.serial);
    expect(jsonLogLines(coord.stderr).some((l) => l.msg === 'TLS certificate reloaded' && l.reason === 'files changed' && l.serial === third.serial)).toBe(true);
    expect((await agentState('tls-agent'))?.connected_at).toBe(before!.connected_at);
  });
});

describe('plain http and ws to a non-loopback address', () => {
  const ip = hostAddress();
  // A listener on every interface counts connection attempts: the refusal comes before any.
  let server: Server;
  let port: number;
  let connections = 0;
  let dir: string;
  let cleanup: () => Promise<void> = async () => {};

  beforeAll(async () => {
    const d = await tempDir('tls-plain');
    dir = d.path;
    cleanup = d.cleanup;
    await writeFile(join(dir, 'token'), 'some-agent-token\n');
    server = createServer((s) => {
      connections++;
      // An HTTP answer (a bare hang-up makes Node 20's fetch end the CLI silently).
      s.once('data', () => s.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    await cleanup();
  });

  // The machine's own address when it has one, else a documentation address (never reached).
  const target = () => `${ip ?? '198.51.100.7'}:${port}`;

  it('the agent refuses ws:// and http:// (exit 78, before connecting)', async () => {
    for (const [scheme, coordinator] of [['ws', `ws://${target()}`], ['http', `http://${target()}`], ['http', target()]] as const) {
      const r = await kiln(['agent', '--coordinator', coordinator, '--token-file', join(dir, 'token'), '--work-dir', join(dir, 'work'), '--executor', 'noop']);
      expect(r.code, r.stderr).toBe(78);
      expect(r.stderr).toMatch(new RegExp(`coordinator: plain ${scheme}:// to ${target().replace(/\./g, '\\.')} is refused.*--insecure \\(KILN_INSECURE=1\\)`));
    }
    expect(connections).toBe(0);
  });

  it('the CLI refuses http:// (exit 2, before connecting)', async () => {
    const r = await kiln(['builds', '--coordinator', `http://${target()}`], { KILN_TOKEN: 't' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--coordinator: plain http:\/\/ to .* is refused: tokens and logs would cross the network in clear text/);
    expect(connections).toBe(0);
  });

  it.runIf(ip !== null)('--insecure (or KILN_INSECURE=1) lets both through', async () => {
    const cliRun = await kiln(['builds', '--coordinator', `http://${target()}`, '--insecure'], { KILN_TOKEN: 't' });
    expect(cliRun.code, cliRun.stderr).toBe(2); // it connected: the listener's 503 is the error
    expect(cliRun.stderr).toMatch(/Service Unavailable/);
    await waitFor('the CLI connection', () => connections >= 1);
    const seen = connections;
    const agent = spawnKiln(['agent', '--coordinator', `ws://${target()}`, '--token-file', join(dir, 'token'), '--work-dir', join(dir, 'work'), '--executor', 'noop'], { KILN_INSECURE: '1' });
    try {
      await waitFor('the agent to connect', () => {
        if (!agent.running) throw new StopWaiting(`agent exited with ${agent.exitCode}: ${agent.stderr.slice(-2000)}`);
        return connections > seen;
      });
    } finally {
      await agent.stop();
    }
  });

  it('a coordinator listening on a non-loopback address without TLS warns (and still starts)', async () => {
    const coord = spawnKiln(['coordinator', '--data-dir', join(dir, 'data'), '--listen', '0.0.0.0:0']);
    try {
      const line = await waitFor('the warning', () => {
        if (!coord.running) throw new StopWaiting(`coordinator exited with ${coord.exitCode}: ${coord.stderr}`);
        return jsonLogLines(coord.stderr).find((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on a non-loopback address without TLS'));
      });
      expect(line).toMatchObject({ level: 40 });
      await waitFor('it to listen', () => /listening on http:\/\/127\.0\.0\.1:\d+/.test(coord.stderr));
    } finally {
      await coord.stop();
    }
  });
});
