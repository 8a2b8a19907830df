/**
 * Serves the built dashboard (`dist/web/`, made by `npm run build`) at `/`: the files vite
 * wrote, by exact name only (the folder is listed once, on the first request, so no path
 * sent can name anything outside it), `index.html` for the app's own routes (history
 * routing: `/builds/<id>`, `/agents`), hashed assets cached for a year, index.html never.
 * Every answer carries a strict Content-Security-Policy (no inline script) and nosniff.
 *
 * Without a built dashboard the coordinator is API-only: `/` says so in a line of text.
 * `/api/…` paths never reach here (they keep their problem+json 404).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, extname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { API_PREFIX } from '../../shared/index.js';

/** The policy of every page and file served here. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "worker-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "form-action 'self'",
].join('; ');

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

const TYPES = new Map<string, string>([
  ['.html', 'text/html; charset=utf-8'],
  ['.js', 'text/javascript; charset=utf-8'],
  ['.mjs', 'text/javascript; charset=utf-8'],
  ['.css', 'text/css; charset=utf-8'],
  ['.json', 'application/json'],
  ['.svg', 'image/svg+xml'],
  ['.png', 'image/png'],
  ['.ico', 'image/x-icon'],
  ['.woff2', 'font/woff2'],
  ['.txt', 'text/plain; charset=utf-8'],
  ['.map', 'application/json'],
]);

/** Files kept in memory at most (the dashboard is well under a few MiB); larger are read per request. */
const CACHE_MAX_BYTES = 8 * 1024 * 1024;
/** Files listed at most (vite writes a few dozen). */
const MAX_FILES = 2000;

/** The default root: `dist/web` next to the coordinator's compiled code (also when run from source). */
export function defaultWebRoot(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const top = resolve(here, '..', '..');
  return basename(top) === 'dist' ? join(top, 'web') : join(top, 'dist', 'web');
}

interface WebFile {
  readonly path: string;
  readonly type: string;
  readonly immutable: boolean;
  body: Uint8Array | null;
}

export class StaticWeb {
  private files: Promise<Map<string, WebFile> | null> | null = null;

  /** `root`: the built dashboard's folder; null: API only. */
  constructor(private readonly root: string | null) {}

  /**
   * The answer to a GET or HEAD of `rawPath` (as sent, still percent-encoded), or null when
   * it is not the dashboard's to answer (an `/api/` path, another method).
   */
  async answer(method: string, rawPath: string): Promise<Response | null> {
    if (method !== 'GET' && method !== 'HEAD') return null;
    if (rawPath === API_PREFIX || rawPath.startsWith(`${API_PREFIX}/`) || rawPath.startsWith('/api/')) return null;
    const files = await this.list();
    const head = method === 'HEAD';
    if (files === null) {
      if (rawPath !== '/' && rawPath !== '/index.html') return null;
      const text = 'kiln coordinator: the dashboard is not built (npm run build makes dist/web); the API is at /api/v1, described by /openapi.json\n';
      return this.respond(head, 200, 'text/plain; charset=utf-8', 'no-cache', new TextEncoder().encode(text));
    }
    let name: string;
    try {
      name = decodeURIComponent(rawPath);
    } catch {
      return this.notFound(head);
    }
    if (name.includes('/..') || name.includes('\\') || name.includes('\0')) return this.notFound(head);
    const file = files.get(name);
    if (file) return this.serveFile(head, file);
    // the app's own routes (no file extension, outside the asset folder) get index.html
    const last = name.slice(name.lastIndexOf('/') + 1);
    if (name.startsWith('/assets/') || last.includes('.')) return this.notFound(head);
    const index = files.get('/index.html');
    return index ? this.serveFile(head, index) : this.notFound(head);
  }

  private async serveFile(head: boolean, f: WebFile): Promise<Response> {
    let body = f.body;
    if (body === null) {
      try {
        body = new Uint8Array(await readFile(f.path));
      } catch {
        // dist/web rebuilt or changed while running: look again next time, a 404 now
        this.files = null;
        return this.notFound(head);
      }
      if (body.byteLength <= CACHE_MAX_BYTES) f.body = body;
    }
    return this.respond(head, 200, f.type, f.immutable ? 'public, max-age=31536000, immutable' : 'no-cache', body);
  }

  private notFound(head: boolean): Response {
    return this.respond(head, 404, 'text/plain; charset=utf-8', 'no-cache', new TextEncoder().encode('not found\n'));
  }

  private respond(head: boolean, status: number, type: string, cache: string, body: Uint8Array): Response {
    const headers = new Headers({ ...SECURITY_HEADERS, 'content-type': type, 'cache-control': cache, 'content-length': String(body.byteLength) });
    return new Response(head ? null : (body as Uint8Array<ArrayBuffer>), { status, headers });
  }

  private list(): Promise<Map<string, WebFile> | null> {
    // A scan that failed (a folder it could not read) is not kept: the next request scans again.
    this.files ??= this.scan().catch(() => {
      this.files = null;
      return null;
    });
    return this.files;
  }

  /** Every regular file under the root, by its URL path (`/assets/index-3f2a.js`); null without index.html. */
  private async scan(): Promise<Map<string, WebFile> | null> {
    const root = this.root;
    if (root === null) return null;
    try {
      if (!(await stat(join(root, 'index.html'))).isFile()) return null;
    } catch {
      return null;
    }
    const out = new Map<string, WebFile>();
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        if (out.size >= MAX_FILES) return;
        const p = join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) {
          const rel = relative(root, p).split(sep).join('/');
          out.set(`/${rel}`, { path: p, type: TYPES.get(extname(e.name)) ?? 'application/octet-stream', immutable: rel.startsWith('assets/'), body: null });
        }
      }
    };
    await walk(root);
    return out;
  }
}
