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
 *   lock                  pid of the coordinator using the directory
 */
import { mkdir, open, readFile, stat, unlink, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError, errnoCode, randomToken } from '../../shared/index.js';
import { fsyncDir, writeFileDurable } from './durable-file.js';

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

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/**
 * Takes `<dir>/lock` (O_EXCL create). A lock whose pid is dead is stale and replaced; a
 * live one is an error naming the pid. Returns the release function.
 */
export async function lockDataDir(dir: string): Promise<() => Promise<void>> {
  const path = join(dir, 'lock');
  for (let tries = 0; tries < 2; tries++) {
    try {
      const fh = await open(path, 'wx', 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.sync();
      await fh.close();
      await fsyncDir(dir);
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await unlink(path).catch(() => {});
      };
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    const text = await readFile(path, 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
      throw new KilnError('E_LOCKED', `data dir ${dir} is locked by pid ${pid} (another coordinator is using it; lock file ${path})`);
    }
    await unlink(path).catch(() => {});
  }
  throw new KilnError('E_LOCKED', `could not take the lock ${path}`);
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
    throw new KilnError('E_CONFIG', `${what} token file ${path} cannot be read (${errnoCode(err) ?? (err as Error).message})`, { cause: err });
  }
  const token = text.trim();
  if (token.length < 16) throw new KilnError('E_CONFIG', `${what} token file ${path} holds no usable token (need at least 16 characters)`);
  return token;
}

/**
 * Loads the agent and API tokens from the configured files. When a file is not
 * configured, `<dataDir>/tokens/<kind>` is used, and created with a random token
 * (mode 0600) if it does not exist yet.
 */
export async function loadTokens(dataDir: string, configured: Partial<TokenPaths>): Promise<LoadedTokens> {
  const created: string[] = [];
  const dir = join(dataDir, 'tokens');
  async function resolve(kind: 'agent' | 'api', file: string | undefined): Promise<[string, string]> {
    if (file) return [file, await readToken(file, kind)];
    const path = join(dir, kind);
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
