/**
 * API keys, the audit log and rate limits against a real coordinator (the kiln binary,
 * port 0, a real data dir) driven with the real CLI:
 *
 * - `kiln keys create` prints just the key; `keys list` (table and JSON Lines) never
 *   shows it; `keys revoke` by name cuts the key off (401); a key with a short expiry is
 *   refused once it expires (polled); keys survive a restart; the data dir holds no key
 *   (hashed at rest: every file grepped); a corrupt key file refuses the start, naming it;
 * - the audit log (file and `kiln audit`) records a submit and a cancel with the key that
 *   did them and the build, and a refused call (403 and 401), and holds no secret;
 * - rate limits: a key past its bucket gets 429 problem+json with Retry-After, and the
 *   CLI waits it out and succeeds.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_ROUTES, apiPath } from '../../shared/index.js';
import { kiln, restartCoordinator, spawnKiln, startCoordinator, tempDir, waitFor, StopWaiting, type CoordinatorHandle } from '../helpers/cluster.js';

const SPEC = { name: 'audited', nodes: { only: { dockerfile_inline: 'FROM kiln/busybox:1\nRUN true\n', labels: { pool: 'nowhere' } } } };

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

async function as(c: CoordinatorHandle, key: string, path: string, init: RequestInit = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${c.url}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...((init.headers as Record<string, string>) ?? {}) } });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    /* text */
  }
  return { status: res.status, body, headers: res.headers };
}

