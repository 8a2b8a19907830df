/**
 * TLS pieces without processes: the loopback rule (which hosts plain http/ws may reach),
 * CA files (bounded, PEM, errors naming the file), the client config's refusal of plain
 * http:// to another host, the coordinator's tls.cert/tls.key settings (both or neither),
 * and the certificate pair: checked as a pair (every bad input named), reloaded into the
 * server on request and when the files change, a bad new pair refused with the old one kept.
 */
import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { loadClientConfig } from '../../cli/client-config.js';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { loadTlsPair, TlsReloader } from '../../coordinator/tls/tls-files.js';
import { isLoopbackHost, MAX_CA_FILE_BYTES, plaintextProblem, readCaFile, tlsRefusalMessage } from '../../shared/index.js';
import { waitFor } from '../helpers/cluster.js';
import { issueServerCert, makeCa, type ServerCert, type TestCa } from '../helpers/tls-ca.js';

describe('the loopback rule', () => {
  it('knows loopback hosts', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '127.255.255.255', 'localhost', 'LOCALHOST', '::1', '[::1]', '::ffff:127.0.0.1', '[::ffff:7f00:1]', new URL('http://[::ffff:127.0.0.1]:8080').hostname]) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['128.0.0.1', '127.0.0.256', '10.0.0.1', '192.0.2.2', 'localhost.example', 'example.com', '::2', '0.0.0.0', '127.0.0.1.nip.io', '', 'localhost.', 'api.localhost', '[::ffff:a00:1]']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('refuses plain http:// and ws:// to anything else unless insecure; https and wss always pass', () => {
    expect(plaintextProblem(new URL('http://10.1.2.3:8080'), false, '--coordinator')).toMatch(/^--coordinator: plain http:\/\/ to 10\.1\.2\.3:8080 is refused.*Use https:\/\/.*--insecure \(KILN_INSECURE=1\)/);
    expect(plaintextProblem(new URL('ws://build.example/api/v1/agent'), false, 'coordinator')).toMatch(/plain ws:\/\/ to build\.example is refused.*Use wss:\/\//);
    expect(plaintextProblem(new URL('http://10.1.2.3:8080'), true, 'x')).toBeNull();
    expect(plaintextProblem(new URL('http://127.0.0.1:8080'), false, 'x')).toBeNull();
    expect(plaintextProblem(new URL('ws://[::1]:1'), false, 'x')).toBeNull();
    expect(plaintextProblem(new URL('https://10.1.2.3'), false, 'x')).toBeNull();
    expect(plaintextProblem(new URL('wss://10.1.2.3'), false, 'x')).toBeNull();
  });

  it('names the trust used when a certificate is refused, and ignores other errors', () => {
    const err = new TypeError('fetch failed', { cause: Object.assign(new Error('unable to verify the first certificate'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }) });
    expect(tlsRefusalMessage(err, 'the coordinator at https://c', '/etc/ca.pem')).toBe(
      'TLS: the certificate of the coordinator at https://c is not trusted by the CA file /etc/ca.pem: UNABLE_TO_VERIFY_LEAF_SIGNATURE (unable to verify the first certificate)',
    );
    expect(tlsRefusalMessage(err, 'x', null)).toMatch(/not trusted by the system store \(give the CA with --ca-file or KILN_CA_FILE\)/);
    expect(tlsRefusalMessage(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'x', null)).toBeNull();
  });
});

