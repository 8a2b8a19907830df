/**
 * The coordinator's data directory: creation rules, the lock that keeps a second
 * coordinator out, and the zero-config tokens.
 *
 * Layout:
 *   state.json            snapshot: active builds + index of finished ones (lowdb, durable writes)
 *   journal.jsonl         changes since the snapshot, one line per changed build/node
 *   builds/<id>.json      finished builds
 *   logs/<build>/<node>/attempt-<n>.log   per-attempt logs
 *   cas/sha256/<xx>/<hex> content-addressed blobs (build contexts)
 *   tokens/agent, tokens/api   generated tokens (mode 0600) when none are configured
 *   access/keys.json      API keys: sha256 hashes, scopes, expiry (coordinator/access/api-keys.ts)
 *   access/agents.json, secrets.json, reuse/<hex>.json   agent credentials, sealed secrets, reuse records
 *                         (these, the keys and the generated tokens are documents, state/documents.ts:
 *                         rows of kiln_document instead with a PostgreSQL state; tokens/ then a local copy)
 *   audit.log, audit.log.1   the audit log, JSON lines (coordinator/access/audit-log.ts)
 *   lock                  who holds the directory: JSON {pid, boot_id, start_time, hostname,
 *                         started_at}; on Linux an abstract socket held by the same process is
 *                         the actual lock (shared/process-lock.ts)
 */
import { mkdir, readFile, stat, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { coerceError, KilnError, acquireProcessLock, errnoCode, randomToken, type StaleLock } from '../../shared/index.js';
import { writeFileDurable } from '../../shared/index.js';
import type { DocumentStore } from './documents.js';

export interface PreparedDataDir {
  dir: string;
  /** true when this start created the directory (so a new state file is expected). */
  created: boolean;
}

/** Creates the data dir when it does not exist; an existing dir is used as is. */
export async function prepareDataDir(dir: string): Promise<PreparedDataDir> {
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw new KilnError('E_CONFIG', `data dir ${dir} exists but is not a directory`);
    return { dir, created: false };
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return { dir, created: true };
}

/**
 * Takes `<dir>/lock` for this coordinator (shared/process-lock.ts: an abstract socket plus
 * an identity record that pid reuse and zombies cannot fool). A live holder is an
 * `E_LOCKED` error naming its pid, host and start; a stale lock is taken over and passed
 * to `onTakeover` for the log. Returns the release function.
 */
export async function lockDataDir(dir: string, onTakeover?: (stale: StaleLock) => void): Promise<() => Promise<void>> {
  const lock = await acquireProcessLock(join(dir, 'lock'), {
    name: 'kiln-coordinator',
    what: `data dir ${dir}`,
    holderHint: 'another coordinator is using it',
  });
  if (lock.tookOver) onTakeover?.(lock.tookOver);
  return lock.release;
}

export interface TokenPaths {
  agentTokenFile: string;
  apiTokenFile: string;
}

export interface LoadedTokens extends TokenPaths {
  agentToken: string;
  apiToken: string;
  /** Files this start created (zero-config), to print for the user. */
  created: string[];
}

async function readToken(path: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new KilnError('E_CONFIG', `${what} token file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
  }
  const token = text.trim();
  if (token.length < 16) throw new KilnError('E_CONFIG', `${what} token file ${path} holds no usable token (need at least 16 characters)`);
  return token;
}

/**
 * Loads the agent and API tokens from the configured files. When a file is not
 * configured, `<dataDir>/tokens/<kind>` is used, and created with a random token
 * (mode 0600) if it does not exist yet.
 *
 * With `shared` (the documents of a PostgreSQL state), a token that is not configured is the
 * document `tokens/<kind>` instead, made by the first coordinator that starts (every
 * coordinator of the state then accepts the same one); `<dataDir>/tokens/<kind>` is kept as a
 * copy of it for the local CLI and the start banner.
 */
export async function loadTokens(dataDir: string, configured: Partial<TokenPaths>, shared?: DocumentStore): Promise<LoadedTokens> {
  const created: string[] = [];
  const dir = join(dataDir, 'tokens');
  async function resolve(kind: 'agent' | 'api', file: string | undefined): Promise<[string, string]> {
    if (file) return [file, await readToken(file, kind)];
    const path = join(dir, kind);
    if (shared) {
      const name = `tokens/${kind}`;
      const text = await shared.create(name, `${randomToken()}\n`);
      const token = text.trim();
      if (token.length < 16) throw new KilnError('E_CONFIG', `${kind} token ${shared.where(name)} holds no usable token (need at least 16 characters)`);
      const local = await readFile(path, 'utf8').catch(() => null);
      if (local?.trim() !== token) {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await writeFileDurable(path, `${token}\n`, 0o600);
        await chmod(path, 0o600);
        created.push(path);
      }
      return [path, token];
    }
    try {
      return [path, await readToken(path, kind)];
    } catch (err) {
      if (errnoCode((err as KilnError).cause) !== 'ENOENT') throw err;
    }
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFileDurable(path, `${randomToken()}\n`, 0o600);
    await chmod(path, 0o600);
    created.push(path);
    return [path, await readToken(path, kind)];
  }
  const [agentTokenFile, agentToken] = await resolve('agent', configured.agentTokenFile);
  const [apiTokenFile, apiToken] = await resolve('api', configured.apiTokenFile);
  if (agentToken === apiToken) throw new KilnError('E_CONFIG', `the agent token (${agentTokenFile}) and the API token (${apiTokenFile}) must differ`);
  return { agentTokenFile, agentToken, apiTokenFile, apiToken, created };
}
