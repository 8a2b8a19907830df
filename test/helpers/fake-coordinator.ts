/**
 * A small coordinator double for agent tests: a real HTTP server and WebSocket endpoint
 * on 127.0.0.1 port 0 speaking kiln's protocol through the real codec (every frame
 * either way is validated by the shared schemas), so a test controls exactly what the
 * agent is told (welcome parameters such as `cutoff_cancel_ms`, assignments with GPUs and
 * tests) and sees every frame the agent sends. It acks heartbeats, logs and finished
 * reports like the real coordinator, can go silent (`blackhole`) or drop the connection,
 * and serves the CAS endpoints the agent uses (`GET /api/v1/cas/{digest}`,
 * `POST /api/v1/cas/find-missing`, `PUT /api/v1/cas/{digest}`) from memory.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { AGENT_SOCKET_PATH, MAX_FRAME_BYTES, MAX_LOG_CHUNK_BYTES, apiPath, decodeFrame, encodeFrame, PROTOCOL_VERSION, sha256, type AssignPayload, type Frame, type HelloPayload, type MessageType, type Payload, type ToAgentType } from '../../shared/index.js';
import { waitFor } from './cluster.js';

export interface FakeCoordinatorOptions {
  heartbeatIntervalMs?: number;
  lostAfterMs?: number;
  cutoffCancelMs?: number;
}

export interface ReceivedFrame {
  type: MessageType;
  payload: unknown;
  at: number;
  /** Which connection (0, 1, ...) it came on. */
  conn: number;
}

/** An assign payload with harmless defaults: an inline busybox build on linux/amd64. */
export function assignPayload(p: Partial<AssignPayload> & { attempt_id: string }): AssignPayload {
  return {
    build_id: 'b-fake',
    node: 'n',
    attempt: 1,
    platform: 'linux/amd64',
    context: null,
    dockerfile: null,
    dockerfile_inline: 'FROM kiln/busybox:1\n',
    build_args: {},
    target: null,
    timeout_ms: 300_000,
    image_tag: `kiln-test/${p.attempt_id.toLowerCase()}:latest`,
    no_cache: false,
    inputs: [],
    outputs: [],
    resolve: false,
    gpus: [],
    test: null,
    ...p,
  };
}

export class FakeCoordinator {
  readonly frames: ReceivedFrame[] = [];
  readonly hellos: HelloPayload[] = [];
  /** CAS blobs by digest (what GET serves, what PUT stores). */
  readonly blobs = new Map<string, Buffer>();
  /** Protocol violations seen (a test asserts there are none). */
  readonly errors: string[] = [];
  /** Digests the agent uploaded. */
  readonly uploads: string[] = [];
  /** While true, frames from the agent are dropped and nothing is sent (a partition). */
  blackhole = false;
  private server!: Server;
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  private ws: WebSocket | null = null;
  private conns = 0;
  private nextId = 0;
  private readonly logs = new Map<string, Map<number, Buffer>>();
  url = '';