describe('API keys and the audit log', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let c: CoordinatorHandle;
  const secrets: string[] = [];

  beforeAll(async () => {
    dir = await tempDir('keys');
    c = await startCoordinator({ dataDir: join(dir.path, 'data') });
  });
  afterAll(async () => {
    await c?.proc.stop();
    await dir?.cleanup();
  });

  const cli = (args: string[]) => kiln(args, c.cliEnv);

  it('creates keys that print once, lists them without secrets, and revokes them', async () => {
    const created = await cli(['keys', 'create', '--scope', 'read,submit', '--name', 'ci']);
    expect(created.code, created.stderr).toBe(0);
    const key = created.stdout.trim();
    expect(key).toMatch(/^kiln_key_[A-Za-z0-9_-]{43}$/);
    expect(created.stdout).toBe(`${key}\n`);
    secrets.push(key);

    const list = await cli(['keys', 'list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/\bci\s+read,submit\s+active\b/);
    expect(list.stdout).toMatch(/\bapi-token\s+api-token\s+admin\b/);
    const json = await cli(['keys', 'list', '--json']);
    const rows = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { name: string; scopes: string[]; state: string; legacy: boolean });
    expect(rows.find((r) => r.name === 'ci')).toMatchObject({ scopes: ['read', 'submit'], state: 'active', legacy: false });
    expect(`${list.stdout}${json.stdout}`).not.toContain(key.slice(9));

    // The key works for what its scopes allow.
    expect((await as(c, key, apiPath.builds())).status).toBe(200);

    // A second active key cannot take the name; a bad scope is a usage error naming it.
    const dup = await cli(['keys', 'create', '--scope', 'read', '--name', 'ci']);
    expect(dup.code).not.toBe(0);
    expect(dup.stderr).toMatch(/already named 'ci'/);
    const bad = await cli(['keys', 'create', '--scope', 'read,delete']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown scope 'delete'/);

    // Keys are durable: a restart keeps them.
    c = await restartCoordinator(c);
    expect((await as(c, key, apiPath.builds())).status).toBe(200);

    const revoked = await cli(['keys', 'revoke', 'ci']);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toMatch(/revoked key ci/);
    const after = await as(c, key, apiPath.builds());
    expect(after.status).toBe(401);
    expect(after.body.code).toBe('E_UNAUTHORIZED');
    const listed = await cli(['keys', 'list', '--json']);
    expect(listed.stdout).toMatch(/"name":"ci"[^\n]*"state":"revoked"/);
  });

  it('refuses a key once it expires', async () => {
    const created = await cli(['keys', 'create', '--scope', 'read', '--name', 'short', '--expires', '2s']);
    expect(created.code, created.stderr).toBe(0);
    const key = created.stdout.trim();
    secrets.push(key);
    expect((await as(c, key, apiPath.builds())).status).toBe(200);
    await waitFor('the key to expire', async () => (await as(c, key, apiPath.builds())).status === 401, 30_000, 200);
    const listed = await cli(['keys', 'list', '--json']);
    expect(listed.stdout).toMatch(/"name":"short"[^\n]*"state":"expired"/);
    const badExpiry = await cli(['keys', 'create', '--scope', 'read', '--expires', 'soon']);
    expect(badExpiry.code).toBe(2);
    expect(badExpiry.stderr).toMatch(/--expires: 'soon'/);
  });

  it('records who submitted and cancelled a build, and refused calls, with no secret in the log', async () => {
    const submitter = (await cli(['keys', 'create', '--scope', 'submit', '--name', 'builder'])).stdout.trim();
    const canceller = (await cli(['keys', 'create', '--scope', 'cancel', '--name', 'operator'])).stdout.trim();
    secrets.push(submitter, canceller);
    const sub = await as(c, submitter, apiPath.builds(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(SPEC) });
    expect(sub.status).toBe(201);
    const id = sub.body.id as string;
    // the build says who submitted it
    expect((await c.api<{ submitted_by: string }>(apiPath.build(id))).body.submitted_by).toMatch(/^key:k-[^/]+\/builder$/);
    // submit does not imply cancel: refused, naming the scope
    const denied = await as(c, submitter, apiPath.buildCancel(id), { method: 'POST' });
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({ code: 'E_SCOPE', detail: "this route needs the 'cancel' scope; the key 'builder' has submit" });
    expect(denied.headers.get('content-type')).toBe('application/problem+json');
    expect((await as(c, canceller, apiPath.buildCancel(id), { method: 'POST' })).status).toBe(202);
    expect((await as(c, 'kiln_key_not-a-key-at-all', apiPath.builds())).status).toBe(401);
    // a mutation that fails is recorded as refused, with the status and code
    expect((await as(c, canceller, apiPath.buildCancel(id), { method: 'POST' })).status).toBe(409);

    const audit = await cli(['audit', '--json', '--limit', '200']);
    expect(audit.code, audit.stderr).toBe(0);
    const entries = audit.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    const times = entries.map((e) => e.time!);
    expect([...times].sort().reverse(), 'newest first').toEqual(times);
    expect(entries).toContainEqual(expect.objectContaining({ action: 'build.submit', target: id, outcome: 'ok', actor: expect.stringMatching(/^key:k-[^/]+\/builder$/), remote: '127.0.0.1' }));
    expect(entries).toContainEqual(expect.objectContaining({ action: 'build.cancel', target: id, outcome: 'ok', actor: expect.stringMatching(/\/operator$/) }));
    expect(entries).toContainEqual(
      expect.objectContaining({ action: `POST ${API_ROUTES.buildCancel.template}`, target: id, outcome: 'refused', actor: expect.stringMatching(/\/builder$/), detail: expect.stringMatching(/^403 E_SCOPE/) }),
    );
    expect(entries).toContainEqual(expect.objectContaining({ action: `GET ${API_ROUTES.builds.template}`, outcome: 'refused', actor: 'anonymous', detail: expect.stringMatching(/^401/) }));
    expect(entries).toContainEqual(expect.objectContaining({ action: 'key.create', actor: 'key:api-token', outcome: 'ok' }));
    expect(entries).toContainEqual(expect.objectContaining({ action: 'build.cancel', target: id, outcome: 'refused', detail: expect.stringMatching(/^409 E_CONFLICT: /) }));
    // reads are not recorded
    expect(entries.filter((e) => e.action!.startsWith('GET ') && e.outcome === 'ok')).toEqual([]);

    // filters: by actor (a key name) and by action prefix
    const byActor = await cli(['audit', '--json', '--actor', 'operator']);
    const actorRows = byActor.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(actorRows.length).toBeGreaterThan(0);
    expect(actorRows.every((e) => e.actor!.endsWith('/operator'))).toBe(true);
    const byAction = await cli(['audit', '--json', '--action', 'build.']);
    expect(byAction.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { action: string }).action).sort()).toEqual(['build.cancel', 'build.cancel', 'build.submit']);
    const table = await cli(['audit', '--limit', '5']);
    expect(table.stdout).toMatch(/^TIME\s+ACTOR\s+ACTION/);

    // only admins read it
    const notAdmin = await as(c, canceller, apiPath.audit());
    expect(notAdmin.status).toBe(403);
    expect(notAdmin.body.detail).toMatch(/needs the 'admin' scope/);

    // the audit file is JSON lines with the same entries
    const lines = (await readFile(join(c.dataDir, 'audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(lines.some((e) => e.action === 'build.submit' && e.target === id)).toBe(true);
  });

  it('keeps no key, and no legacy token, in the audit log or anywhere in the data dir but the token file', async () => {
    expect(secrets.length).toBeGreaterThanOrEqual(4);
    const files = await filesUnder(c.dataDir);
    expect(files.some((f) => f.endsWith(join('access', 'keys.json')))).toBe(true);
    for (const f of files) {
      const text = await readFile(f, 'latin1');
      for (const s of secrets) expect(text.includes(s) || text.includes(s.slice(9)), `${f} holds a key`).toBe(false);
      if (!f.endsWith(join('tokens', 'api'))) expect(text.includes(c.apiToken), `${f} holds the API token`).toBe(false);
    }
  });

  it('refuses to start on a corrupt key file, naming it', async () => {
    await c.proc.stop();
    const file = join(c.dataDir, 'access', 'keys.json');
    const good = await readFile(file, 'utf8');
    await writeFile(file, good.slice(0, good.length / 2));
    const p = spawnKiln(['coordinator', '--data-dir', c.dataDir, '--listen', '127.0.0.1:0']);
    const code = await p.exited;
    expect(code).not.toBe(0);
    expect(p.stderr).toContain(file);
    expect(p.stderr).toMatch(/corrupt/);
    await writeFile(file, good);
    c = await restartCoordinator(c);
  });
});

describe('rate limits', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let c: CoordinatorHandle;

  beforeAll(async () => {
    dir = await tempDir('ratelimit');
    c = await startCoordinator({ dataDir: join(dir.path, 'data'), config: { rate_limit: { per_key: '0.2/s burst 1', per_address: 'off' } } });
  });
  afterAll(async () => {
    await c?.proc.stop();
    await dir?.cleanup();
  });

  it('answers 429 problem+json with Retry-After past the bucket, records it, and the CLI waits and succeeds', async () => {
    let limited: Awaited<ReturnType<typeof as>> | null = null;
    for (let i = 0; i < 10 && !limited; i++) {
      const r = await as(c, c.apiToken, apiPath.builds());
      if (r.status === 429) limited = r;
      else expect(r.status).toBe(200);
    }
    expect(limited, 'a 429 within 10 calls of a 0.2/s burst 1 bucket').not.toBeNull();
    expect(limited!.headers.get('content-type')).toBe('application/problem+json');
    expect(Number(limited!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(limited!.body).toMatchObject({ status: 429, code: 'E_RATE_LIMITED' });
    expect(String(limited!.body.detail)).toMatch(/key 'api-token' \(rate_limit.per_key 0.200\/s, burst 1\)/);

    // The bucket refills one call per 5 s: the CLI's first call gets a 429, waits Retry-After and succeeds.
    const r = await kiln(['builds', '--json'], c.cliEnv);
    expect(r.code, r.stderr).toBe(0);
    // Refusals are recorded at a bounded rate per address and action (audit-throttle.ts): the
    // first 429 of the window is there, the others from this address are counted, not listed.
    await waitFor('the 429 in the audit log', async () => {
      if (!c.proc.running) throw new StopWaiting('coordinator exited');
      const text = await readFile(join(c.dataDir, 'audit.log'), 'utf8');
      return text.split('\n').filter((l) => l.includes('"detail":"429 E_RATE_LIMITED')).length >= 1;
    }, 10_000);
  });
});
