/**
 * Configuration of both processes: defaults < file < environment < flags for every row
 * of both settings tables, every bad value refused with the setting named, unknown file
 * keys refused, the example configs shipped in config/ load, and `--help` and the README
 * list every row.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AGENT_SETTINGS, coordinatorUrls, loadAgentConfig } from '../../agent/config.js';
import { COORDINATOR_SETTINGS, loadCoordinatorConfig } from '../../coordinator/config.js';
import { SettingsReader, fileSchema, kebab, settingFlags, settingsHelpFooter, settingsMarkdown, type SettingTable } from '../../shared/index.js';

const ROOT = join(import.meta.dirname, '..', '..');

describe('coordinator config', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-cfg-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, ...env }, arch: 'x64', isTTY: false });

  it('has working defaults', () => {
    const c = loadCoordinatorConfig({}, host());
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(c.dataDir).toBe(join(dir, '.local', 'state', 'kiln', 'coordinator'));
    expect(c.heartbeatIntervalMs).toBe(10_000);
    expect(c.lostAfterMs).toBe(30_000);
    expect(c.defaultPlatform).toBe('linux/amd64');
    expect(c.log.format).toBe('json');
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('layers file < env < flags', async () => {
    const file = join(dir, 'c.yaml');
    await writeFile(file, 'listen: 0.0.0.0:9000\ndata_dir: /from/file\nheartbeat_interval: 2s\nlog: { level: debug }\n');
    const fromFile = loadCoordinatorConfig({ config: file }, host());
    expect(fromFile.listen).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(fromFile.dataDir).toBe('/from/file');
    expect(fromFile.lostAfterMs).toBe(6000);
    expect(fromFile.log.level).toBe('debug');
    const fromEnv = loadCoordinatorConfig({ config: file }, host({ KILN_LISTEN: '127.0.0.1:9100', KILN_DATA_DIR: '/from/env' }));
    expect(fromEnv.listen.port).toBe(9100);
    expect(fromEnv.dataDir).toBe('/from/env');
    const fromFlags = loadCoordinatorConfig({ config: file, listen: ':9200', dataDir: '/from/flags' }, host({ KILN_LISTEN: '127.0.0.1:9100' }));
    expect(fromFlags.listen).toEqual({ host: '0.0.0.0', port: 9200 });
    expect(fromFlags.dataDir).toBe('/from/flags');
  });

  it('names the setting of every bad value', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'listen: 127.0.0.1:8080\ncolour: blue\n');
    expect(() => loadCoordinatorConfig({ config: file }, host())).toThrow(/colour: unknown setting/);
    expect(() => loadCoordinatorConfig({ listen: 'nonsense' }, host())).toThrow(/config listen: 'nonsense' is not host:port/);
    expect(() => loadCoordinatorConfig({ heartbeatInterval: 'soon' }, host())).toThrow(/heartbeat_interval: invalid duration 'soon'/);
    expect(() => loadCoordinatorConfig({ heartbeatInterval: '10s', lostAfter: '5s' }, host())).toThrow(/lost_after: must be longer/);
    expect(() => loadCoordinatorConfig({ logLevel: 'loud' }, host())).toThrow(/log.level/);
    expect(() => loadCoordinatorConfig({ config: join(dir, 'missing.yaml') }, host())).toThrow(/missing\.yaml cannot be read/);
  });

  it('reads the cas section: local by default, s3 from the file, env over file, flag over env', async () => {
    expect(loadCoordinatorConfig({}, host()).cas).toEqual({ backend: 'local' });
    const secret = join(dir, 's3-secret');
    await writeFile(secret, 'file-secret\n');
    const file = join(dir, 'cas.yaml');
    await writeFile(file, `cas:\n  backend: s3\n  s3: { endpoint: 'http://s3.file:9000', bucket: from-file, access_key: fk, secret_key_file: ${secret}, prefix: builds, path_style: false }\n`);
    expect(loadCoordinatorConfig({ config: file }, host()).cas).toEqual({
      backend: 's3',
      s3: { endpoint: 'http://s3.file:9000', region: 'us-east-1', bucket: 'from-file', accessKey: 'fk', secretKey: 'file-secret', prefix: 'builds/', pathStyle: false },
    });
    const env = {
      KILN_CAS_BACKEND: 's3',
      KILN_S3_ENDPOINT: 'http://127.0.0.1:9000',
      KILN_S3_REGION: 'eu-west-1',
      KILN_S3_BUCKET: 'kiln-env',
      KILN_S3_ACCESS_KEY: 'ek',
      KILN_S3_SECRET_KEY: 'es',
      KILN_S3_PREFIX: 'p/',
    };
    expect(loadCoordinatorConfig({}, host(env)).cas).toEqual({
      backend: 's3',
      s3: { endpoint: 'http://127.0.0.1:9000', region: 'eu-west-1', bucket: 'kiln-env', accessKey: 'ek', secretKey: 'es', prefix: 'p/', pathStyle: true },
    });
    expect(loadCoordinatorConfig({ config: file }, host({ KILN_S3_BUCKET: 'kiln-env', KILN_S3_SECRET_KEY: 'es' })).cas).toMatchObject({ s3: { bucket: 'kiln-env', accessKey: 'fk', secretKey: 'es' } });
    expect(loadCoordinatorConfig({ config: file, casBackend: 'local' }, host(env)).cas).toEqual({ backend: 'local' });
  });

  it('names the missing or bad cas setting', async () => {
    const s3 = { KILN_CAS_BACKEND: 's3', KILN_S3_ENDPOINT: 'http://127.0.0.1:9000', KILN_S3_BUCKET: 'kiln', KILN_S3_ACCESS_KEY: 'k', KILN_S3_SECRET_KEY: 's' };
    const without = (key: keyof typeof s3) => Object.fromEntries(Object.entries(s3).filter(([k]) => k !== key));
    expect(() => loadCoordinatorConfig({}, host(without('KILN_S3_BUCKET')))).toThrow(/config cas\.s3\.bucket: required when cas\.backend is s3 \(.*KILN_S3_BUCKET\)/);
    expect(() => loadCoordinatorConfig({}, host(without('KILN_S3_ENDPOINT')))).toThrow(/config cas\.s3\.endpoint: required .*KILN_S3_ENDPOINT/);
    expect(() => loadCoordinatorConfig({}, host(without('KILN_S3_ACCESS_KEY')))).toThrow(/config cas\.s3\.access_key: required .*KILN_S3_ACCESS_KEY/);
    expect(() => loadCoordinatorConfig({}, host(without('KILN_S3_SECRET_KEY')))).toThrow(/config cas\.s3\.secret_key: required .*KILN_S3_SECRET_KEY_FILE/);
    expect(() => loadCoordinatorConfig({ casBackend: 'gcs' }, host(s3))).toThrow(/config cas\.backend: 'gcs' is not local or s3/);
    expect(() => loadCoordinatorConfig({}, host({ ...s3, KILN_S3_ENDPOINT: 'ftp://x:1' }))).toThrow(/config cas\.s3\.endpoint: unsupported scheme/);
    expect(() => loadCoordinatorConfig({}, host({ ...s3, KILN_S3_ENDPOINT: 'http://x:9000/bucket' }))).toThrow(/config cas\.s3\.endpoint: .* without a path/);
    expect(() => loadCoordinatorConfig({}, host({ ...s3, KILN_S3_BUCKET: 'Bad_Bucket' }))).toThrow(/config cas\.s3\.bucket: 'Bad_Bucket' is not a valid bucket name/);
    const missing = join(dir, 'no-such-secret');
    expect(() => loadCoordinatorConfig({}, host({ ...without('KILN_S3_SECRET_KEY'), KILN_S3_SECRET_KEY_FILE: missing }))).toThrow(/config cas\.s3\.secret_key_file: .*no-such-secret cannot be read \(ENOENT\)/);
    const file = join(dir, 'bad-cas.yaml');
    await writeFile(file, 'cas: { backend: s3, s3: { colour: blue } }\n');
    expect(() => loadCoordinatorConfig({ config: file }, host())).toThrow(/cas\.s3\.colour: unknown setting/);
    // The s3 settings are not checked while the backend is local.
    expect(loadCoordinatorConfig({}, host({ KILN_S3_ENDPOINT: 'nonsense' })).cas).toEqual({ backend: 'local' });
  });

  it('loads the shipped example', () => {
    const c = loadCoordinatorConfig({ config: join(ROOT, 'config', 'coordinator.example.yaml') }, host());
    expect(c.dataDir).toBe('/var/lib/kiln');
    expect(c.reconnectGraceMs).toBe(60_000);
  });
});

describe('agent config', () => {
  let dir: string;
  let token: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-acfg-'));
    token = join(dir, 'token');
    await writeFile(token, 'secret-agent-token\n');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, ...env }, hostname: 'build-host', isTTY: false });

  it('derives both URLs from any coordinator form', () => {
    for (const form of ['http://c.example:8080', 'ws://c.example:8080', 'c.example:8080', 'ws://c.example:8080/api/v1/agent']) {
      expect(coordinatorUrls(form)).toEqual({ wsUrl: 'ws://c.example:8080/api/v1/agent', httpUrl: 'http://c.example:8080' });
    }
    expect(coordinatorUrls('https://c.example')).toEqual({ wsUrl: 'wss://c.example/api/v1/agent', httpUrl: 'https://c.example' });
    // IPv6: the brackets once (the URL's host has them already)
    expect(coordinatorUrls('http://[::1]:8080')).toEqual({ wsUrl: 'ws://[::1]:8080/api/v1/agent', httpUrl: 'http://[::1]:8080' });
    expect(coordinatorUrls('https://[2001:db8::7]')).toEqual({ wsUrl: 'wss://[2001:db8::7]/api/v1/agent', httpUrl: 'https://[2001:db8::7]' });
    expect(() => coordinatorUrls('ftp://x')).toThrow(/unsupported scheme/);
  });

  it('reads the token file and applies defaults', () => {
    const c = loadAgentConfig({ coordinator: 'https://c:1', tokenFile: token }, host());
    expect(c.token).toBe('secret-agent-token');
    expect(c.name).toBe('build-host');
    expect(c.maxJobs).toBe(2);
    expect(c.dockerHost).toBe('unix:///var/run/docker.sock');
    expect(c.workDir).toBe(join(dir, '.cache', 'kiln-agent'));
  });

  it('layers file < env < flags and validates', async () => {
    const file = join(dir, 'a.yaml');
    await writeFile(file, `coordinator: https://file:1\ntoken_file: ${token}\nlabels: { pool: a }\nmax_jobs: 3\nplatforms: [linux/s390x]\n`);
    const f = loadAgentConfig({ config: file }, host());
    expect(f).toMatchObject({ httpUrl: 'https://file:1', labels: { pool: 'a' }, maxJobs: 3, extraPlatforms: ['linux/s390x'] });
    const e = loadAgentConfig({ config: file }, host({ KILN_AGENT_LABELS: 'pool=b,gpu=true', KILN_AGENT_MAX_JOBS: '4' }));
    expect(e).toMatchObject({ labels: { pool: 'b', gpu: 'true' }, maxJobs: 4 });
    const fl = loadAgentConfig({ config: file, maxJobs: '5', platforms: 'linux/arm64' }, host({ KILN_AGENT_MAX_JOBS: '4' }));
    expect(fl).toMatchObject({ maxJobs: 5, extraPlatforms: ['linux/arm64'] });
    expect(() => loadAgentConfig({ config: file, maxJobs: '0' }, host())).toThrow(/max_jobs: '0' is not an integer/);
    expect(() => loadAgentConfig({ config: file, platforms: 'linux/amd65' }, host())).toThrow(/platforms: unknown architecture 'amd65'/);
    expect(() => loadAgentConfig({ config: file, labels: 'novalue' }, host())).toThrow(/labels: 'novalue' is not key=value/);
    expect(() => loadAgentConfig({ config: file, name: 'has space' }, host())).toThrow(/name: 'has space'/);
  });

  it('says how to give a token when there is none, and uses the systemd credential when present', async () => {
    expect(() => loadAgentConfig({ coordinator: 'https://c:1' }, host())).toThrow(/--token-file FILE, KILN_AGENT_TOKEN_FILE or KILN_AGENT_TOKEN/);
    const c = loadAgentConfig({ coordinator: 'https://c:1' }, host({ CREDENTIALS_DIRECTORY: dir }));
    expect(c.token).toBe('secret-agent-token');
    expect(() => loadAgentConfig({ tokenFile: token }, host())).toThrow(/no coordinator given/);
  });

  it('loads the shipped example and env file keys are all known settings', async () => {
    const example = await readFile(join(ROOT, 'config', 'agent.example.yaml'), 'utf8');
    const file = join(dir, 'example.yaml');
    await writeFile(file, example.replace('/etc/kiln-agent/token', token));
    expect(loadAgentConfig({ config: file }, host())).toMatchObject({ name: 's390x-builder-1', maxJobs: 2, extraPlatforms: ['linux/arm64'] });
    const envFile = await readFile(join(ROOT, 'config', 'agent.env.example'), 'utf8');
    const env = Object.fromEntries(
      envFile
        .split('\n')
        .filter((l) => /^[A-Z_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(loadAgentConfig({ tokenFile: token }, host(env))).toMatchObject({ name: 's390x-builder-1', labels: { pool: 'wheels' } });
  });
});

describe('settings tables', () => {
  const tables: Array<[string, SettingTable]> = [
    ['coordinator', COORDINATOR_SETTINGS],
    ['agent', AGENT_SETTINGS],
  ];

  it('lets every row be set in the file, the environment and (but secrets) a flag, with one precedence', () => {
    for (const [, table] of tables) {
      for (const [id, row] of Object.entries(table)) {
        const file: Record<string, unknown> = {};
        let at = file;
        const parts = row.key.split('.');
        for (const part of parts.slice(0, -1)) at = (at[part] = {}) as Record<string, unknown>;
        at[parts.at(-1)!] = 'f';
        const read = (flags: Record<string, unknown>, env: Record<string, string>, f: unknown) => new SettingsReader(table, { flags, env, file: f }).pick(id);
        expect(read({}, {}, file), row.key).toEqual({ raw: 'f', layer: 'file' });
        expect(read({}, { [row.env]: 'e' }, file), row.key).toEqual({ raw: 'e', layer: 'env' });
        expect(read({ [id]: 'x' }, { [row.env]: 'e' }, file), row.key).toEqual(row.secret ? { raw: 'e', layer: 'env' } : { raw: 'x', layer: 'flag' });
        expect(read({}, {}, {}), row.key).toEqual(row.default !== undefined ? { raw: row.default, layer: 'default' } : undefined);
      }
      // Every key is accepted by the file schema, nothing else.
      expect(fileSchema(table).safeParse({}).success).toBe(true);
      expect(fileSchema(table).safeParse({ colour: 'blue' }).success).toBe(false);
    }
  });

  it('gives each row its own env var and flag', () => {
    for (const [, table] of tables) {
      const envs = Object.values(table).map((r) => r.env);
      expect(new Set(envs).size).toBe(envs.length);
      const keys = Object.values(table).map((r) => r.key);
      expect(new Set(keys).size).toBe(keys.length);
    }
  });

  it('lists every row in --help and in the README', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    for (const [name, table] of tables) {
      const help = [...settingFlags(table).map((f) => `${f.flags} ${f.description}`), settingsHelpFooter(table)].join('\n');
      for (const [id, row] of Object.entries(table)) {
        if (row.hidden) continue;
        expect(help, `${name} --help: ${row.key}`).toContain(row.env);
        expect(help, `${name} --help: ${row.key}`).toContain(row.secret ? row.key : `--${kebab(id)} `);
      }
      // The README's table is the one made from the rows (regenerate it with settingsMarkdown when a row changes).
      expect(readme, `README table of the ${name}`).toContain(settingsMarkdown(table));
    }
  });

  it('reads the settings that were file-only (or env-only) before from every layer', async () => {
    const host = { env: { HOME: '/nowhere', KILN_CANCEL_GRACE: '45s', KILN_DEFAULT_PLATFORM: 'linux/arm64' }, arch: 'x64', isTTY: false };
    const c = loadCoordinatorConfig({ maxBlobBytes: '1GiB', agentTokenFile: 'agent-token', reconnectGrace: '2m', artifactRetention: '7d' }, host);
    expect(c).toMatchObject({ cancelGraceMs: 45_000, defaultPlatform: 'linux/arm64', maxBlobBytes: 1024 ** 3, reconnectGraceMs: 120_000, artifacts: { retentionMs: 7 * 86_400_000 } });
    expect(c.agentTokenFile).toMatch(/\/agent-token$/);
    const s3 = loadCoordinatorConfig(
      { casBackend: 's3', s3Endpoint: 'http://127.0.0.1:9000', s3Bucket: 'flags', s3AccessKey: 'k', s3PathStyle: 'false' },
      { ...host, env: { ...host.env, KILN_S3_SECRET_KEY: 's' } },
    );
    expect(s3.cas).toMatchObject({ backend: 's3', s3: { bucket: 'flags', pathStyle: false, secretKey: 's' } });
    expect(() => loadCoordinatorConfig({ s3PathStyle: 'maybe', casBackend: 's3', s3Endpoint: 'http://x:1', s3Bucket: 'bkt', s3AccessKey: 'k' }, { ...host, env: { KILN_S3_SECRET_KEY: 's' } })).toThrow(
      /cas\.s3\.path_style: 'maybe' is not a boolean/,
    );
    expect(() => loadCoordinatorConfig({ maxBlobBytes: '0' }, host)).toThrow(/max_blob_bytes/);
  });
});