  constructor(private readonly opts: FakeCoordinatorOptions = {}) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.http(req, res));
    this.server.on('upgrade', (req, socket, head) => {
      if (!req.url?.startsWith(AGENT_SOCKET_PATH)) return socket.destroy();
      this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws));
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  get connected(): boolean {
    return this.ws !== null && this.ws.readyState === this.ws.OPEN;
  }

  /** Closes the agent's connection (it will reconnect). */
  dropConnection(): void {
    this.ws?.close(1001, 'fake coordinator going away');
  }

  send<T extends ToAgentType>(type: T, payload: Payload<T>): void {
    if (!this.ws) throw new Error('no agent connected');
    this.ws.send(encodeFrame(type, ++this.nextId, payload, PROTOCOL_VERSION));
  }

  assign(p: Partial<AssignPayload> & { attempt_id: string }): AssignPayload {
    const a = assignPayload(p);
    this.send('assign', a);
    return a;
  }

  /** Frames of one type (payloads), optionally for one attempt. */
  of<T extends MessageType>(type: T, attemptId?: string): Array<Payload<T>> {
    return this.frames
      .filter((f) => f.type === type && (attemptId === undefined || (f.payload as { attempt_id?: string }).attempt_id === attemptId))
      .map((f) => f.payload as Payload<T>);
  }

  /** Waits for a frame of `type` (for `attemptId`) matching `pred`; returns its payload. */
  waitFrame<T extends MessageType>(type: T, attemptId?: string, pred: (p: Payload<T>) => boolean = () => true, timeoutMs = 120_000): Promise<Payload<T>> {
    return waitFor(`a ${type} frame${attemptId ? ` for ${attemptId}` : ''}`, () => this.of(type, attemptId).find(pred), timeoutMs, 20);
  }

  /** The attempt's log as received so far (in offset order, without duplicates). */
  logOf(attemptId: string): string {
    const parts = [...(this.logs.get(attemptId) ?? new Map<number, Buffer>()).entries()].sort((a, b) => a[0] - b[0]);
    return Buffer.concat(parts.map(([, b]) => b)).toString('utf8');
  }

  private logBytes(attemptId: string): number {
    let n = 0;
    for (const [off, b] of this.logs.get(attemptId) ?? []) n = Math.max(n, off + b.length);
    return n;
  }

  private onConnection(ws: WebSocket): void {
    const conn = this.conns++;
    let welcomed = false;
    ws.on('message', (data) => {
      if (this.blackhole) return;
      const decoded = decodeFrame(data as Buffer, 'coordinator');
      if (!decoded.ok) {
        this.errors.push(`the agent sent an invalid frame: ${decoded.error}`);
        return;
      }
      const f: Frame = decoded.frame;
      this.frames.push({ type: f.type, payload: f.payload, at: Date.now(), conn });
      if (!welcomed) {
        if (f.type !== 'hello') {
          this.errors.push(`first frame was ${f.type}, not hello`);
          return;
        }
        welcomed = true;
        this.hellos.push(f.payload);
        this.ws?.terminate();
        this.ws = ws;
        this.send('welcome', {
          protocol_version: PROTOCOL_VERSION,
          coordinator_version: 'fake',
          agent_name: f.payload.name,
          heartbeat_interval_ms: this.opts.heartbeatIntervalMs ?? 200,
          lost_after_ms: this.opts.lostAfterMs ?? 60_000,
          max_log_chunk_bytes: MAX_LOG_CHUNK_BYTES,
          cutoff_cancel_ms: this.opts.cutoffCancelMs ?? 300_000,
          resume: f.payload.running.map((r) => ({ attempt_id: r.attempt_id, action: 'continue' as const, log_offset: this.logBytes(r.attempt_id) })),
        });
        return;
      }
      if (f.type === 'heartbeat') this.send('ack', { ref: f.id });
      else if (f.type === 'log') {
        const m = this.logs.get(f.payload.attempt_id) ?? new Map<number, Buffer>();
        this.logs.set(f.payload.attempt_id, m);
        m.set(f.payload.offset, Buffer.from(f.payload.data));
        this.send('ack', { ref: f.id, attempt_id: f.payload.attempt_id, log_offset: this.logBytes(f.payload.attempt_id) });
      } else if (f.type === 'finished') this.send('ack', { ref: f.id, attempt_id: f.payload.attempt_id });
    });
    ws.on('close', () => {
      if (this.ws === ws) this.ws = null;
    });
  }

  private async http(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '';
    const body = async () => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    };
    const blob = /^\/api\/v1\/cas\/(sha256:[0-9a-f]{64})$/.exec(url);
    if (req.method === 'POST' && url === apiPath.casFindMissing()) {
      const { digests } = JSON.parse((await body()).toString()) as { digests: string[] };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ missing: digests.filter((d) => !this.blobs.has(d)) }));
    } else if (req.method === 'GET' && blob) {
      const b = this.blobs.get(blob[1]!);
      if (!b) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(b.length) }).end(b);
    } else if (req.method === 'PUT' && blob) {
      const b = await body();
      if (sha256(b) !== blob[1]) return void res.writeHead(400).end('digest mismatch');
      this.blobs.set(blob[1]!, b);
      this.uploads.push(blob[1]!);
      res.writeHead(201).end();
    } else {
      res.writeHead(404).end();
    }
  }
}
