/**
 * A Docker Engine API proxy on a unix socket, in front of the real engine's socket, for
 * what the test machines cannot do on their own:
 *
 * - GPUs: it records the body of every `POST /containers/create` and strips
 *   `HostConfig.DeviceRequests` before forwarding, so the real engine (which has no
 *   nvidia runtime) runs the container while the test checks the device request the
 *   agent would have sent.
 * - An engine that goes away: `stop()` closes the socket and cuts every open
 *   connection, as a dockerd that died would; `start()` brings it back on the same path.
 *
 * Everything else passes through byte for byte (streamed both ways, including
 * connection upgrades for attach/exec).
 */
import { once } from 'node:events';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';

export interface RecordedCreate {
  path: string;
  body: Record<string, unknown>;
}

export class DockerProxy {
  /** Bodies of `POST /containers/create`, as the client sent them. */
  readonly creates: RecordedCreate[] = [];
  /** false: pass DeviceRequests on, so the real engine answers as a host without the nvidia runtime does (a 500). */
  stripDeviceRequests = true;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(
    /** Where the proxy listens. */
    readonly socketPath: string,
    /** The real engine's socket. */
    readonly upstreamPath: string,
  ) {}

  /** DOCKER_HOST form of the proxy's socket. */
  get dockerHost(): string {
    return `unix://${this.socketPath}`;
  }

  async start(): Promise<void> {
    if (this.server) return;
    await rm(this.socketPath, { force: true });
    const server = createServer((req, res) => void this.forward(req, res));
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('upgrade', (req: IncomingMessage, client: Socket, head: Buffer) => this.tunnel(req, client, head));
    server.listen(this.socketPath);
    await once(server, 'listening');
    this.server = server;
  }

  /** Stops listening and cuts every open connection (the engine "dies"). */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
    await rm(this.socketPath, { force: true });
  }

  /** Number of client connections open right now. */
  get openConnections(): number {
    return this.sockets.size;
  }

  private async forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const isCreate = req.method === 'POST' && /^(\/v[\d.]+)?\/containers\/create(\?|$)/.test(req.url ?? '');
    let body: Buffer | null = null;
    const headers = { ...req.headers };
    if (isCreate) {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      this.creates.push({ path: req.url ?? '', body: structuredClone(parsed) });
      const hostConfig = parsed.HostConfig as Record<string, unknown> | undefined;
      if (hostConfig && this.stripDeviceRequests) delete hostConfig.DeviceRequests;
      body = Buffer.from(JSON.stringify(parsed));
      headers['content-length'] = String(body.length);
      delete headers['transfer-encoding'];
    }
    const up = request({ socketPath: this.upstreamPath, method: req.method, path: req.url, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      // Attach answers with headers and then waits for the container to start: pass the
      // headers on now, or the client never starts it.
      res.flushHeaders();
      upRes.pipe(res);
      upRes.on('error', () => res.destroy());
    });
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ message: `docker proxy: ${err.message}` }));
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    if (body) up.end(body);
    else req.pipe(up);
  }

  private tunnel(req: IncomingMessage, client: Socket, head: Buffer): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    const upstream = connect(this.upstreamPath, () => {
      const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    this.sockets.add(upstream);
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      client.destroy();
    });
    client.on('close', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  }
}