describe('CA files, client config and coordinator settings', () => {
  let dir: string;
  let ca: TestCa;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-tls-unit-'));
    ca = await makeCa(dir, 'ca');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('reads a PEM CA file and names the file of a bad one', async () => {
    expect(readCaFile(ca.certFile)).toBe(ca.pem);
    expect(() => readCaFile(join(dir, 'missing.pem'))).toThrow(`CA file ${join(dir, 'missing.pem')} cannot be read (ENOENT)`);
    await writeFile(join(dir, 'junk.pem'), 'hello\n');
    expect(() => readCaFile(join(dir, 'junk.pem'))).toThrow(`CA file ${join(dir, 'junk.pem')} holds no PEM certificate`);
    await writeFile(join(dir, 'huge.pem'), Buffer.alloc(MAX_CA_FILE_BYTES + 1, 0x41));
    expect(() => readCaFile(join(dir, 'huge.pem'))).toThrow(/CA file .*huge\.pem is too large/);
  });

  it('the CLI takes --ca-file over KILN_CA_FILE, refuses plain http:// off loopback unless --insecure or KILN_INSECURE=1', () => {
    const env = { KILN_TOKEN: 't', HOME: dir };
    expect(loadClientConfig({ coordinator: 'https://c.example' }, env).ca ?? null).toBeNull();
    expect(loadClientConfig({ coordinator: 'https://c.example' }, { ...env, KILN_CA_FILE: ca.certFile }).ca).toEqual({ file: ca.certFile, pem: ca.pem });
    expect(() => loadClientConfig({ coordinator: 'https://c.example', caFile: join(dir, 'nope') }, { ...env, KILN_CA_FILE: ca.certFile })).toThrow(/--ca-file: CA file .*nope cannot be read/);
    expect(() => loadClientConfig({ coordinator: 'http://10.0.0.9:8080' }, env)).toThrow(/plain http:\/\/ to 10\.0\.0\.9:8080 is refused/);
    expect(() => loadClientConfig({ coordinator: 'ws://c.example' }, env)).toThrow(/plain http:\/\/ to c\.example is refused/);
    expect(loadClientConfig({ coordinator: 'http://10.0.0.9:8080', insecure: true }, env).baseUrl).toBe('http://10.0.0.9:8080');
    expect(loadClientConfig({ coordinator: 'http://10.0.0.9:8080' }, { ...env, KILN_INSECURE: '1' }).baseUrl).toBe('http://10.0.0.9:8080');
    expect(loadClientConfig({}, env).baseUrl).toBe('http://127.0.0.1:8080');
  });

  it('the agent takes ca_file and insecure from any layer, refuses plain ws:// and http:// off loopback, and uses wss:// for an https:// coordinator', async () => {
    const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, KILN_AGENT_TOKEN: 't', ...env }, hostname: 'h', isTTY: false });
    const c = loadAgentConfig({ coordinator: 'https://c.example:8443', caFile: ca.certFile }, host());
    expect(c).toMatchObject({ wsUrl: 'wss://c.example:8443/api/v1/agent', httpUrl: 'https://c.example:8443', ca: { file: ca.certFile, pem: ca.pem } });
    expect(loadAgentConfig({ coordinator: 'https://c.example' }, host({ KILN_CA_FILE: ca.certFile })).ca?.file).toBe(ca.certFile);
    expect(loadAgentConfig({ coordinator: 'https://c.example' }, host()).ca).toBeNull();
    expect(() => loadAgentConfig({ coordinator: 'https://c.example', caFile: join(dir, 'gone.pem') }, host())).toThrow(/CA file .*gone\.pem cannot be read \(ENOENT\)/);
    expect(() => loadAgentConfig({ coordinator: 'ws://10.0.0.9:8080' }, host())).toThrow(/coordinator: plain ws:\/\/ to 10\.0\.0\.9:8080 is refused/);
    expect(() => loadAgentConfig({ coordinator: '10.0.0.9:8080' }, host())).toThrow(/coordinator: plain http:\/\/ to 10\.0\.0\.9:8080 is refused/);
    expect(loadAgentConfig({ coordinator: 'ws://10.0.0.9:8080', insecure: 'true' }, host()).wsUrl).toBe('ws://10.0.0.9:8080/api/v1/agent');
    expect(loadAgentConfig({ coordinator: 'ws://10.0.0.9:8080' }, host({ KILN_INSECURE: '1' })).wsUrl).toBe('ws://10.0.0.9:8080/api/v1/agent');
    const file = join(dir, 'agent.yaml');
    await writeFile(file, `coordinator: http://10.0.0.9:8080\ninsecure: true\nca_file: ${ca.certFile}\n`);
    expect(loadAgentConfig({ config: file }, host())).toMatchObject({ httpUrl: 'http://10.0.0.9:8080', ca: { file: ca.certFile } });
    expect(() => loadAgentConfig({ config: file, insecure: 'false' }, host())).toThrow(/plain http:\/\/ to 10\.0\.0\.9:8080 is refused/);
    expect(loadAgentConfig({ coordinator: 'ws://127.0.0.1:8080' }, host()).wsUrl).toBe('ws://127.0.0.1:8080/api/v1/agent');
  });

  it('the coordinator takes tls.cert and tls.key together, from any layer', async () => {
    const host = { env: { HOME: dir }, arch: 'x64', isTTY: false };
    expect(loadCoordinatorConfig({}, host).tls).toBeNull();
    expect(loadCoordinatorConfig({ tlsCert: 'c.pem', tlsKey: 'k.pem' }, host).tls).toEqual({ certFile: join(process.cwd(), 'c.pem'), keyFile: join(process.cwd(), 'k.pem') });
    expect(loadCoordinatorConfig({}, { ...host, env: { ...host.env, KILN_TLS_CERT: '/c.pem', KILN_TLS_KEY: '/k.pem' } }).tls).toEqual({ certFile: '/c.pem', keyFile: '/k.pem' });
    const file = join(dir, 'coord.yaml');
    await writeFile(file, 'tls:\n  cert: /etc/kiln/cert.pem\n  key: /etc/kiln/key.pem\n');
    expect(loadCoordinatorConfig({ config: file }, host).tls).toEqual({ certFile: '/etc/kiln/cert.pem', keyFile: '/etc/kiln/key.pem' });
    expect(() => loadCoordinatorConfig({ tlsCert: 'c.pem' }, host)).toThrow(/config tls\.key: required with tls\.cert \(set tls\.key in the config file, --tls-key or KILN_TLS_KEY\)/);
    expect(() => loadCoordinatorConfig({ tlsKey: 'k.pem' }, host)).toThrow(/config tls\.cert: required with tls\.key/);
  });
});

