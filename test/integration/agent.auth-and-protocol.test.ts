/**
 * The agent endpoint's gate: a missing or wrong agent token (or the API token) is
 * refused with 401 before any WebSocket exists; an agent that speaks no common protocol
 * version is closed with 4002 and a reason naming both sides' versions; garbage before
 * the hello closes the socket; an agent process with a bad token exits 78 instead of
 * retrying forever.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { AGENT_SOCKET_PATH, apiPath, encodeFrame, decodeFrame } from '../../shared/index.js';
import { spawnKiln, startCoordinator, tempDir, type CoordinatorHandle } from '../helpers/cluster.js';
import { writeFile } from 'node:fs/promises';

function connect(url: string, token: string | null): Promise<{ status?: number; body?: string; ws?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    ws.on('open', () => resolve({ ws }));
    ws.on('error', (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

function hello(versions: number[]) {
  return {
    protocol_versions: versions,
    agent_version: '9.9.9',
    name: 'probe',
    session: 'probe-session-1',
    platforms: [{ platform: 'linux/amd64', emulated: false }],
    labels: {},
    max_jobs: 1,
    executor: 'noop' as const,
    docker: null,
    gpus: [],
    running: [],
  };
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string; frames: unknown[] }> {
  const frames: unknown[] = [];
  ws.on('message', (d) => frames.push(decodeFrame(d as Buffer, 'agent')));
  return new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString(), frames })));
}

describe('agent endpoint gate', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  let wsUrl: string;
  let agentToken: string;

  beforeAll(async () => {
    dir = await tempDir('auth');
    coord = await startCoordinator({ dataDir: `${dir.path}/data` });
    wsUrl = `${coord.url.replace('http', 'ws')}${AGENT_SOCKET_PATH}`;
    agentToken = (await import('node:fs/promises').then((fs) => fs.readFile(coord.agentTokenFile, 'utf8'))).trim();
  });

  afterAll(async () => {
    await coord.proc.stop();
    await dir.cleanup();
  });

  it('refuses a wrong, missing or API token with 401 before upgrading', async () => {
    for (const token of ['not-the-token-at-all', null, coord.apiToken]) {
      const r = await connect(wsUrl, token);
      expect(r.ws).toBeUndefined();
      expect(r.status).toBe(401);
      expect(JSON.parse(r.body!)).toMatchObject({ status: 401, code: 'E_UNAUTHORIZED' });
    }
    const agents = await coord.api<{ items: unknown[] }>(apiPath.agents());
    expect(agents.body.items).toEqual([]);
  });

  it('closes an agent with no common protocol version with 4002 and a clear reason', async () => {
    const { ws } = await connect(wsUrl, agentToken);
    const done = closed(ws!);
    ws!.send(encodeFrame('hello', 1, hello([7, 8]), 7));
    const { code, reason, frames } = await done;
    expect(code).toBe(4002);
    expect(reason).toContain('incompatible protocol');
    expect(reason).toContain('7,8');
    const err = frames.find((f) => (f as { ok: boolean; frame?: { type: string } }).frame?.type === 'error') as { frame: { payload: { code: string; message: string } } };
    expect(err.frame.payload.code).toBe('E_PROTOCOL_VERSION');
    expect(err.frame.payload.message).toMatch(/upgrade/);
  });

  it('refuses an agent that speaks only protocol 1 or 2 (before image pushes; before secrets and traces) with 4002, naming both versions', async () => {
    for (const v of [1, 2]) {
      const { ws } = await connect(wsUrl, agentToken);
      const done = closed(ws!);
      ws!.send(encodeFrame('hello', 1, hello([v]), v));
      const { code, reason } = await done;
      expect(code).toBe(4002);
      expect(reason).toBe(`incompatible protocol: agent speaks ${v}, coordinator speaks 3`);
    }
  });

  it('closes a connection whose first frame is not a valid hello', async () => {
    const { ws } = await connect(wsUrl, agentToken);
    const done = closed(ws!);
    ws!.send(Buffer.from([0xc1, 0x00, 0xff]));
    const { code, reason } = await done;
    expect(code).toBe(4003);
    expect(reason).toMatch(/invalid hello/);
  });

  it('welcomes a compatible hello', async () => {
    const { ws } = await connect(wsUrl, agentToken);
    const frame = new Promise<ReturnType<typeof decodeFrame>>((resolve) => ws!.once('message', (d) => resolve(decodeFrame(d as Buffer, 'agent'))));
    ws!.send(encodeFrame('hello', 1, hello([1, 2, 3]), 1));
    const r = await frame;
    expect(r.ok && r.frame.type).toBe('welcome');
    if (r.ok && r.frame.type === 'welcome') {
      expect(r.frame.payload.protocol_version).toBe(3);
      expect(r.frame.payload.heartbeat_interval_ms).toBeGreaterThan(0);
    }
    ws!.close();
  });

  it('an agent process with a wrong token exits 78 (EX_CONFIG) and says why', async () => {
    const bad = `${dir.path}/bad-token`;
    await writeFile(bad, 'definitely-wrong-token\n');
    const p = spawnKiln(['agent', '--coordinator', coord.url, '--token-file', bad, '--name', 'badtoken', '--executor', 'noop']);
    expect(await p.exited).toBe(78);
    expect(p.stderr).toMatch(/401/);
  });
});
