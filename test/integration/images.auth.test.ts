/**
 * Registry credentials, for real: two docker-registry 2.8 processes with htpasswd (Basic)
 * auth on ports of their own; the coordinator's credentials file gives the right password
 * for the first and a wrong one for the second.
 *
 * - A single-platform push and a two-platform index (the index assembled through the
 *   registry's HTTP API answering its 401 challenge) succeed against the first.
 * - A push to the second fails at once (one attempt, not an infrastructure failure) with
 *   a clear message.
 * - No password shows anywhere: not in any file the coordinator or the agent wrote (data
 *   dir, work dir, their output), not in any API answer (build view, images, provenance,
 *   error report).
 * - The Bearer token flow: a registry with `auth: token` and a small token service in
 *   this test (ES256 JWTs with an x5c header, checked against the registry's root bundle):
 *   the index assembly fetches a token with the credentials and puts the index.
 * - Pulls: a base image pushed to the first registry (and removed from the engine) is the
 *   FROM of an inline Dockerfile (`${REG}` from a build arg) and of a Dockerfile inside an
 *   uploaded context (also `COPY --from=` it): both build with the coordinator's
 *   credentials. The same image on the second registry (wrong credentials on the
 *   coordinator) fails the node at once, naming the registry.
 */
import { execFile, spawn } from 'node:child_process';
import { createPrivateKey, randomBytes, sign as signData } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Docker from 'dockerode';
import { apiPath } from '../../shared/index.js';
import { putBlob, tarOf } from '../helpers/api-fixtures.js';
import { DOCKER_HOST, freePort, inline, Proc, removeImage, startAgent, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type CoordinatorHandle } from '../helpers/cluster.js';

const run = promisify(execFile);
const REGISTRY_BIN = '/usr/bin/docker-registry';

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

