/**
 * A BuildKit session that answers the build's registry credential requests. The Docker
 * Engine's built-in BuildKit (Docker 20.10) ignores the build's X-Registry-Config header
 * (moby/moby#41818, moby/buildkit#2058): it asks for credentials through a session, as the
 * docker CLI provides one. So the agent opens one itself: `POST /session` upgraded to h2c,
 * on which the engine is the HTTP/2 (gRPC) client and this module the server, exposing
 * `moby.filesync.v1.Auth/Credentials` (registry host -> username and secret) and the
 * health check BuildKit polls; the build names it (`session=<id>`). Everything else is
 * answered UNIMPLEMENTED (BuildKit then fetches bearer tokens itself with the credentials).
 *
 * Credentials come from the build's registryconfig (docker/registry-config.ts): only the
 * registries the coordinator sent for this node. They are never logged. The hand-written
 * protobuf covers the two string fields of each message (field 1 and 2).
 *
 * Build secrets (`RUN --mount=type=secret,id=NAME`): the same session serves
 * `moby.buildkit.secrets.v1.Secrets/GetSecret` (request: ID, field 1; response: data
 * bytes, field 1) from the values the assignment carried for this node; an id it does not
 * hold is answered NOT_FOUND (BuildKit then fails the step, or skips a `required=false`
 * mount). The values live only in this process's memory for the build's length.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { coerceError } from '../../shared/core.js';
import { randomBytes } from 'node:crypto';
import type { EngineEndpoint } from './engine-api.js';
import type { RegistryAuth } from './image-push.js';
import { DOCKER_HUB_AUTH_KEY } from './registry-config.js';

export const CREDENTIALS_METHOD = '/moby.filesync.v1.Auth/Credentials';
export const HEALTH_METHOD = '/grpc.health.v1.Health/Check';
export const SECRETS_METHOD = '/moby.buildkit.secrets.v1.Secrets/GetSecret';
/** The most a request message may hold (a host name). */
const MAX_REQUEST_BYTES = 64 * 1024;

export interface BuildSession {
  readonly id: string;
  close(): void;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** A protobuf message of string fields 1.. (empty strings left out), in a gRPC frame. */
export function grpcFrame(fields: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  fields.forEach((value, i) => {
    if (value === '') return;
    const bytes = Buffer.from(value, 'utf8');
    parts.push(Buffer.from([((i + 1) << 3) | 2]), varint(bytes.length), bytes);
  });
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** A protobuf message of one bytes field 1 (left out when empty), in a gRPC frame. */
export function grpcBytesFrame(data: Uint8Array): Buffer {
  const body = data.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(data.length), data]);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** String field 1 of the protobuf message in a gRPC frame ('' when absent or malformed). */
export function firstStringField(frame: Buffer): string {
  let pos = 5;
  while (pos < frame.length) {
    const tag = frame[pos++]!;
    // The length varint, in plain arithmetic (bit operators would go negative past 2^31).
    let len = 0;
    let scale = 1;
    for (;;) {
      const b = frame[pos++];
      if (b === undefined || scale > 2 ** 28) return '';
      len += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) break;
    }
    if ((tag & 7) !== 2 || len > frame.length - pos) return '';
    if (tag >> 3 === 1) return frame.subarray(pos, pos + len).toString('utf8');
    pos += len;
  }
  return '';
}

/** The credentials for the host BuildKit asks about (`registry-1.docker.io` is Docker Hub). */
export function credentialsFor(config: ReadonlyMap<string, RegistryAuth>, host: string): { username: string; secret: string } {
  const auth = config.get(host.toLowerCase()) ?? (host === 'registry-1.docker.io' || host === 'index.docker.io' ? (config.get('docker.io') ?? config.get(DOCKER_HUB_AUTH_KEY)) : undefined);
  if (!auth?.username || !auth.password) return { username: '', secret: '' };
  return { username: auth.username, secret: auth.password };
}

