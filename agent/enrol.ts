/**
 * Agent enrolment and credential rotation, loaded only when the agent enrols (its token is
 * a `kiln_enrol_...` enrolment token and no credential is stored yet) or rotates.
 *
 * `enrol` trades the enrolment token once for the agent's own credential
 * (`POST /api/v1/agent-enrolment`) and stores it in `<state dir>/agent-credential` (mode 0600,
 * written to a temp file, fsynced, renamed, directory fsynced) before the agent uses it.
 * A coordinator that cannot be reached (or answers 5xx/429) is retried with backoff; a
 * refusal (401/403/409: unknown, expired, used up, revoked, name taken) is an E_CONFIG
 * error, so the agent exits with EX_CONFIG and systemd does not restart it in a loop.
 *
 * With several coordinators (issue 14) a request that gets no answer, or a 503 E_NOT_LEADER
 * problem from a standby, goes to the next one of the list (to the leader the problem names
 * when it is in the list); the backoff is taken once the whole list failed in a row.
 *
 * `rotateCredential` asks for a new credential with the current one
 * (`POST /api/v1/agent-credential`) and stores it the same way; the coordinator retires
 * the old one once the new one is first used.
 */
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { honouring429 } from './retry-after.js';
import { API_ROUTES, Backoff, KilnError, coerceError, coordinatorKey, indexOfCoordinator, sleep, writeFileDurable } from '../shared/core.js';

const CREDENTIAL_RE = /^kiln_agent_[A-Za-z0-9_-]{43}$/;
/** A credential answer is a few hundred bytes. */
const MAX_ANSWER_BYTES = 16 * 1024;

/** Writes the credential durably (0600): after this resolves it survives a crash. */
export function writeCredential(path: string, credential: string): Promise<void> {
  return writeFileDurable(path, `${credential}\n`, 0o600);
}

type Answer = { ok: true; credential: string } | { ok: false; status: number; detail: string; code?: string; leader?: string | null };

async function ask(url: string, token: string, body: unknown, fetchFn: typeof fetch): Promise<Answer> {
  const res = await fetchFn(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(30_000),
  });
  const text = (await res.text()).slice(0, MAX_ANSWER_BYTES);
  let parsed: { credential?: unknown; detail?: unknown; code?: unknown; leader?: unknown } = {};
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const detail = typeof parsed.detail === 'string' ? parsed.detail : text.trim() || res.statusText;
    if (parsed.code !== 'E_NOT_LEADER') return { ok: false, status: res.status, detail };
    return { ok: false, status: res.status, detail, code: 'E_NOT_LEADER', leader: typeof parsed.leader === 'string' ? parsed.leader : null };
  }
  if (typeof parsed.credential !== 'string' || !CREDENTIAL_RE.test(parsed.credential)) return { ok: false, status: 502, detail: 'the answer holds no agent credential' };
  return { ok: true, credential: parsed.credential };
}

/** Statuses retrying cannot change (the request or the token is refused). */
const isRefusal = (status: number) => status >= 400 && status < 500 && status !== 408 && status !== 429;

/**
 * Asks until answered or refused; transient failures are retried with backoff. `bases` is
 * the coordinator list (http(s)://host:port each); with several, a failure moves to the next
 * one (or to the leader an E_NOT_LEADER problem names, when it is in the list).
 */
