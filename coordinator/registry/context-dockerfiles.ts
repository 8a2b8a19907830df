/**
 * The Dockerfiles of build contexts, read by the coordinator from its CAS so it can send a
 * node the credentials of the registries its Dockerfile pulls from (FROM, `COPY --from=`,
 * `RUN --mount=from=`) — an inline Dockerfile is in the spec, one inside a context tar is
 * not. Read at submit (coordinator/http/routes-builds.ts, after the check that the
 * Dockerfile is in the context) and kept per context digest and path: a digest's content
 * never changes. Bounded: at most `MAX_DOCKERFILE_BYTES` per Dockerfile (larger: none kept,
 * the agent refuses it too) and `MAX_KEPT` Dockerfiles (the oldest is dropped). Nothing
 * is read while the coordinator has no registry credentials (`wantContextDockerfiles`).
 *
 * A miss at assignment time (the coordinator restarted since the submit, or the entry was
 * dropped) starts the read again, and that assignment goes without pull credentials: a
 * private base image then fails the attempt with the registry's refusal, and a retry gets
 * them. Never holds credentials.
 */
import { extract } from 'tar-stream';
import type { Readable } from 'node:stream';
import { normalizeTarPath } from '../cas/tar-index.js';

/** The agent reads at most this much of a context's Dockerfile (agent/docker/build-context.ts). */
export const MAX_DOCKERFILE_BYTES = 1024 * 1024;
export const MAX_KEPT = 1000;
/** And at most this many characters of Dockerfile text in all (the oldest go first). */
export const MAX_KEPT_CHARS = 32 * 1024 * 1024;

/** Context digest + Dockerfile path -> its text (null: absent, too large or unreadable). */
const kept = new Map<string, string | null>();
const loading = new Map<string, Promise<void>>();
let keptChars = 0;

/** Off until the coordinator has registry credentials: without them no Dockerfile is read. */
let wanted = false;

/** Turns the reads on (the coordinator has a credentials file) or off. */
export function wantContextDockerfiles(on: boolean): void {
  wanted = on;
}

const keyOf = (digest: string, path: string) => `${digest}\0${normalizeTarPath(path)}`;

/** The Dockerfile `path` of context `digest`, when read: a string, null (none), or undefined (not read). */
export function contextDockerfile(digest: string, path: string): string | null | undefined {
  return kept.get(keyOf(digest, path));
}

/** Reads `path` out of the context tar `open()` gives, once per digest and path. Never throws. */
export function loadContextDockerfile(digest: string, path: string, open: () => Readable | Promise<Readable>): Promise<void> {
  const key = keyOf(digest, path);
  if (!wanted || kept.has(key)) return Promise.resolve();
  const running = loading.get(key);
  if (running) return running;
  const p = readTarText(open, normalizeTarPath(path))
    .catch(() => null)
    .then((text) => {
      const size = text?.length ?? 0;
      while (kept.size > 0 && (kept.size >= MAX_KEPT || keptChars + size > MAX_KEPT_CHARS)) {
        const oldest = kept.keys().next().value!;
        keptChars -= kept.get(oldest)?.length ?? 0;
        kept.delete(oldest);
      }
      kept.set(key, text);
      keptChars += size;
    })
    .finally(() => loading.delete(key));
  loading.set(key, p);
  return p;
}

/** One regular file of a tar as UTF-8 text; null when absent or larger than MAX_DOCKERFILE_BYTES. Stops reading once found. */
async function readTarText(open: () => Readable | Promise<Readable>, want: string): Promise<string | null> {
  const src = await open();
  return new Promise<string | null>((resolve, reject) => {
    const ex = extract();
    let settled = false;
    const done = (v: string | null) => {
      if (settled) return;
      settled = true;
      resolve(v);
      src.unpipe(ex);
      src.destroy();
      ex.destroy();
    };
    ex.on('entry', (header, body, next) => {
      if (normalizeTarPath(header.name) !== want || header.type !== 'file') {
        body.on('end', next);
        body.resume();
        return;
      }
      if ((header.size ?? 0) > MAX_DOCKERFILE_BYTES) return done(null);
      const chunks: Buffer[] = [];
      body.on('data', (c: unknown) => {
        chunks.push(c as Buffer);
      });
      body.on('end', () => done(Buffer.concat(chunks).toString('utf8')));
    });
    ex.on('finish', () => done(null));
    ex.on('error', (err) => (settled ? undefined : reject(err)));
    src.on('error', (err) => (settled ? undefined : reject(err)));
    src.pipe(ex);
  });
}
