/**
 * Build contexts are packed deterministically, so the same tree always has the same
 * digest (uploaded once, same BuildKit input), whatever the mtimes, owners or
 * directory-listing order; and the agent's inline-Dockerfile repacking keeps every
 * context entry.
 */
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extract } from 'tar-stream';
import type { Readable } from 'node:stream';
import { packDir as packContext } from '../../shared/index.js';
import { buildContextStream, INLINE_DOCKERFILE } from '../../agent/docker/build-context.js';

interface Entry {
  name: string;
  type: string;
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
  body: string;
  linkname: string | null;
}

async function entries(stream: Readable | NodeJS.ReadableStream): Promise<Entry[]> {
  const out: Entry[] = [];
  const ex = extract();
  ex.on('entry', (h, body, next) => {
    const chunks: Buffer[] = [];
    body.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    body.on('end', () => {
      out.push({ name: h.name, type: h.type ?? 'file', mode: h.mode ?? 0, mtime: h.mtime?.getTime() ?? -1, uid: h.uid ?? -1, gid: h.gid ?? -1, body: Buffer.concat(chunks).toString(), linkname: h.linkname ?? null });
      next();
    });
  });
  const done = new Promise<void>((resolve, reject) => {
    ex.on('finish', () => resolve());
    ex.on('error', reject);
  });
  (stream as NodeJS.ReadableStream).pipe(ex);
  await done;
  return out;
}

describe('context packing', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-pack-'));
    await mkdir(join(dir, 'src', 'deep'), { recursive: true });
    await writeFile(join(dir, 'Dockerfile'), 'FROM kiln/busybox:1\n');
    await writeFile(join(dir, 'src', 'b.txt'), 'bee\n');
    await writeFile(join(dir, 'src', 'a.txt'), 'ay\n');
    await writeFile(join(dir, 'src', 'deep', 'run.sh'), '#!/bin/sh\necho hi\n');
    await chmod(join(dir, 'src', 'deep', 'run.sh'), 0o750);
    await chmod(join(dir, 'src', 'a.txt'), 0o600);
    await symlink('a.txt', join(dir, 'src', 'link'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gives the same digest twice and ignores mtimes', async () => {
    const a = await packContext(dir);
    await utimes(join(dir, 'src', 'b.txt'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    const b = await packContext(dir);
    expect(b.digest).toBe(a.digest);
    expect(b.size).toBe(a.size);
    await a.cleanup();
    await b.cleanup();
  });

  it('changes the digest when a byte changes', async () => {
    const a = await packContext(dir);
    await writeFile(join(dir, 'src', 'b.txt'), 'bea\n');
    const b = await packContext(dir);
    expect(b.digest).not.toBe(a.digest);
    await a.cleanup();
    await b.cleanup();
  });

  it('writes sorted entries with fixed times and owners and normalised modes', async () => {
    const p = await packContext(dir);
    const es = await entries((await import('node:fs')).createReadStream(p.path));
    expect(es.map((e) => e.name)).toEqual(['Dockerfile', 'src/', 'src/a.txt', 'src/b.txt', 'src/deep/', 'src/deep/run.sh', 'src/link']);
    for (const e of es) {
      expect(e.mtime).toBe(0);
      expect(e.uid).toBe(0);
      expect(e.gid).toBe(0);
    }
    const by = Object.fromEntries(es.map((e) => [e.name, e]));
    expect(by['src/a.txt']!.mode).toBe(0o644);
    expect(by['src/deep/run.sh']!.mode).toBe(0o755);
    expect(by['src/']!.mode).toBe(0o755);
    expect(by['src/link']).toMatchObject({ type: 'symlink', linkname: 'a.txt' });
    expect(by['src/deep/run.sh']!.body).toContain('echo hi');
    expect(p.files).toBe(4);
    await p.cleanup();
  });

  it('adds an inline Dockerfile to a context without losing or duplicating entries', async () => {
    await writeFile(join(dir, INLINE_DOCKERFILE), 'FROM stale\n');
    const p = await packContext(dir);
    const { stream, dockerfile } = buildContextStream(p.path, 'FROM kiln/busybox:1\nRUN echo inline\n');
    expect(dockerfile).toBe(INLINE_DOCKERFILE);
    const es = await entries(stream);
    const names = es.map((e) => e.name);
    expect(names.filter((n) => n === INLINE_DOCKERFILE)).toHaveLength(1);
    expect(es.find((e) => e.name === INLINE_DOCKERFILE)!.body).toBe('FROM kiln/busybox:1\nRUN echo inline\n');
    for (const n of ['Dockerfile', 'src/a.txt', 'src/deep/run.sh', 'src/link']) expect(names).toContain(n);
    await p.cleanup();
  });

  it('builds a one-file context for an inline Dockerfile alone, and streams a context as is otherwise', async () => {
    const only = await entries(buildContextStream(null, 'FROM x\n').stream);
    expect(only.map((e) => [e.name, e.body])).toEqual([[INLINE_DOCKERFILE, 'FROM x\n']]);
    const p = await packContext(dir);
    const { stream, dockerfile } = buildContextStream(p.path, null);
    expect(dockerfile).toBeNull();
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks)).toEqual(await readFile(p.path));
    await p.cleanup();
  });
});
