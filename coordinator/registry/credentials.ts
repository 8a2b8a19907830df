/**
 * Registry credentials: they live with the coordinator and go only to the agent running
 * a node that pushes to (or assembles an index in) that registry, or whose Dockerfile pulls
 * from it (FROM, `COPY --from=`, `RUN --mount=from=`, with the node's build args; for a
 * Dockerfile inside the context, as read by registry/context-dockerfiles.ts), in that
 * node's `assign` frame (`registry_auth`), added as the frame is sent
 * (coordinator/agents/agent-session.ts).
 * They are never part of the engine's records, so they reach no state file, journal,
 * provenance record, API answer, log line or error report.
 *
 * The credentials file (setting `registries.credentials_file`) maps a registry host (as
 * it appears in image refs, with its port) to a username and a password file, or to a
 * token file (a bearer token sent as is), optionally with a username:
 *
 *   127.0.0.1:5001: { username: kiln, password_file: /etc/kiln/registry-password }
 *   ghcr.io: { token_file: /etc/kiln/ghcr-token }
 *
 * The secret files are read when the coordinator starts (trailing newlines trimmed).
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { configError, errnoCode, coerceError, parseImageRef, pullHosts, readConfigFile, type AssignPayload } from '../../shared/index.js';

export const MAX_REGISTRIES = 256;
/** An assignment carries at most this many credentials (the protocol's bound). */
export const MAX_AUTH_PER_ASSIGN = 16;

export type RegistryAuthPayload = NonNullable<AssignPayload['registry_auth']>[number];

/** The longest password and token an assign frame carries (shared/protocol/messages.ts): longer ones are refused at start. */
export const MAX_PASSWORD_CHARS = 4096;
export const MAX_TOKEN_CHARS = 16_384;

const Entry = z.strictObject({
  username: z.string().min(1).max(256).optional(),
  password_file: z.string().min(1).max(4096).optional(),
  token_file: z.string().min(1).max(4096).optional(),
});
const FileSchema = z.record(z.string().min(1).max(300), Entry);

/** Host -> credentials; `forAssign` picks those an assignment needs. */
export class RegistryCredentials {
  constructor(private readonly byHost: ReadonlyMap<string, RegistryAuthPayload>) {}

  get size(): number {
    return this.byHost.size;
  }

  /**
   * The credentials of every registry the assignment pushes to (its refs, for an index node
   * its platform images, and its layer-cache ref) or pulls from (the images `dockerfile`,
   * the node's Dockerfile when known, pulls).
   */
  forAssign(p: AssignPayload, dockerfile: string | null = p.dockerfile_inline): RegistryAuthPayload[] {
    if (this.byHost.size === 0) return [];
    const hosts = new Set<string>();
    const add = (ref: string) => {
      const r = parseImageRef(ref);
      if (r.ok) hosts.add(r.ref.domain.toLowerCase()); // host names are case-insensitive
    };
    for (const ref of p.images ?? []) add(ref);
    for (const e of p.index ?? []) for (const i of e.images) add(i.ref);
    if (p.cache) add(p.cache.ref);
    if (dockerfile && !p.index) for (const h of pullHosts(dockerfile, p.build_args, p.platform)) hosts.add(h.toLowerCase());
    const out: RegistryAuthPayload[] = [];
    for (const h of hosts) {
      const c = this.byHost.get(h);
      if (c && out.length < MAX_AUTH_PER_ASSIGN) out.push(c);
    }
    return out;
  }
}

export const NO_CREDENTIALS = new RegistryCredentials(new Map());

/** Reads and checks the credentials file and the secret files it names (paths relative to it). */
export function loadRegistryCredentials(path: string, readFile: (p: string) => string = (p) => readFileSync(p, 'utf8')): RegistryCredentials {
  const key = 'registries.credentials_file';
  const parsed = readConfigFile(path, FileSchema, readFile);
  const hosts = Object.entries(parsed);
  if (hosts.length > MAX_REGISTRIES) throw configError(key, `${path} names ${hosts.length} registries (at most ${MAX_REGISTRIES})`);
  const secret = (host: string, field: string, file: string, max: number): string => {
    const full = resolve(dirname(path), file);
    let text: string;
    try {
      text = readFile(full);
    } catch (err) {
      throw configError(key, `${path}: ${host}.${field}: ${full} cannot be read (${errnoCode(err) ?? coerceError(err).message})`);
    }
    const value = text.replace(/[\r\n]+$/, '');
    if (!value) throw configError(key, `${path}: ${host}.${field}: ${full} is empty`);
    if (/[\r\n]/.test(value)) throw configError(key, `${path}: ${host}.${field}: ${full} holds more than one line`);
    if (value.length > max) throw configError(key, `${path}: ${host}.${field}: ${full} holds ${value.length} characters (at most ${max})`);
    return value;
  };
  const byHost = new Map<string, RegistryAuthPayload>();
  for (const [host, e] of hosts) {
    const r = parseImageRef(`${host}/x`);
    if (!r.ok || r.ref.domain !== host) throw configError(key, `${path}: '${host.slice(0, 80)}' is not a registry host (host[:port], as in image refs)`);
    if ((e.password_file === undefined) === (e.token_file === undefined)) throw configError(key, `${path}: ${host}: give exactly one of password_file (with username) or token_file`);
    if (e.password_file !== undefined && e.username === undefined) throw configError(key, `${path}: ${host}: password_file needs a username`);
    const auth: RegistryAuthPayload = { host };
    if (e.username !== undefined) auth.username = e.username;
    if (e.password_file !== undefined) auth.password = secret(host, 'password_file', e.password_file, MAX_PASSWORD_CHARS);
    if (e.token_file !== undefined) auth.token = secret(host, 'token_file', e.token_file, MAX_TOKEN_CHARS);
    if (byHost.has(host.toLowerCase())) throw configError(key, `${path}: '${host}' is named twice (host names are case-insensitive)`);
    byHost.set(host.toLowerCase(), auth);
  }
  return new RegistryCredentials(byHost);
}
