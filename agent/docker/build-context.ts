/**
 * The tar stream sent to the Engine's /build endpoint for one node.
 *
 * With a context and a Dockerfile inside it, the cached context tar is streamed as is.
 * With a Dockerfile given as text (`dockerfile_inline`, or the context's Dockerfile after
 * kiln rewrote it for the node's inputs), it is added to the stream as `.kiln.Dockerfile`
 * (re-packing the context's entries on the fly, never writing a copy), and the build is
 * pointed at it. The stream is consumed by dockerd, never a path, so it works even when
 * dockerd cannot see the agent's files (systemd PrivateTmp, another mount namespace).
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { extract, pack } from 'tar-stream';

export const INLINE_DOCKERFILE = '.kiln.Dockerfile';

function stripDot(name: string): string {
  let p = name;
  while (p.startsWith('./')) p = p.slice(2);
  return p;
}

/** Reads one file (e.g. the Dockerfile) out of a tar, refusing more than `maxBytes`; null when absent. */
export async function readTarFile(tarPath: string, name: string, maxBytes = 1024 * 1024): Promise<string | null> {
  const want = stripDot(name);
  return new Promise((resolve, reject) => {
    const ex = extract();
    let found: string | null = null;
    ex.on('entry', (header, body, next) => {
      if (found === null && stripDot(header.name) === want && header.type === 'file') {
        if ((header.size ?? 0) > maxBytes) {
          ex.destroy(new Error(`${name} in the context is larger than ${maxBytes} bytes`));
          return;
        }
        const chunks: Buffer[] = [];
        body.on('data', (c: unknown) => {
          chunks.push(c as Buffer);
        });
        body.on('end', () => {
          found = Buffer.concat(chunks).toString('utf8');
          next();
        });
        return;
      }
      body.on('end', next);
      body.resume();
    });
    ex.on('finish', () => resolve(found));
    ex.on('error', reject);
    const src = createReadStream(tarPath, { highWaterMark: 1024 * 1024 });
    src.on('error', reject);
    src.pipe(ex);
  });
}

export function buildContextStream(contextTar: string | null, dockerfileInline: string | null): { stream: Readable; dockerfile: string | null } {
  if (dockerfileInline === null) {
    if (contextTar === null) throw new Error('a node needs a context or an inline Dockerfile');
    return { stream: createReadStream(contextTar, { highWaterMark: 1024 * 1024 }), dockerfile: null };
  }
  const out = pack();
  const addInline = () => {
    out.entry({ name: INLINE_DOCKERFILE, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 }, dockerfileInline);
    out.finalize();
  };
  if (contextTar === null) {
    addInline();
    return { stream: out as unknown as Readable, dockerfile: INLINE_DOCKERFILE };
  }
  const ex = extract();
  ex.on('entry', (header, body, next) => {
    if (stripDot(header.name) === INLINE_DOCKERFILE) {
      body.on('end', next);
      body.resume();
      return;
    }
    const entry = out.entry(header, (err) => (err ? out.destroy(err) : next()));
    body.pipe(entry);
  });
  ex.on('finish', addInline);
  ex.on('error', (err) => out.destroy(err));
  const src = createReadStream(contextTar, { highWaterMark: 1024 * 1024 });
  src.on('error', (err) => out.destroy(err));
  src.pipe(ex);
  return { stream: out as unknown as Readable, dockerfile: INLINE_DOCKERFILE };
}