describe('registry credentials (Basic and Bearer)', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  let agent: Proc;
  const procs: Proc[] = [];
  let tokenServer: Server | null = null;
  const tokenRequests: Array<{ authorization: string | undefined; scope: string | null; agent: string | undefined }> = [];
  const uniq = `${process.pid}-${Date.now().toString(36)}`;
  const right = `right-${randomBytes(8).toString('hex')}`;
  const wrong = `wrong-${randomBytes(8).toString('hex')}`;
  let basicOk = 0;
  let basicBad = 0;
  let bearer = 0;

  async function startRegistry(port: number, auth: string): Promise<void> {
    const config = join(dir.path, `registry-${port}.yml`);
    await writeFile(config, `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${join(dir.path, `data-${port}`)}}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:${port}}\nauth: ${auth}\n`);
    procs.push(new Proc(spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] })));
    await waitFor(`registry on ${port}`, async () => (await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => null))?.status === 401);
  }

  beforeAll(async () => {
    dir = await tempDir('images-auth');
    const htpasswd = join(dir.path, 'htpasswd');
    await writeFile(htpasswd, (await run('htpasswd', ['-Bbn', 'kiln', right])).stdout);
    [basicOk, basicBad, bearer] = [await freePort(), await freePort(), await freePort()];
    const basic = `{htpasswd: {realm: kiln-test, path: ${htpasswd}}}`;
    await startRegistry(basicOk, basic);
    await startRegistry(basicBad, basic);

    // The token service: an EC key and a self-signed certificate (the registry's root bundle).
    const key = join(dir.path, 'token.key');
    const cert = join(dir.path, 'token.crt');
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=kiln-test-token']);
    const der = Buffer.from((await readFile(cert, 'utf8')).replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const privateKey = createPrivateKey(await readFile(key));
    const tokenPort = await freePort();
    tokenServer = createHttpServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      tokenRequests.push({ authorization: req.headers.authorization, scope: url.searchParams.get('scope'), agent: req.headers['user-agent'] });
      if (req.headers.authorization !== `Basic ${Buffer.from(`kiln:${right}`).toString('base64')}`) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      const access = (url.searchParams.getAll('scope') ?? []).map((s) => {
        const [type, name, actions] = s.split(':');
        return { type, name, actions: (actions ?? '').split(',') };
      });
      const now = Math.floor(Date.now() / 1000);
      const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', x5c: [der.toString('base64')] }));
      const claims = b64url(JSON.stringify({ iss: 'kiln-test', sub: 'kiln', aud: url.searchParams.get('service'), exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access }));
      const signature = signData('sha256', Buffer.from(`${header}.${claims}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `${header}.${claims}.${b64url(signature)}` }));
    });
    await new Promise<void>((r) => tokenServer!.listen(tokenPort, '127.0.0.1', r));
    await startRegistry(bearer, `{token: {realm: "http://127.0.0.1:${tokenPort}/token", service: kiln-registry, issuer: kiln-test, rootcertbundle: ${cert}}}`);

    const pw = join(dir.path, 'pw-right');
    const pwBad = join(dir.path, 'pw-wrong');
    await writeFile(pw, `${right}\n`);
    await writeFile(pwBad, `${wrong}\n`);
    const creds = join(dir.path, 'registries.yaml');
    await writeFile(
      creds,
      [`127.0.0.1:${basicOk}: {username: kiln, password_file: pw-right}`, `127.0.0.1:${basicBad}: {username: kiln, password_file: pw-wrong}`, `127.0.0.1:${bearer}: {username: kiln, password_file: pw-right}`, ''].join('\n'),
    );
    coord = await startCoordinator({ dataDir: join(dir.path, 'data'), args: ['--registry-credentials-file', creds] });
    procs.push(coord.proc);
    agent = await startAgent({ coordinator: coord, name: 'auth-agent', workDir: join(dir.path, 'agent'), platforms: ['linux/arm64'], maxJobs: 2 });
    procs.push(agent);
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await new Promise((r) => (tokenServer ? tokenServer.close(r) : r(undefined)));
    await dir?.cleanup();
  });

  const answers: string[] = [];
  async function api<T>(path: string): Promise<T> {
    const r = await coord.api<T>(path);
    answers.push(JSON.stringify(r.body));
    return r.body;
  }

  it('pushes an image and assembles an index with Basic credentials from the coordinator', async () => {
    const repo = `kiln-test/auth-${uniq}`;
    const id = await submitSpec(coord, {
      name: 'basic',
      nodes: {
        one: inline(`FROM kiln/busybox:1\nRUN echo one-${uniq}\n`, { image: `127.0.0.1:${basicOk}/${repo}:one` }),
        multi: inline(`ARG TARGETARCH\nFROM kiln/busybox:1-\${TARGETARCH}\nRUN echo multi-${uniq}\n`, { platforms: ['linux/amd64', 'linux/arm64'], allow_emulation: true, image: `127.0.0.1:${basicOk}/${repo}:multi` }),
      },
    });
    const b = await waitForBuild(coord, id);
    const view = await api<{ nodes: Array<{ name: string; state: string; error: string | null; images: Array<{ digest: string }> }> }>(apiPath.build(id));
    expect(b.state, JSON.stringify(view.nodes.map((n) => [n.name, n.error]))).toBe('success');
    await api(apiPath.buildImages(id));
    // The registry answers only with the credentials: the index is there.
    const auth = `Basic ${Buffer.from(`kiln:${right}`).toString('base64')}`;
    const res = await fetch(`http://127.0.0.1:${basicOk}/v2/${repo}/manifests/multi`, { headers: { authorization: auth, accept: 'application/vnd.docker.distribution.manifest.list.v2+json' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(view.nodes.find((n) => n.name === 'multi')!.images[0]!.digest);
    expect(((await res.json()) as { manifests: unknown[] }).manifests).toHaveLength(2);
    const one = (await api<{ nodes: Array<{ name: string; provenance: string | null }> }>(apiPath.build(id))).nodes.find((n) => n.name === 'one')!;
    const prov = await coord.api<{ images: unknown[] }>(apiPath.casBlob(one.provenance!));
    answers.push(JSON.stringify(prov.body));
    expect(prov.body.images).toHaveLength(1);
  });

  it('wrong credentials fail the node at once with a clear message', async () => {
    const id = await submitSpec(coord, { name: 'wrong', nodes: { app: inline(`FROM kiln/busybox:1\nRUN echo wrong-${uniq}\n`, { image: `127.0.0.1:${basicBad}/kiln-test/wrong:1` }) } });
    await waitForBuild(coord, id);
    const app = (await api<{ nodes: Array<{ state: string; error: string | null; failed_step: string | null; attempts: Array<{ infra: boolean }> }> }>(apiPath.build(id))).nodes[0]!;
    expect(app.state).toBe('failed');
    expect(app.attempts).toHaveLength(1);
    expect(app.attempts[0]!.infra).toBe(false);
    expect(app.failed_step).toBe('push');
    expect(app.error).toMatch(/unauthorized|authentication required|incorrect username or password/i);
    expect(app.error).toContain(`the registry refused the credentials the coordinator has for 127.0.0.1:${basicBad}`);
    await api(apiPath.buildError(id));
  });

  it('the Bearer token flow: the index is put with a token fetched with the credentials', async () => {
    const repo = `kiln-test/bearer-${uniq}`;
    const id = await submitSpec(coord, {
      name: 'bearer',
      nodes: { app: inline(`ARG TARGETARCH\nFROM kiln/busybox:1-\${TARGETARCH}\nRUN echo bearer-${uniq}\n`, { platforms: ['linux/amd64', 'linux/arm64'], allow_emulation: true, image: `127.0.0.1:${bearer}/${repo}:1` }) },
    });
    const b = await waitForBuild(coord, id);
    const view = await api<{ nodes: Array<{ name: string; error: string | null; images: Array<{ digest: string; media_type: string }> }> }>(apiPath.build(id));
    expect(b.state, JSON.stringify(view.nodes.map((n) => [n.name, n.error]))).toBe('success');
    const index = view.nodes.find((n) => n.name === 'app')!;
    expect(index.images[0]!.media_type).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
    // The token service was asked with the credentials for push access to the repository,
    // by the engine (per-platform pushes) and by kiln's own client (the index: Node's fetch).
    const asked = tokenRequests.filter((t) => t.scope?.startsWith(`repository:${repo}:`) && t.scope.includes('push') && t.authorization?.startsWith('Basic '));
    expect(asked.some((t) => /^docker\//.test(t.agent ?? ''))).toBe(true);
    expect(asked.some((t) => t.agent === 'node')).toBe(true);
  });

  /** Pushes kiln/busybox:1-amd64 as `ref` through the Engine API with the right credentials, then removes the local tag. */
  async function pushBase(port: number, repo: string): Promise<string> {
    const docker = new Docker({ socketPath: DOCKER_HOST.replace(/^unix:\/\//, '') });
    const ref = `127.0.0.1:${port}/${repo}:1`;
    await docker.getImage('kiln/busybox:1-amd64').tag({ repo: `127.0.0.1:${port}/${repo}`, tag: '1' });
    try {
      const stream = (await docker.getImage(ref).push({ authconfig: { username: 'kiln', password: right, serveraddress: `127.0.0.1:${port}` } } as Docker.ImagePushOptions)) as NodeJS.ReadableStream;
      const failed = await new Promise<string | null>((resolve, reject) => {
        let error: string | null = null;
        docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve(error)), (e: { error?: string }) => {
          error ??= e.error ?? null;
        });
      });
      expect(failed).toBeNull();
    } finally {
      await removeImage(DOCKER_HOST, ref);
    }
    return ref;
  }

  it('pulls a private base image with the coordinator credentials (inline and context Dockerfiles)', async () => {
    const base = await pushBase(basicOk, `kiln-test/base-${uniq}`);
    const baseRepo = base.slice(base.indexOf('/') + 1);
    const ctx = await tarOf({ Dockerfile: `FROM ${base}\nCOPY --from=${base} /bin/busybox /copied\nRUN echo context-${uniq}\n` });
    const digest = await putBlob(coord, ctx);
    const id = await submitSpec(coord, {
      name: 'pull',
      nodes: {
        inl: inline(`ARG REG=nowhere.invalid\nFROM \${REG}/${baseRepo}\nRUN echo inline-${uniq}\n`, { platform: 'linux/amd64', build_args: { REG: `127.0.0.1:${basicOk}` } }),
        ctx: { context: digest, platform: 'linux/amd64' },
      },
    });
    const b = await waitForBuild(coord, id);
    const view = await api<{ nodes: Array<{ name: string; state: string; error: string | null; attempts: unknown[] }> }>(apiPath.build(id));
    expect(b.state, JSON.stringify(view.nodes.map((n) => [n.name, n.error]))).toBe('success');
    // first time: the context's Dockerfile was read at submit, not after a refused attempt
    for (const n of view.nodes) expect(n.attempts, n.name).toHaveLength(1);
  });

  it('a pull refused for wrong credentials fails the node at once, naming the registry', async () => {
    const base = await pushBase(basicBad, `kiln-test/base-${uniq}`);
    const id = await submitSpec(coord, { name: 'pull-wrong', nodes: { app: inline(`FROM ${base}\nRUN echo pull-wrong-${uniq}\n`, { platform: 'linux/amd64' }) } });
    await waitForBuild(coord, id);
    const app = (await api<{ nodes: Array<{ state: string; error: string | null; attempts: Array<{ infra: boolean }> }> }>(apiPath.build(id))).nodes[0]!;
    expect(app.state).toBe('failed');
    expect(app.attempts).toHaveLength(1);
    expect(app.attempts[0]!.infra).toBe(false);
    expect(app.error).toContain(`the registry 127.0.0.1:${basicBad} refused the credentials the coordinator has for it`);
    await api(apiPath.buildError(id));
  });

  it('no password appears in any file the coordinator or agent wrote, in their output, or in an API answer', async () => {
    const files = [...(await filesUnder(join(dir.path, 'data'))), ...(await filesUnder(join(dir.path, 'agent')))];
    expect(files.length).toBeGreaterThan(5);
    for (const f of files) {
      // A state file's temporary copy may be renamed away between the listing and the read.
      const size = (await stat(f).catch(() => null))?.size;
      if (size === undefined || size > 64 * 1024 * 1024) continue;
      const text = (await readFile(f).catch(() => Buffer.alloc(0))).toString('latin1');
      expect(text.includes(right), f).toBe(false);
      expect(text.includes(wrong), f).toBe(false);
      expect(text.includes(Buffer.from(`kiln:${right}`).toString('base64')), f).toBe(false);
    }
    for (const out of [coord.proc.stdout, coord.proc.stderr, agent.stdout, agent.stderr, ...answers]) {
      expect(out.includes(right)).toBe(false);
      expect(out.includes(wrong)).toBe(false);
    }
    expect(answers.length).toBeGreaterThan(4);
  });
});