describe('the certificate pair and its reload', () => {
  let dir: string;
  let ca: TestCa;
  let a: ServerCert;
  let b: ServerCert;
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-tls-pair-'));
    ca = await makeCa(dir, 'ca');
    a = await issueServerCert(ca, dir, 'a');
    b = await issueServerCert(ca, dir, 'b');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('loads a matching pair and names the file at fault otherwise', async () => {
    const pair = loadTlsPair({ certFile: a.certFile, keyFile: a.keyFile });
    expect(pair).toMatchObject({ cert: a.cert, key: a.key, serial: a.serial, fingerprint256: a.fingerprint256 });
    expect(() => loadTlsPair({ certFile: a.certFile, keyFile: b.keyFile })).toThrow(`TLS key file ${b.keyFile} does not match the certificate in ${a.certFile}`);
    expect(() => loadTlsPair({ certFile: join(dir, 'none.crt'), keyFile: a.keyFile })).toThrow(`TLS certificate file ${join(dir, 'none.crt')} cannot be read (ENOENT)`);
    await writeFile(join(dir, 'text.crt'), 'just text\n');
    expect(() => loadTlsPair({ certFile: join(dir, 'text.crt'), keyFile: a.keyFile })).toThrow(`TLS certificate file ${join(dir, 'text.crt')} is not PEM`);
    await writeFile(join(dir, 'broken.crt'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(() => loadTlsPair({ certFile: join(dir, 'broken.crt'), keyFile: a.keyFile })).toThrow(`TLS certificate file ${join(dir, 'broken.crt')} holds no valid certificate`);
    // a certificate where the key should be
    expect(() => loadTlsPair({ certFile: a.certFile, keyFile: a.certFile })).toThrow(`TLS key file ${a.certFile} holds no valid private key`);
    await writeFile(join(dir, 'huge.key'), Buffer.alloc(1024 * 1024 + 1, 0x41));
    expect(() => loadTlsPair({ certFile: a.certFile, keyFile: join(dir, 'huge.key') })).toThrow(/TLS key file .*huge\.key is too large/);
  });

  it('swaps the secure context on reload, refuses a bad pair keeping the old one, and reloads when the files change', async () => {
    const certFile = join(dir, 'serve.crt');
    const keyFile = join(dir, 'serve.key');
    await writeFile(certFile, a.cert);
    await writeFile(keyFile, a.key);
    const contexts: Array<{ cert?: unknown; key?: unknown }> = [];
    const server = { setSecureContext: (o: { cert?: unknown; key?: unknown }) => void contexts.push(o) };
    const reloader = new TlsReloader(server as never, { certFile, keyFile }, loadTlsPair({ certFile, keyFile }), logger, { pollMs: 50, debounceMs: 50 });
    try {
      expect(reloader.reload('SIGHUP')).toBe(true); // unchanged: nothing swapped
      expect(contexts).toEqual([]);
      await writeFile(keyFile, b.key); // key of another certificate
      expect(reloader.reload('SIGHUP')).toBe(false);
      expect(contexts).toEqual([]);
      expect(reloader.serving.serial).toBe(a.serial);
      expect(logs.at(-1)).toMatchObject({ level: 50, reason: 'SIGHUP', msg: `TLS reload refused: TLS key file ${keyFile} does not match the certificate in ${certFile}; still serving the previous certificate` });
      await writeFile(certFile, b.cert);
      expect(reloader.reload('SIGHUP')).toBe(true);
      expect(contexts).toEqual([{ cert: b.cert, key: b.key }]);
      expect(reloader.serving.serial).toBe(b.serial);
      expect(logs.at(-1)).toMatchObject({ msg: 'TLS certificate reloaded', serial: b.serial, previous_serial: a.serial });

      reloader.watch();
      await writeFile(`${keyFile}.new`, a.key);
      await rename(`${keyFile}.new`, keyFile);
      await writeFile(`${certFile}.new`, a.cert);
      await rename(`${certFile}.new`, certFile);
      await waitFor('the watch to reload', () => reloader.serving.serial === a.serial, 30_000, 20);
      expect(contexts.at(-1)).toEqual({ cert: a.cert, key: a.key });
      expect(logs.at(-1)).toMatchObject({ msg: 'TLS certificate reloaded', reason: 'files changed', serial: a.serial });
    } finally {
      reloader.stop();
    }
  });
});
