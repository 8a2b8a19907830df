/**
 * The coordinator's registry credentials file: what it takes, the errors that name the
 * setting and the problem, and that an assignment gets only the credentials of the
 * registries it pushes to (its refs, or an index node's platform images) or pulls from (its
 * Dockerfile's images, inline or read from its context tar in the CAS).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { contextDockerfile, loadContextDockerfile, MAX_DOCKERFILE_BYTES, wantContextDockerfiles } from '../../coordinator/registry/context-dockerfiles.js';
import { loadRegistryCredentials } from '../../coordinator/registry/credentials.js';
import { tarOf } from '../helpers/api-fixtures.js';
import type { AssignPayload } from '../../shared/index.js';

describe('registry credentials file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-creds-'));
    await writeFile(join(dir, 'pw'), 's3cret\n');
    await writeFile(join(dir, 'tok'), 'tok-123\n');
    await writeFile(join(dir, 'empty'), '\n');
    await writeFile(join(dir, 'long-pw'), `${'p'.repeat(4097)}\n`);
    await writeFile(join(dir, 'long-tok'), `${'t'.repeat(16_385)}\n`);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const file = async (text: string) => {
    const p = join(dir, `c-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(p, text);
    return p;
  };
  const assign = (over: Partial<AssignPayload>) => ({ images: [], ...over }) as unknown as AssignPayload;

  it('reads passwords and tokens from files and gives each assignment only what it pushes to', async () => {
    const creds = loadRegistryCredentials(await file('127.0.0.1:5001: {username: kiln, password_file: pw}\nghcr.io: {token_file: tok}\nother.io: {username: u, password_file: pw}\n'));
    expect(creds.size).toBe(3);
    expect(creds.forAssign(assign({ images: ['127.0.0.1:5001/a/b:1', 'ghcr.io/x/y:2'] }))).toEqual([
      { host: '127.0.0.1:5001', username: 'kiln', password: 's3cret' },
      { host: 'ghcr.io', token: 'tok-123' },
    ]);
    expect(creds.forAssign(assign({ images: ['127.0.0.1:5000/a:1'] }))).toEqual([]);
    expect(creds.forAssign(assign({ images: ['other.io/i:1'], index: [{ node: 'n.linux-amd64', platform: 'linux/amd64', images: [{ ref: 'ghcr.io/x/y:1-linux-amd64', digest: `sha256:${'a'.repeat(64)}`, platform: 'linux/amd64', size: 1, media_type: 'm' }] }] })).map((c) => c.host)).toEqual(['other.io', 'ghcr.io']);
    // host names are case-insensitive
    expect(creds.forAssign(assign({ images: ['GHCR.io/x/y:2'] })).map((c) => c.host)).toEqual(['ghcr.io']);
    // the layer-cache registry of a node that pushes no image
    expect(creds.forAssign(assign({ cache: { ref: '127.0.0.1:5001/kiln-cache:linux-amd64-n--b', mode: 'read' } })).map((c) => c.host)).toEqual(['127.0.0.1:5001']);
  });

  it('adds the registries the Dockerfile pulls from (build args and platform applied), not for an index node', async () => {
    const creds = loadRegistryCredentials(await file('127.0.0.1:5001: {username: kiln, password_file: pw}\nghcr.io: {token_file: tok}\nother.io: {username: u, password_file: pw}\n'));
    const df = 'ARG REG=other.io\nFROM ${REG}/base:1 AS b\nFROM b\nCOPY --from=ghcr.io/x/tools:1 /t /t\nFROM busybox\n';
    const base = { build_args: {}, platform: 'linux/amd64' };
    expect(creds.forAssign(assign({ ...base, dockerfile_inline: df })).map((c) => c.host)).toEqual(['other.io', 'ghcr.io']);
    expect(creds.forAssign(assign({ ...base, dockerfile_inline: df, build_args: { REG: '127.0.0.1:5001' } })).map((c) => c.host)).toEqual(['127.0.0.1:5001', 'ghcr.io']);
    // a Dockerfile from the context, given by the caller
    expect(creds.forAssign(assign({ ...base, dockerfile_inline: null }), 'FROM 127.0.0.1:5001/b\n').map((c) => c.host)).toEqual(['127.0.0.1:5001']);
    expect(creds.forAssign(assign({ ...base, dockerfile_inline: null }), null)).toEqual([]);
    expect(creds.forAssign(assign({ ...base, dockerfile_inline: df, index: [] })).map((c) => c.host)).toEqual([]);
  });

  it('reads a context Dockerfile once per digest and path, bounded', async () => {
    const digest = `sha256:${'c'.repeat(64)}`;
    const tar = await tarOf({ 'src/x.c': 'int x;\n', 'build/Dockerfile': 'FROM 127.0.0.1:5001/b\n', 'huge/Dockerfile': `FROM a\n${'#'.repeat(MAX_DOCKERFILE_BYTES)}\n` });
    let opened = 0;
    const open = () => {
      opened++;
      return Readable.from([tar]);
    };
    // off (no credentials configured): nothing read
    wantContextDockerfiles(false);
    await loadContextDockerfile(digest, 'build/Dockerfile', open);
    expect(opened).toBe(0);
    wantContextDockerfiles(true);
    expect(contextDockerfile(digest, 'build/Dockerfile')).toBeUndefined();
    await Promise.all([loadContextDockerfile(digest, './build/Dockerfile', open), loadContextDockerfile(digest, 'build/Dockerfile', open)]);
    expect(opened).toBe(1);
    expect(contextDockerfile(digest, 'build/Dockerfile')).toBe('FROM 127.0.0.1:5001/b\n');
    await loadContextDockerfile(digest, 'build/Dockerfile', open);
    expect(opened).toBe(1);
    await loadContextDockerfile(digest, 'huge/Dockerfile', open);
    expect(contextDockerfile(digest, 'huge/Dockerfile')).toBeNull();
    await loadContextDockerfile(digest, 'Dockerfile', open);
    expect(contextDockerfile(digest, 'Dockerfile')).toBeNull();
    await loadContextDockerfile(`sha256:${'d'.repeat(64)}`, 'Dockerfile', () => Readable.from([Buffer.from('not a tar at all')]));
    expect(contextDockerfile(`sha256:${'d'.repeat(64)}`, 'Dockerfile')).toBeNull();
  });

  it.each([
    ['reg.io: {username: u}\n', 'give exactly one of password_file (with username) or token_file'],
    ['reg.io: {password_file: pw}\n', 'password_file needs a username'],
    ['reg.io: {username: u, password_file: missing}\n', 'cannot be read (ENOENT)'],
    ['reg.io: {username: u, password_file: empty}\n', 'is empty'],
    // longer than an assign frame carries: refused at start, not when a frame fails to send
    ['reg.io: {username: u, password_file: long-pw}\n', 'holds 4097 characters (at most 4096)'],
    ['reg.io: {token_file: long-tok}\n', 'holds 16385 characters (at most 16384)'],
    ['"Bad Host": {token_file: tok}\n', "'Bad Host' is not a registry host"],
    ['reg.io: {token_file: tok, colour: red}\n', 'unknown setting'],
  ])('refuses %j', async (text, message) => {
    const p = await file(text);
    expect(() => loadRegistryCredentials(p)).toThrow(message);
  });
});
