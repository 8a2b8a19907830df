/**
 * The agents' WebSocket endpoint with per-agent credentials (agent-hub.ts), on a real
 * HTTP server and real sockets: a credential connects; its hello must name its agent
 * (else close 4014); a revoked or unknown credential is refused at the upgrade with 401
 * naming why; `revoke` closes the agent's connection with 4013 and has the engine cut it
 * off; `askRotate` closes with 4015. Refusals are audited, never with the secret.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { AgentHub } from '../../coordinator/agents/agent-hub.js';
import { AgentCredentialStore } from '../../coordinator/access/agent-credentials.js';
import type { AuditEvent } from '../../coordinator/access/agent-audit.js';
import { TokenCheck } from '../../coordinator/http/auth.js';
import { RateLimiter } from '../../coordinator/access/rate-limit.js';
import { AGENT_SOCKET_PATH, CLOSE_CODES, PROTOCOL_VERSIONS, decodeFrame, encodeFrame } from '../../shared/index.js';
import { hello } from '../helpers/engine-harness.js';

describe('agent hub with agent credentials', () => {
  let dir: string;
  let server: Server;
  let url: string;
  let store: AgentCredentialStore;
  let events: AuditEvent[];
  let hub: AgentHub;
  const engine = {
    hello: vi.fn(async () => ({ ok: true as const, entry: { name: 'x' } as never, resume: [] })),
    welcomed: vi.fn(),
    frame: vi.fn(async () => null),
    disconnected: vi.fn(),
    agentCutOff: vi.fn(async () => {}),
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-hub-creds-'));
    events = [];
    const audit = { record: (e: AuditEvent) => events.push(e) };
    store = await AgentCredentialStore.open(dir, { audit });
    const tokens = new TokenCheck({ apiToken: 'api-token-0123456789', agentToken: 'agent-token-0123456789' }, null, store);
    hub = new AgentHub({ engine, tokens, credentials: store, audit, logger: pino({ level: 'silent' }), heartbeatIntervalMs: 10_000, lostAfterMs: 30_000, cutoffCancelMs: 60_000 });
    server = createServer();
    server.on('upgrade', (req, socket, head) => hub.handleUpgrade(req, socket, head));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}${AGENT_SOCKET_PATH}`;
  });
  afterEach(async () => {
    hub.closeAll();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await store.idle();
    await rm(dir, { recursive: true, force: true });
  });

  async function enrolled(name: string): Promise<string> {
    const t = await store.createToken({ name, expiresMs: 60_000, uses: 1, createdBy: 'test' });
    return (await store.enrol(t.token, name)).credential;
  }

  /** Connects with `token` and says hello as `name`; resolves with the close code, or 'welcome'. */
  function connect(token: string, name: string): { ws: WebSocket; outcome: Promise<number | 'welcome' | { status: number; body: string }> } {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
    const outcome = new Promise<number | 'welcome' | { status: number; body: string }>((resolve) => {
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      ws.on('open', () => ws.send(encodeFrame('hello', 1, hello(name), PROTOCOL_VERSIONS[0])));
      ws.on('message', (data: Buffer) => {
        const d = decodeFrame(data, 'agent');
        if (d.ok && d.frame.type === 'welcome') resolve('welcome');
      });
      ws.on('close', (code) => resolve(code));
      ws.on('error', () => {});
    });
    return { ws, outcome };
  }

  it('takes a credential whose hello names its agent, and refuses another name with 4014', async () => {
    const credential = await enrolled('a1');
    const ok = connect(credential, 'a1');
    expect(await ok.outcome).toBe('welcome');
    ok.ws.close();
    const other = connect(credential, 'a2');
    expect(await other.outcome).toBe(CLOSE_CODES.CREDENTIAL_NAME);
    expect(events.at(-1)).toMatchObject({ actor: 'agent:a1', action: 'agent.connect', outcome: 'refused', detail: "this agent credential was issued to agent 'a1', not 'a2'" });
    // The shared agent token still connects under any name.
    const legacy = connect('agent-token-0123456789', 'a3');
    expect(await legacy.outcome).toBe('welcome');
    legacy.ws.close();
  });

  it('revoke closes the connection with 4013, the engine cuts the agent off, and the credential is refused at the upgrade', async () => {
    const credential = await enrolled('b1');
    const c = connect(credential, 'b1');
    expect(await c.outcome).toBe('welcome');
    const closed = new Promise<number>((r) => c.ws.on('close', (code) => r(code)));
    await store.revokeAgent('b1', 'test');
    await hub.revoke('b1');
    expect(await closed).toBe(CLOSE_CODES.CREDENTIAL_REVOKED);
    expect(engine.agentCutOff).toHaveBeenCalledWith('b1', expect.anything(), "agent b1's credential was revoked");
    const again = connect(credential, 'b1');
    const refused = await again.outcome;
    expect(refused).toMatchObject({ status: 401, body: expect.stringContaining("agent credential refused: the credential of agent 'b1' was revoked") });
    expect(events.at(-1)).toMatchObject({ actor: 'agent:b1', action: 'agent.connect', outcome: 'refused' });
    expect(JSON.stringify(events)).not.toContain(credential);
    const unknown = connect(`kiln_agent_${'C'.repeat(43)}`, 'b1');
    expect(await unknown.outcome).toMatchObject({ status: 401, body: expect.stringContaining('unknown agent credential') });
  });

  it('checks the credential again at the hello: one revoked after its upgrade was verified gets 4013, not a session', async () => {
    const credential = await enrolled('r1');
    // The upgrade is verified, then (before the hello) the credential is revoked in the store
    // without the hub hearing of it: the window in which `revoke` cannot see the connection yet.
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${credential}` } });
    ws.on('error', () => {});
    await new Promise<void>((r) => ws.on('open', () => r()));
    await store.revokeAgent('r1', 'test');
    engine.hello.mockClear();
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.send(encodeFrame('hello', 1, hello('r1'), PROTOCOL_VERSIONS[0]));
    const { code, reason } = await closed;
    expect(code).toBe(CLOSE_CODES.CREDENTIAL_REVOKED);
    expect(reason).toContain("the credential of agent 'r1' was revoked");
    expect(engine.hello).not.toHaveBeenCalled();
    expect(events.at(-1)).toMatchObject({ actor: 'agent:r1', action: 'agent.connect', outcome: 'refused' });
  });

  it('rate limits refused upgrades per address (429 with Retry-After, not audited); an accepted agent takes no token', async () => {
    const tokens = new TokenCheck({ apiToken: 'api-token-0123456789', agentToken: 'agent-token-0123456789' }, null, store);
    const audit = { record: (e: AuditEvent) => events.push(e) };
    hub.closeAll();
    hub = new AgentHub({ engine, tokens, credentials: store, audit, logger: pino({ level: 'silent' }), heartbeatIntervalMs: 10_000, lostAfterMs: 30_000, cutoffCancelMs: 60_000, refusalLimit: new RateLimiter({ perSecond: 0.01, burst: 2 }) });
    const credential = await enrolled('l1');
    // Accepted connections take nothing from the bucket.
    for (let i = 0; i < 3; i++) {
      const ok = connect(credential, 'l1');
      expect(await ok.outcome).toBe('welcome');
      ok.ws.close();
    }
    const refusedBefore = events.filter((e) => e.outcome === 'refused').length;
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await connect('wrong-token-0123456789', 'l1').outcome);
    expect(answers.slice(0, 2)).toEqual([
      { status: 401, body: expect.stringContaining('missing or wrong agent token') },
      { status: 401, body: expect.stringContaining('missing or wrong agent token') },
    ]);
    expect(answers[2]).toMatchObject({ status: 429, body: expect.stringContaining('too many refused agent connections from 127.0.0.1') });
    expect(JSON.parse((answers[2] as { body: string }).body)).toMatchObject({ status: 429, code: 'E_RATE_LIMITED' });
    expect(events.filter((e) => e.outcome === 'refused').length - refusedBefore).toBe(2);
    // The valid agent from the same address still connects.
    expect(await connect(credential, 'l1').outcome).toBe('welcome');
  });

  it('askRotate closes with 4015; a credential flagged while away is told at its next connection', async () => {
    const credential = await enrolled('r1');
    const c = connect(credential, 'r1');
    expect(await c.outcome).toBe('welcome');
    const closed = new Promise<number>((r) => c.ws.on('close', (code) => r(code)));
    await store.requestRotation('r1', 'test');
    expect(hub.askRotate('r1')).toBe(true);
    expect(await closed).toBe(CLOSE_CODES.CREDENTIAL_ROTATE);
    expect(await connect(credential, 'r1').outcome).toBe(CLOSE_CODES.CREDENTIAL_ROTATE);
    const fresh = await store.rotate(credential);
    const next = connect(fresh.credential, 'r1');
    expect(await next.outcome).toBe('welcome');
    next.ws.close();
    expect(await connect(credential, 'r1').outcome).toMatchObject({ status: 401 });
    expect(hub.askRotate('nobody')).toBe(false);
  });
});
