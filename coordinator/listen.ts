/**
 * What both kinds of coordinator process do first: the TLS pair (checked before anything is
 * opened, its module loaded only with TLS), listening on the configured address (the two
 * failures a user can fix named as configuration errors), and the URL it answers on.
 */
import type { AddressInfo, Server as NetServer } from 'node:net';
import type { Server as HttpsServer } from 'node:https';
import type { Logger } from 'pino';
import { KilnError, errnoCode, isLoopbackHost } from '../shared/index.js';
import type { CoordinatorConfig } from './config.js';
import type * as TlsFiles from './tls/tls-files.js';

export interface LoadedTls {
  pair: TlsFiles.TlsPair;
  mod: typeof TlsFiles;
}

/** The certificate and key when TLS is configured (a bad pair is E_CONFIG), else null. */
export async function loadTls(config: CoordinatorConfig): Promise<LoadedTls | null> {
  if (!config.tls) return null;
  const mod = await import('./tls/tls-files.js');
  return { pair: mod.loadTlsPair(config.tls), mod };
}

/** The URL a coordinator listening on `host:port` answers on (a wildcard address as loopback). */
export function listenUrl(host: string, port: number, tls: boolean): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return `${tls ? 'https' : 'http'}://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

export function listen(server: NetServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      const code = errnoCode(err);
      reject(new KilnError('E_CONFIG', code === 'EADDRINUSE' ? `cannot listen on ${host}:${port}: address already in use` : `cannot listen on ${host}:${port}: ${err.message}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Once listening: with TLS, watches the certificate and key (reloaded on change and SIGHUP;
 * the returned reloader, to stop); without, warns when the address is not loopback (tokens
 * and logs would cross the network in clear text).
 */
export function watchTls(server: NetServer, config: CoordinatorConfig, tls: LoadedTls | null, port: number, logger: Logger): TlsFiles.TlsReloader | null {
  if (tls && config.tls) {
    const reloader = new tls.mod.TlsReloader(server as HttpsServer, config.tls, tls.pair, logger);
    reloader.watch();
    logger.info({ cert_file: config.tls.certFile, serial: tls.pair.serial, fingerprint256: tls.pair.fingerprint256, subject: tls.pair.subject, valid_to: tls.pair.validTo }, 'serving HTTPS and WSS');
    return reloader;
  }
  if (!isLoopbackHost(config.listen.host)) {
    logger.warn({ listen: `${config.listen.host}:${port}` }, 'listening on a non-loopback address without TLS: API tokens, agent tokens and logs cross the network in clear text (set tls.cert and tls.key)');
  }
  return null;
}
