/**
 * The agent credential store (coordinator/access/agent-credentials.ts) on real files:
 * enrolment token rules (uses, expiry, revocation, name binding, a name enrolled once),
 * only hashes on disk, durability across a reopen, rotation (the old credential works
 * until the new one is used, then never), revocation, bounds, a corrupt file refused by
 * name, and audit records that never hold a secret.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentCredentialStore } from '../../coordinator/access/agent-credentials.js';
import type { AuditEvent } from '../../coordinator/access/agent-audit.js';

const HOUR = 3600_000;
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

describe('agent credential store', () => {
  let dir: string;
  let now: number;
  let events: AuditEvent[];
  const open = (o: { maxTokens?: number; maxCredentials?: number } = {}) => AgentCredentialStore.open(dir, { now: () => now, audit: { record: (e) => events.push(e) }, ...o });
  /** What a store opened afresh on the same dir says of `credential` (its own writes done before the next step). */
  const reopenedAgentOf = async (credential: string) => {
    const s = await open();
    const name = s.agentOf(credential);
    await s.idle();
    return name;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-agent-creds-'));
    now = Date.parse('2026-12-05T06:00:00Z');
    events = [];
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('trades a token for a credential within its uses and expiry, and keeps only hashes, durably', async () => {
    const store = await open();
    const { token, view } = await store.createToken({ name: null, expiresMs: HOUR, uses: 2, createdBy: 'api-token' });
    expect(token).toMatch(/^kiln_enrol_[A-Za-z0-9_-]{43}$/);
    expect(view).toMatchObject({ state: 'active', uses: 2, used: 0, name: null });
    const a = await store.enrol(token, 'a1');
    const b = await store.enrol(token, 'a2');
    expect(a.credential).toMatch(/^kiln_agent_[A-Za-z0-9_-]{43}$/);
    await expect(store.enrol(token, 'a3')).rejects.toMatchObject({ code: 'E_FORBIDDEN', message: expect.stringMatching(/already used \(2 of 2 uses\)/) });
    expect(store.listTokens()[0]!.state).toBe('used');

    const text = await readFile(store.path, 'utf8');
    for (const s of [token, a.credential, b.credential]) {
      expect(text).not.toContain(s);
      expect(text).toContain(sha(s));
    }
    expect((await stat(store.path)).mode & 0o777).toBe(0o600);
    // Durable: a new store on the same dir knows both agents.
    const again = await open();
    expect(again.agentOf(a.credential)).toBe('a1');
    expect(again.agentOf(b.credential)).toBe('a2');
    await again.idle();
    await expect(again.enrol(token, 'a3')).rejects.toMatchObject({ code: 'E_FORBIDDEN' });
    expect(JSON.stringify(events)).not.toMatch(/kiln_(enrol|agent)_/);
    expect(events.map((e) => [e.action, e.outcome])).toEqual([
      ['token.create', 'ok'],
      ['agent.enrol', 'ok'],
      ['agent.enrol', 'ok'],
      ['agent.enrol', 'refused'],
      ['agent.enrol', 'refused'],
    ]);
  });

  it('refuses expired, revoked and unknown tokens, a bound name mismatch, and a name already enrolled', async () => {
    const store = await open();
    const brief = await store.createToken({ name: null, expiresMs: 1000, uses: 5, createdBy: 'x' });
    now += 1000;
    await expect(store.enrol(brief.token, 'late')).rejects.toMatchObject({ code: 'E_FORBIDDEN', message: expect.stringMatching(/expired at 2026-12-05T06:00:01.000Z/) });
    const revoked = await store.createToken({ name: null, expiresMs: HOUR, uses: 5, createdBy: 'x' });
    await store.revokeToken(revoked.view.id, 'x');
    await expect(store.enrol(revoked.token, 'r')).rejects.toMatchObject({ code: 'E_FORBIDDEN', message: expect.stringMatching(/was revoked/) });
    await expect(store.enrol(`kiln_enrol_${'B'.repeat(43)}`, 'u')).rejects.toMatchObject({ code: 'E_UNAUTHORIZED' });
    await expect(store.enrol('some-legacy-token', 'u')).rejects.toMatchObject({ code: 'E_UNAUTHORIZED' });
    const bound = await store.createToken({ name: 'gpu-1', expiresMs: HOUR, uses: 5, createdBy: 'x' });
    await expect(store.enrol(bound.token, 'gpu-2')).rejects.toMatchObject({ code: 'E_FORBIDDEN', message: expect.stringContaining("is for agent 'gpu-1', not 'gpu-2'") });
    await store.enrol(bound.token, 'gpu-1');
    await expect(store.enrol(bound.token, 'gpu-1')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    // After a revocation the name may enrol again.
    await store.revokeAgent('gpu-1', 'x');
    await expect(store.enrol(bound.token, 'gpu-1')).resolves.toMatchObject({ name: 'gpu-1' });
    expect(store.listTokens().find((t) => t.id === bound.view.id)!.used).toBe(2);
  });

  it('rotation keeps the old credential until the new one is used, then refuses it; revocation refuses both', async () => {
    const store = await open();
    const t = await store.createToken({ name: null, expiresMs: HOUR, uses: 1, createdBy: 'x' });
    const { credential: old } = await store.enrol(t.token, 'rot');
    await store.requestRotation('rot', 'x');
    expect(store.verify(old)).toMatchObject({ ok: true, rotateRequested: true });
    const first = await store.rotate(old);
    // Asked again before the new one was used: that one is replaced, the old one still works.
    const second = await store.rotate(old);
    expect(store.verify(first.credential)).toMatchObject({ ok: false, reason: 'unknown agent credential' });
    expect(store.verify(old)).toMatchObject({ ok: true, name: 'rot', rotateRequested: false });
    expect(store.verify(second.credential)).toMatchObject({ ok: true, name: 'rot' });
    expect(store.verify(old)).toMatchObject({ ok: false, reason: expect.stringMatching(/replaced by a newer one/) });
    await store.idle();
    expect(await reopenedAgentOf(old)).toBeNull();
    expect(await reopenedAgentOf(second.credential)).toBe('rot');

    expect(await store.revokeAgent('rot', 'x')).toBe(1);
    expect(store.verify(second.credential)).toMatchObject({ ok: false, reason: expect.stringMatching(/was revoked/) });
    await expect(store.rotate(second.credential)).rejects.toMatchObject({ code: 'E_UNAUTHORIZED' });
    await expect(store.revokeAgent('rot', 'x')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    expect(await reopenedAgentOf(second.credential)).toBeNull();
  });

  it('is bounded: unusable tokens make room, usable ones do not', async () => {
    const store = await open({ maxTokens: 2 });
    const a = await store.createToken({ name: null, expiresMs: 1000, uses: 1, createdBy: 'x' });
    await store.createToken({ name: null, expiresMs: HOUR, uses: 1, createdBy: 'x' });
    await expect(store.createToken({ name: null, expiresMs: HOUR, uses: 1, createdBy: 'x' })).rejects.toMatchObject({ code: 'E_CONFLICT' });
    now += 1000; // a expires
    await store.createToken({ name: null, expiresMs: HOUR, uses: 1, createdBy: 'x' });
    expect(store.listTokens().map((t) => t.id)).not.toContain(a.view.id);
    expect(store.listTokens()).toHaveLength(2);
  });

  it('refuses a corrupt or foreign file by name and leaves it as it is', async () => {
    await mkdir(join(dir, 'access'));
    const path = join(dir, 'access', 'agents.json');
    await writeFile(path, '{"kind":"kiln-agent-credentials","version":1,"tokens":[],"credentials":[{"id":"x"}]}');
    await expect(open()).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringContaining(`agent credentials file ${path} is corrupt (credentials.0.`) });
    await writeFile(path, 'not json');
    await expect(open()).rejects.toThrow(`agent credentials file ${path} is corrupt`);
    expect(await readFile(path, 'utf8')).toBe('not json');
  });
});