function serve(socket: Duplex, config: ReadonlyMap<string, RegistryAuth>, secrets: ReadonlyMap<string, Uint8Array>): http2.Http2Server {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const path = String(headers[':path'] ?? '');
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_REQUEST_BYTES) chunks.push(c);
    });
    stream.on('error', () => {});
    stream.on('end', () => {
      let reply: Buffer | null = null;
      let status: { code: string; message: string } = { code: '12', message: 'unimplemented' };
      if (path === HEALTH_METHOD) reply = Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]); // SERVING
      else if (path === CREDENTIALS_METHOD && size <= MAX_REQUEST_BYTES) {
        const c = credentialsFor(config, firstStringField(Buffer.concat(chunks)));
        reply = grpcFrame([c.username, c.secret]);
      } else if (path === SECRETS_METHOD && size <= MAX_REQUEST_BYTES) {
        const id = firstStringField(Buffer.concat(chunks));
        const value = secrets.get(id);
        if (value !== undefined) reply = grpcBytesFrame(value);
        else status = { code: '5', message: `secret ${id.slice(0, 100)} not found` }; // NOT_FOUND
      }
      if (stream.destroyed) return;
      if (reply === null) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': status.code, 'grpc-message': encodeURIComponent(status.message) }, { endStream: true });
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(reply);
    });
  });
  server.on('sessionError', () => {});
  server.emit('connection', socket);
  return server;
}

/**
 * Opens a session on the engine at `endpoint` that answers credential requests from
 * `registryconfig` (host -> auth) and secret requests from `secrets` (id -> value).
 * Resolves once the engine accepted it (101).
 */
export function openBuildSession(endpoint: EngineEndpoint, registryconfig: Record<string, RegistryAuth>, signal?: AbortSignal, secrets: ReadonlyMap<string, Uint8Array> = new Map()): Promise<BuildSession> {
  const id = randomBytes(16).toString('hex');
  const config = new Map(Object.entries(registryconfig));
  const where = 'socketPath' in endpoint ? { socketPath: endpoint.socketPath } : { host: endpoint.host, port: endpoint.port };
  return new Promise((resolve, reject) => {
    const req = http.request({
      ...where,
      method: 'POST',
      path: '/session',
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'h2c',
        'X-Docker-Expose-Session-Uuid': id,
        'X-Docker-Expose-Session-Name': 'kiln-agent',
        'X-Docker-Expose-Session-Sharedkey': id,
        'X-Docker-Expose-Session-Grpc-Method': [CREDENTIALS_METHOD, HEALTH_METHOD, ...(secrets.size > 0 ? [SECRETS_METHOD] : [])],
      },
      ...(signal ? { signal } : {}),
    });
    req.on('upgrade', (_res, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      const server = serve(socket, config, secrets);
      socket.on('error', () => {});
      resolve({
        id,
        close: () => {
          server.close();
          socket.destroy();
        },
      });
    });
    req.on('response', (res) => {
      res.resume();
      reject(new Error(`the Docker Engine refused a build session (HTTP ${res.statusCode})`));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The engine endpoint a dockerode client talks to. */
export function endpointOf(docker: { modem: { socketPath?: string | undefined; host?: string | undefined; port?: number | string | undefined } }): EngineEndpoint {
  const m = docker.modem;
  if (m.socketPath) return { socketPath: m.socketPath };
  return { host: m.host ?? '127.0.0.1', port: Number(m.port ?? 2375), protocol: 'http' };
}

/**
 * `POST /build` as dockerode's buildImage sends it, with `opts.session` kept: buildImage
 * opens a session of its own for `version: '2'` builds and puts its id over ours (its
 * session answers every host with one credential, which would hand one registry's
 * password to another).
 */
export function buildInSession(docker: Docker, context: NodeJS.ReadableStream, opts: Record<string, unknown>): Promise<NodeJS.ReadableStream> {
  const optsf = { path: '/build?', method: 'POST', file: context, options: opts, abortSignal: opts.abortSignal, isStream: true, statusCodes: { 200: true, 500: 'server error' } };
  return new Promise((resolve, reject) => {
    docker.modem.dial(optsf as unknown as Parameters<typeof docker.modem.dial>[0], (err: unknown, data: unknown) => (err ? reject(coerceError(err)) : resolve(data as NodeJS.ReadableStream)));
  });
}
