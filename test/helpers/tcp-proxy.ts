/**
 * An in-process TCP proxy for fault tests: listens on 127.0.0.1 (port 0) and forwards
 * every connection to a target, so an agent pointed at the proxy talks to the real
 * coordinator over real sockets, and a test can break the link on demand:
 *
 * - `cut()`: resets (RST, `socket.resetAndDestroy()`) every open connection, both sides.
 * - `refuse()`: from now on, new connections are reset as soon as they are accepted.
 * - `blackhole()`: stops forwarding bytes on every connection, open and new, while keeping
 *   the sockets open (nothing is read, so nothing is lost: TCP buffers hold it, as in a
 *   partition that heals before the peers give up).
 * - `heal()`: forwards again (held bytes flow) and accepts new connections normally.
 */
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  /** `http://127.0.0.1:<port>`, for `--coordinator`. */
  readonly url: string;
  /** Connections accepted so far, including refused ones. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  cut(): void;
  refuse(): void;
  blackhole(): void;
  heal(): void;
  close(): Promise<void>;
}

interface Link {
  client: Socket;
  upstream: Socket;
  /** Directions waiting for `drain` on the socket they write to. */
  waiting: Set<Socket>;
}

export async function startTcpProxy(target: { host?: string; port: number }): Promise<TcpProxy> {
  if (!Number.isInteger(target.port) || target.port <= 0 || target.port > 65535) throw new Error(`startTcpProxy: target port ${target.port} is not a TCP port`);
  const host = target.host ?? '127.0.0.1';
  const links = new Set<Link>();
  let mode: 'forward' | 'refuse' | 'blackhole' = 'forward';
  let accepted = 0;

  const flowing = (link: Link, from: Socket) => mode !== 'blackhole' && !link.waiting.has(from);

  /** Copies `from` into `to` by hand (not pipe()), so blackhole can pause both directions. */
  const forward = (link: Link, from: Socket, to: Socket) => {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) {
        link.waiting.add(from);
        from.pause();
        to.once('drain', () => {
          link.waiting.delete(from);
          if (flowing(link, from)) from.resume();
        });
      }
    });
    from.on('end', () => to.end());
  };

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    if (mode === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection({ host, port: target.port });
    const link: Link = { client, upstream, waiting: new Set() };
    links.add(link);
    const teardown = () => {
      links.delete(link);
      if (!client.destroyed) client.destroy();
      if (!upstream.destroyed) upstream.destroy();
    };
    client.on('error', teardown).on('close', teardown);
    upstream.on('error', teardown).on('close', teardown);
    forward(link, client, upstream);
    forward(link, upstream, client);
    upstream.once('connect', () => {
      if (mode !== 'blackhole') client.resume();
    });
    if (mode === 'blackhole') upstream.pause();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    get open() {
      return links.size;
    },
    cut() {
      for (const l of [...links]) {
        links.delete(l);
        l.client.resetAndDestroy();
        l.upstream.resetAndDestroy();
      }
    },
    refuse() {
      mode = 'refuse';
    },
    blackhole() {
      mode = 'blackhole';
      for (const l of links) {
        l.client.pause();
        l.upstream.pause();
      }
    },
    heal() {
      mode = 'forward';
      for (const l of links) {
        if (!l.waiting.has(l.client)) l.client.resume();
        if (!l.waiting.has(l.upstream)) l.upstream.resume();
      }
    },
    close() {
      for (const l of [...links]) {
        l.client.destroy();
        l.upstream.destroy();
      }
      links.clear();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
