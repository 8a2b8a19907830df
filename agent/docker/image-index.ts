/**
 * Assembling a multi-platform image index through a registry's HTTP API (distribution
 * v2), what an index node does once every platform node pushed its image:
 *
 * 1. For each ref and each platform, the platform node's image in the same repository
 *    (platform nodes push to every repository of the node's refs) is asked for with HEAD
 *    `/v2/<repo>/manifests/<digest>`: it must be there, and the answer gives its media
 *    type and size.
 * 2. A Docker manifest list (or an OCI image index, when the children are OCI manifests)
 *    naming the children with their platforms is PUT at `/v2/<repo>/manifests/<tag>`
 *    with `Content-Type` equal to its `mediaType`; its digest is the sha256 of the bytes.
 *
 * Registries on loopback addresses are spoken to over plain HTTP (as the Docker Engine
 * treats them as insecure by default); every other over HTTPS. A 401 with a `Basic`
 * challenge is answered with the credentials; a `Bearer` challenge with a token fetched
 * from its realm (with the credentials, when there are some). A registry that cannot be
 * reached, answers 5xx or breaks the connection is the infrastructure's failure (retried);
 * 4xx answers (credentials, a missing child, an invalid manifest) fail the node at once.
 */
import { createHash } from 'node:crypto';
import { coerceError, parseImageRef, readBoundedText, type IndexEntryPayload, type PushedImagePayload } from '../../shared/core.js';
import { PushError, type RegistryAuth } from './image-push.js';

export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST_V2 = 'application/vnd.docker.distribution.manifest.v2+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MANIFEST_ACCEPT = [DOCKER_MANIFEST_V2, OCI_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX].join(', ');

/** The registry's base URL for a reference's domain. */
export function registryBase(domain: string): string {
  const host = domain.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || /^127\./.test(host) || host === '::1';
  if (domain === 'docker.io') return 'https://registry-1.docker.io';
  return `${loopback ? 'http' : 'https'}://${domain}`;
}

/** The entry's platform; arm64 without a variant is `v8` (as OCI normalises it, and as Docker's own lists say). */
function platformObject(platform: string): { os: string; architecture: string; variant?: string } {
  const [os = 'linux', architecture = 'amd64', given] = platform.split('/');
  const variant = given ?? (architecture === 'arm64' ? 'v8' : undefined);
  return variant ? { os, architecture, variant } : { os, architecture };
}

interface Challenge {
  scheme: string;
  params: Map<string, string>;
}

/** Parses one `WWW-Authenticate` challenge (`Bearer realm="...",service="...",scope="..."`). */
export function parseChallenge(header: string): Challenge | null {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(header);
  if (!m) return null;
  const params = new Map<string, string>();
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) params.set(p[1]!.toLowerCase(), p[2] ?? p[3] ?? '');
  return { scheme: m[1]!.toLowerCase(), params };
}

/** A fetch that answers the registry's 401 challenge once (Basic or Bearer token flow). */
export class RegistryClient {
  private authorization: string | null = null;

  constructor(
    private readonly auth: RegistryAuth | null,
    private readonly signal?: AbortSignal,
    /** Each request must be answered within this long (a registry failure, retried). */
    private readonly timeoutMs = 600_000,
  ) {}

  /** The caller's signal and this request's time limit. */
  private requestSignal(): AbortSignal {
    const limit = AbortSignal.timeout(this.timeoutMs);
    return this.signal ? AbortSignal.any([this.signal, limit]) : limit;
  }

  private failure(what: string, err: unknown): PushError {
    if (!this.signal?.aborted && (err as { name?: string }).name === 'TimeoutError') return new PushError(`${what}: no answer from the registry in ${Math.round(this.timeoutMs / 1000)} s`, false, err);
    const cause = (err as { cause?: unknown }).cause;
    return new PushError(`${what} failed: ${coerceError(cause ?? err).message}`, false, err);
  }

