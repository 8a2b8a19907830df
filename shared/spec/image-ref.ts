/**
 * Image references (`127.0.0.1:5000/team/app:1.2`), parsed after the grammar of the
 * distribution project's `reference` package (what the Docker Engine and registries use):
 *
 *   reference := name [ ":" tag ] [ "@" digest ]
 *   name      := [ domain "/" ] path-component ( "/" path-component )*
 *   domain    := host [ ":" port ]      host: DNS labels joined by ".", or an IPv6 in []
 *   path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *   tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *
 * The first component is a domain only when it has a `.` or a `:`, or is `localhost`
 * (as Docker decides); otherwise the image is on Docker Hub (`docker.io`, and a one-part
 * name is under `library/`). A name is at most 255 characters. Push references must
 * name a tag, not a digest (a registry stores a pushed manifest under a tag); a missing
 * tag means `latest`, as `docker push` does.
 */

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_LABEL = /^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])$/;
const PORT = /^[0-9]{1,5}$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$/;
export const MAX_IMAGE_NAME = 255;
/** Longest reference accepted at all (name, tag and digest). */
export const MAX_IMAGE_REF = 512;
export const DOCKER_HUB = 'docker.io';

export interface ImageRef {
  /** Registry host (with port), `docker.io` when the reference names none. */
  domain: string;
  /** Repository path inside the registry (`team/app`, `library/busybox`). */
  path: string;
  tag: string | null;
  digest: string | null;
}

export type ImageRefResult = { ok: true; ref: ImageRef } | { ok: false; problem: string };

function domainProblem(domain: string): string | null {
  let host = domain;
  let port: string | null = null;
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    if (end < 0) return `unclosed '[' in registry host '${domain}'`;
    const inner = host.slice(1, end);
    if (!/^[0-9A-Fa-f:.]+$/.test(inner) || !inner.includes(':')) return `invalid IPv6 address in registry host '${domain}'`;
    const rest = host.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) return `invalid registry host '${domain}'`;
    port = rest === '' ? null : rest.slice(1);
    host = '';
  } else {
    const colon = host.lastIndexOf(':');
    if (colon >= 0) {
      port = host.slice(colon + 1);
      host = host.slice(0, colon);
    }
    if (host === '') return `empty registry host in '${domain}'`;
    for (const label of host.split('.')) if (!DOMAIN_LABEL.test(label)) return `invalid registry host '${domain}'`;
  }
  if (port !== null && (!PORT.test(port) || Number(port) < 1 || Number(port) > 65535)) return `invalid port in registry host '${domain}'`;
  return null;
}

/** Parses a reference, or says what is wrong with it. */
export function parseImageRef(input: string): ImageRefResult {
  const fail = (problem: string): ImageRefResult => ({ ok: false, problem });
  if (input.length === 0) return fail('empty image reference');
  if (input.length > MAX_IMAGE_REF) return fail(`image reference is longer than ${MAX_IMAGE_REF} characters`);
  if (/\s/.test(input)) return fail(`image reference '${input.slice(0, 80)}' contains whitespace`);
  let rest = input;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) return fail(`invalid digest '${digest.slice(0, 80)}' in image reference (expected e.g. sha256:<64 hex digits>)`);
  }
  let tag: string | null = null;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) return fail(`invalid tag '${tag.slice(0, 80)}' (use 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-')`);
  }
  if (rest.length === 0) return fail(`image reference '${input.slice(0, 80)}' has no repository name`);
  if (rest.length > MAX_IMAGE_NAME) return fail(`repository name is longer than ${MAX_IMAGE_NAME} characters`);
  const parts = rest.split('/');
  let domain = DOCKER_HUB;
  const first = parts[0]!;
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    const dp = domainProblem(first);
    if (dp) return fail(dp);
    domain = first;
    parts.shift();
  }
  for (const c of parts) {
    if (c === '') return fail(`empty path component in '${rest.slice(0, 80)}'`);
    if (!PATH_COMPONENT.test(c)) {
      const hint = /[A-Z]/.test(c) ? ' (repository names must be lower case)' : '';
      return fail(`invalid repository path component '${c.slice(0, 80)}'${hint}: use lower-case letters and digits, separated by '.', '_', '__' or '-'`);
    }
  }
  const path = domain === DOCKER_HUB && parts.length === 1 ? `library/${parts[0]}` : parts.join('/');
  return { ok: true, ref: { domain, path, tag, digest } };
}

/**
 * A reference kiln pushes to: tag given or `latest`, no digest. Returns the normalised
 * `domain/path:tag` or a problem.
 */
export function pushRefProblem(input: string): { ref: string; parsed: ImageRef } | { problem: string } {
  const r = parseImageRef(input);
  if (!r.ok) return { problem: r.problem };
  if (r.ref.digest !== null) return { problem: `'${input.slice(0, 80)}' names a digest; an image is pushed to a tag (e.g. ${formatImageRef({ ...r.ref, digest: null, tag: r.ref.tag ?? 'latest' })})` };
  const parsed = { ...r.ref, tag: r.ref.tag ?? 'latest' };
  return { ref: formatImageRef(parsed), parsed };
}

/** `domain/path[:tag][@digest]`. */
export function formatImageRef(r: ImageRef): string {
  return `${r.domain}/${r.path}${r.tag !== null ? `:${r.tag}` : ''}${r.digest !== null ? `@${r.digest}` : ''}`;
}

/** `domain/path`: the repository, which every entry of an index must share. */
export function repositoryOf(r: ImageRef): string {
  return `${r.domain}/${r.path}`;
}