async function askUntilAnswered(what: string, bases: string | readonly string[], path: string, token: string, body: unknown, logger: Logger, signal?: AbortSignal, plainFetch: typeof fetch = fetch): Promise<Answer> {
  // A 429 is waited out as the coordinator asks (Retry-After) before the backoff below.
  const fetchFn = honouring429(plainFetch);
  const backoff = new Backoff({ baseMs: 500, capMs: 30_000 });
  const list = typeof bases === 'string' ? [bases] : bases;
  const keys = list.map((b) => coordinatorKey(b) ?? b);
  let i = 0;
  let failuresInRow = 0;
  let hops = 0;
  for (;;) {
    let why: string;
    let leader: string | null | undefined;
    try {
      const a = await ask(`${list[i]}${path}`, token, body, fetchFn);
      if (a.ok || isRefusal(a.status)) return a;
      why = `HTTP ${a.status} ${a.detail}`;
      if (a.code === 'E_NOT_LEADER') leader = a.leader ?? null;
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      why = cause?.code ?? coerceError(err).message;
    }
    failuresInRow++;
    if (list.length > 1) {
      const from = list[i];
      const named = indexOfCoordinator(keys, leader);
      const hop = named >= 0 && named !== i && hops < list.length;
      if (hop) hops++;
      i = hop ? named : (i + 1) % list.length;
      if (hop || failuresInRow % list.length !== 0) {
        logger.warn({ reason: why, coordinator: from, next: list[i] }, `${what}: coordinator not answering; trying the next one`);
        continue;
      }
    }
    const delay = backoff.next();
    logger.warn({ reason: why, retry_in_ms: delay }, `${what}: coordinator not answering; retrying`);
    await sleep(delay, signal);
    if (signal?.aborted) throw new KilnError('E_CONNECTION', `${what} was stopped`);
  }
}

export interface EnrolOptions {
  /** http(s)://host:port of the coordinator, or the coordinator list in order */
  httpUrl: string | readonly string[];
  enrolToken: string;
  /** Where the enrolment token came from, for messages. */
  tokenSource: string;
  name: string;
  credentialFile: string;
  logger: Logger;
  signal?: AbortSignal;
  /** The fetch to use (one trusting the agent's CA file, when it has one). */
  fetch?: typeof fetch;
}

/** Trades the enrolment token for this agent's credential and stores it; resolves with the credential. */
export async function enrol(o: EnrolOptions): Promise<string> {
  // The credential must be storable before the token is traded (a one-use token cannot be traded twice).
  const dir = dirname(o.credentialFile);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const probe = join(dir, `.${basename(o.credentialFile)}.probe-${process.pid}`);
    await writeFile(probe, '', { mode: 0o600 });
    await unlink(probe);
  } catch (err) {
    throw new KilnError('E_CONFIG', `the agent credential cannot be stored in ${dir} (${coerceError(err).message}); fix the state dir (--state-dir, KILN_AGENT_STATE_DIR) before enrolling`, { cause: err });
  }
  o.logger.info({ agent: o.name, credential_file: o.credentialFile }, 'enrolling with the coordinator');
  const a = await askUntilAnswered('enrolment', o.httpUrl, API_ROUTES.agentEnrol.path(), o.enrolToken, { name: o.name }, o.logger, o.signal, o.fetch);
  if (!a.ok) {
    throw new KilnError(
      'E_CONFIG',
      `the coordinator refused the enrolment (HTTP ${a.status}): ${a.detail}. The enrolment token is from ${o.tokenSource}; ask an admin for a new one (kiln tokens create --agent --name ${o.name}) and put it there`,
    );
  }
  try {
    await writeCredential(o.credentialFile, a.credential);
  } catch (err) {
    throw new KilnError('E_CONFIG', `enrolled, but the credential cannot be stored in ${o.credentialFile} (${coerceError(err).message}); fix the work dir, ask an admin to revoke agent ${o.name} (kiln agents revoke ${o.name}) and enrol again`, { cause: err });
  }
  o.logger.info({ agent: o.name, credential_file: o.credentialFile }, 'enrolled: agent credential stored');
  return a.credential;
}

/** Gets a new credential with the current one and stores it; resolves with the new one. */
export async function rotateCredential(o: { httpUrl: string; credential: string; credentialFile: string; logger: Logger; signal?: AbortSignal; fetch?: typeof fetch }): Promise<string> {
  const a = await askUntilAnswered('credential rotation', o.httpUrl, API_ROUTES.agentCredential.path(), o.credential, undefined, o.logger, o.signal, o.fetch);
  if (!a.ok) throw new KilnError('E_CONFIG', `the coordinator refused the credential rotation (HTTP ${a.status}): ${a.detail}`);
  await writeCredential(o.credentialFile, a.credential);
  o.logger.info({ credential_file: o.credentialFile }, 'agent credential rotated');
  return a.credential;
}