  async fetch(url: string, init: { method: string; headers?: Record<string, string>; body?: string }): Promise<Response> {
    const send = () => this.send(url, init);
    const res = await send();
    if (res.status !== 401) return res;
    const header = res.headers.get('www-authenticate');
    await res.arrayBuffer().catch(() => undefined);
    const ch = header ? parseChallenge(header) : null;
    if (!ch) throw new PushError(`${init.method} ${url}: the registry answered 401 without a challenge`, true);
    if (ch.scheme === 'basic') {
      if (!this.auth?.username) throw new PushError(`the registry at ${new URL(url).host} needs credentials (401 ${ch.params.get('realm') ?? ''}); none are configured for it`, true);
      this.authorization = `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password ?? ''}`).toString('base64')}`;
    } else if (ch.scheme === 'bearer') {
      this.authorization = `Bearer ${await this.token(ch)}`;
    } else {
      throw new PushError(`the registry at ${new URL(url).host} asks for unsupported authentication '${ch.scheme}'`, true);
    }
    const again = await send();
    if (again.status === 401 || again.status === 403) {
      await again.arrayBuffer().catch(() => undefined);
      throw new PushError(`the registry at ${new URL(url).host} refused the credentials (${again.status})`, true);
    }
    return again;
  }

  private async send(url: string, init: { method: string; headers?: Record<string, string>; body?: string }): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.authorization) headers.authorization = this.authorization;
    try {
      return await fetch(url, { method: init.method, headers, ...(init.body !== undefined ? { body: init.body } : {}), signal: this.requestSignal(), redirect: 'follow' });
    } catch (err) {
      throw this.failure(`${init.method} ${url}`, err);
    }
  }

  private async token(ch: Challenge): Promise<string> {
    const realm = ch.params.get('realm');
    if (!realm) throw new PushError('the registry sent a Bearer challenge without a realm', true);
    let u: URL;
    try {
      u = new URL(realm);
    } catch {
      throw new PushError(`the registry sent a Bearer challenge whose realm is not a URL ('${realm.slice(0, 200)}')`, true);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new PushError(`the registry's token realm ${u.protocol}// is not HTTP(S)`, true);
    for (const k of ['service', 'scope']) {
      const v = ch.params.get(k);
      if (v) u.searchParams.set(k, v);
    }
    const headers: Record<string, string> = {};
    if (this.auth?.registrytoken) return this.auth.registrytoken;
    if (this.auth?.username) headers.authorization = `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password ?? ''}`).toString('base64')}`;
    let res: Response;
    try {
      res = await fetch(u, { headers, signal: this.requestSignal() });
    } catch (err) {
      throw this.failure(`fetching a registry token from ${u.host}`, err);
    }
    const { text } = await readBoundedText(res, MAX_TOKEN_RESPONSE_BYTES);
    if (res.status === 401 || res.status === 403) throw new PushError(`the token service at ${u.host} refused the credentials (${res.status})`, true);
    if (!res.ok) throw new PushError(`the token service at ${u.host} answered ${res.status}`, res.status < 500);
    let body: { token?: unknown; access_token?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new PushError(`the token service at ${u.host} answered with invalid JSON`, true);
    }
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : null;
    if (!token) throw new PushError(`the token service at ${u.host} gave no token`, true);
    return token;
  }
}

/** The largest token-service answer read (a JWT and its JSON wrapper are a few KiB). */
const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;

function httpFailure(what: string, res: Response, body: string): PushError {
  const detail = body.slice(0, 500).trim();
  return new PushError(`${what}: the registry answered ${res.status}${detail ? ` ${detail}` : ''}`, res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429);
}

/**
 * Puts one index per ref naming every entry's image in that ref's repository. `authFor`
 * gives the credentials of a registry host, if any.
 */
export async function assembleIndex(
  refs: readonly string[],
  entries: readonly IndexEntryPayload[],
  opts: { authFor?: (domain: string) => RegistryAuth | null; signal?: AbortSignal; log?: (line: string) => void; pushStallMs?: number } = {},
): Promise<PushedImagePayload[]> {
  const out: PushedImagePayload[] = [];
  for (const ref of refs) {
    const parsed = parseImageRef(ref);
    if (!parsed.ok || parsed.ref.tag === null) throw new PushError(`invalid image reference '${ref}'`, true);
    const { domain, path, tag } = parsed.ref;
    const repo = `${domain}/${path}`;
    const base = `${registryBase(domain)}/v2/${path}`;
    const client = new RegistryClient(opts.authFor?.(domain) ?? null, opts.signal, opts.pushStallMs);
    const manifests: Array<{ mediaType: string; size: number; digest: string; platform: ReturnType<typeof platformObject> }> = [];
    for (const e of entries) {
      const img = e.images.find((i) => {
        const p = parseImageRef(i.ref);
        return p.ok && `${p.ref.domain}/${p.ref.path}` === repo;
      });
      if (!img) throw new PushError(`platform node '${e.node}' (${e.platform}) pushed no image to ${repo}`, true);
      const head = await client.fetch(`${base}/manifests/${img.digest}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
      if (!head.ok) throw httpFailure(`the image of ${e.platform} (${img.digest}) in ${repo}`, head, '');
      const mediaType = (head.headers.get('content-type') ?? DOCKER_MANIFEST_V2).split(';')[0]!.trim();
      const declared = Number(head.headers.get('content-length') ?? img.size);
      const size = Number.isSafeInteger(declared) && declared > 0 ? declared : img.size;
      if (!Number.isSafeInteger(size) || size <= 0) throw new PushError(`the registry gave no valid size for ${repo}@${img.digest}`, false);
      manifests.push({ mediaType, size, digest: img.digest, platform: platformObject(img.platform || e.platform) });
    }
    const listType = manifests.every((m) => m.mediaType === OCI_MANIFEST) ? OCI_INDEX : DOCKER_MANIFEST_LIST;
    const body = JSON.stringify({ schemaVersion: 2, mediaType: listType, manifests });
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    const put = await client.fetch(`${base}/manifests/${tag}`, { method: 'PUT', headers: { 'content-type': listType }, body });
    const answer = await readBoundedText(put, 64 * 1024).then((r) => r.text, () => '');
    if (put.status !== 201 && put.status !== 200) throw httpFailure(`putting the index at ${ref}`, put, answer);
    const stored = put.headers.get('docker-content-digest');
    if (stored && stored !== digest) throw new PushError(`the registry stored the index of ${ref} as ${stored}, not ${digest}`, false);
    opts.log?.(`[kiln] index ${ref}: ${digest} (${manifests.map((m) => `${m.platform.os}/${m.platform.architecture}${m.platform.variant ? `/${m.platform.variant}` : ''}`).join(', ')})\n`);
    out.push({ ref, digest, platform: entries.map((e) => e.platform).join(','), size: Buffer.byteLength(body), media_type: listType });
  }
  return out;
}
