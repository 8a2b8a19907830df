/**
 * The Docker Engine calls an idle agent makes, over plain node:http: `GET /_ping` (the
 * health monitor), `/version` and `/info` (the hello's docker fields and the native
 * platform). They are all the agent needs until its first build, so dockerode (with
 * ssh2, gRPC and protobuf behind it, about 11 MiB of an agent's memory) is loaded only
 * then (executors/docker-deferred.ts). `engineEndpoint` parses DOCKER_HOST once for both.
 */
import { request } from 'node:http';
import { KilnError, ociArch } from '../../shared/core.js';
import type { ExecutorInfo } from '../executors/executor.js';

/** Where the engine listens, in the form node:http and dockerode both take. */
export type EngineEndpoint = { socketPath: string } | { host: string; port: number; protocol: 'http' };

/** `unix:///path`, `tcp://host:port` or `http://host:port` (the config checked the scheme). */
export function engineEndpoint(dockerHost: string): EngineEndpoint {
  if (dockerHost.startsWith('unix://')) return { socketPath: dockerHost.slice('unix://'.length) };
  const u = new URL(dockerHost.replace(/^tcp:/, 'http:'));
  return { host: u.hostname, port: Number(u.port || 2375), protocol: 'http' };
}

/** Largest answer read (an /info is a few KiB). */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

/** GET `path` from the engine; the parsed JSON answer (or the text, for `/_ping`). Fails on a non-2xx status. */
export function engineGet(endpoint: EngineEndpoint, path: string, signal?: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const where = 'socketPath' in endpoint ? { socketPath: endpoint.socketPath } : { host: endpoint.host, port: endpoint.port };
    const req = request({ ...where, path, method: 'GET', headers: { host: 'docker' }, ...(signal ? { signal } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER_BYTES) res.destroy(new KilnError('E_DOCKER', `Docker Engine answer to ${path} is larger than ${MAX_ANSWER_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) {
          reject(new KilnError('E_DOCKER', `Docker Engine answered ${status} to GET ${path}: ${body.slice(0, 200).trim()}`));
          return;
        }
        if (!/json/.test(String(res.headers['content-type']))) {
          resolve(body);
          return;
        }
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(new KilnError('E_DOCKER', `Docker Engine answered GET ${path} with invalid JSON`, { cause: err }));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

interface EngineVersion {
  Version?: string;
  ApiVersion?: string;
  Os?: string;
  Arch?: string;
}

/** What the executor reports of the engine, from its `/version` and `/info` answers. */
export function executorInfoOf(version: EngineVersion, info: { Architecture?: string }): ExecutorInfo {
  const arch = ociArch(info.Architecture ?? version.Arch ?? '');
  return {
    nativePlatform: `linux/${arch}`,
    docker: {
      version: version.Version ?? '',
      api_version: version.ApiVersion ?? '',
      os: version.Os ?? '',
      arch,
      // Engines through 28.x do not report the BuildKit they embed in /version or /info.
      buildkit_version: null,
    },
  };
}

/** The engine's `/version` and `/info`, as the executor reports them. */
export async function engineInfo(endpoint: EngineEndpoint): Promise<ExecutorInfo> {
  const [version, info] = await Promise.all([engineGet(endpoint, '/version'), engineGet(endpoint, '/info')]);
  return executorInfoOf(version as EngineVersion, info as { Architecture?: string });
}
