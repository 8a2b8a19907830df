/**
 * The build session's secrets provider (agent/docker/build-session.ts), over a real
 * socket: a stand-in engine accepts `POST /session`, upgrades it to h2c and, as BuildKit
 * does, calls `moby.buildkit.secrets.v1.Secrets/GetSecret` as the HTTP/2 client. A held id
 * gets its bytes (field 1), an unknown one gRPC NOT_FOUND; the method is advertised only
 * when the session holds secrets.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { grpcFrame, openBuildSession, SECRETS_METHOD, type BuildSession } from '../../agent/docker/build-session.js';

interface FakeEngine {
  port: number;
  methods: string[];
  client: Promise<http2.ClientHttp2Session>;
  close(): void;
}

async function fakeEngine(): Promise<FakeEngine> {
  const server = http.createServer();
  let resolveClient!: (c: http2.ClientHttp2Session) => void;
  const client = new Promise<http2.ClientHttp2Session>((r) => (resolveClient = r));
  const out: FakeEngine = { port: 0, methods: [], client, close: () => server.close() };
  server.on('upgrade', (req, socket: Socket) => {
    const m = req.headers['x-docker-expose-session-grpc-method'];
    out.methods = String(m ?? '').split(/,\s*/);
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
    resolveClient(http2.connect('http://engine', { createConnection: () => socket }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  out.port = (server.address() as AddressInfo).port;
  return out;
}

function call(client: http2.ClientHttp2Session, path: string, body: Buffer): Promise<{ status: string | undefined; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc' });
    const chunks: Buffer[] = [];
    let status: string | undefined;
    req.on('response', (h) => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
    });
    req.on('trailers', (t) => (status = String(t['grpc-status'])));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status, data: Buffer.concat(chunks) }));
    req.on('error', reject);
    req.end(body);
  });
}

describe('build session: secrets', () => {
  let engine: FakeEngine | null = null;
  let session: BuildSession | null = null;
  afterEach(async () => {
    session?.close();
    (await engine?.client)?.destroy();
    engine?.close();
  });

  it('answers GetSecret with the value for a held id and NOT_FOUND for another', async () => {
    engine = await fakeEngine();
    const value = Buffer.concat([Buffer.from('bin\u0000ary-'), Buffer.alloc(300, 0x41)]);
    session = await openBuildSession({ host: '127.0.0.1', port: engine.port, protocol: 'http' }, {}, undefined, new Map([['tok', value]]));
    expect(engine.methods).toContain(SECRETS_METHOD);
    const client = await engine.client;
    // SecretRequest{ID: "tok", annotations: {}}
    const ok = await call(client, SECRETS_METHOD, grpcFrame(['tok']));
    expect(ok.status).toBe('0');
    // gRPC frame: 0, length, then field 1 (bytes): tag 0x0a, varint length (8 + 300 = 308 -> 0xb4 0x02), the value
    expect(ok.data.readUInt32BE(1)).toBe(ok.data.length - 5);
    expect(ok.data.subarray(5, 8)).toEqual(Buffer.from([0x0a, 0xb4, 0x02]));
    expect(ok.data.subarray(8)).toEqual(value);
    const missing = await call(client, SECRETS_METHOD, grpcFrame(['other']));
    expect(missing.status).toBe('5');
    expect(missing.data.length).toBe(0);
  });

  it('does not advertise GetSecret when the node has no secrets', async () => {
    engine = await fakeEngine();
    session = await openBuildSession({ host: '127.0.0.1', port: engine.port, protocol: 'http' }, {});
    expect(engine.methods).not.toContain(SECRETS_METHOD);
    const r = await call(await engine.client, SECRETS_METHOD, grpcFrame(['tok']));
    expect(r.status).toBe('5');
  });
});
