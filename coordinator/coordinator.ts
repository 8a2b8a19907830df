/**
 * Assembles a coordinator from its parts and runs it: data dir (lock, state, tokens),
 * CAS, log store, agent registry, engine, HTTP API and the agents' WebSocket endpoint on
 * one server, and the periodic sweep for lost agents and overdue attempts.
 */
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import { isLoopbackHost } from '../shared/index.js';
import type { CoordinatorConfig } from './config.js';
import { lockDataDir, prepareDataDir } from './state/data-dir.js';
import { StateStore } from './state/state-store.js';
import type * as TlsFiles from './tls/tls-files.js';
import { openCore, type RunningCoordinator } from './coordinator-core.js';
import { listen } from './listen.js';
import { embeddedClusterView } from './cluster/embedded-view.js';

export type { RunningCoordinator } from './coordinator-core.js';

export async function startCoordinator(config: CoordinatorConfig, logger: Logger): Promise<RunningCoordinator> {
  // A PostgreSQL state: the code for it loads only then (the embedded coordinator never loads the driver).
  if (config.state.kind === 'postgres') return (await import('./cluster-coordinator.js')).startClusterCoordinator(config, logger);
  const releasers: Array<() => Promise<void> | void> = [];
  const cleanup = async () => {
    for (const r of releasers.splice(0).reverse()) await r();
  };
  try {
    // The TLS pair first: a bad one is a config error, found before anything is opened.
    let tls: { pair: TlsFiles.TlsPair; mod: typeof TlsFiles } | null = null;
    if (config.tls) {
      const mod = await import('./tls/tls-files.js');
      tls = { pair: mod.loadTlsPair(config.tls), mod };
    }
    /** The URL this coordinator answers on (known once it listens). */
    let url = '';
    const prepared = await prepareDataDir(config.dataDir);
    releasers.push(await lockDataDir(config.dataDir, (stale) => logger.warn({ stale: stale.holder, reason: stale.reason }, stale.message)));
    const store = await StateStore.open({ dataDir: config.dataDir, persist: config.persist, init: config.init || prepared.created, unsyncedJournal: config.unsyncedJournal });
    const initialized = store.created;
    let ready = false;
    const core = await openCore(config, logger, store, {
      isReady: () => ready,
      secureCookies: tls !== null,
      // GET /api/v1/cluster names this coordinator by its advertise_url, else its listen URL (set once listening).
      cluster: () => Promise.resolve(embeddedClusterView(config.advertiseUrl ?? url)),
    });
    releasers.push(() => core.stop());
    const { app, hub, engine } = core;
    // HTTPS and WSS on one port when TLS is configured, else plain HTTP and WS.
    const server = tls
      ? (createAdaptorServer({ fetch: app.fetch, createServer: tls.mod.createHttpsServer, serverOptions: { cert: tls.pair.cert, key: tls.pair.key } }) as HttpsServer)
      : (createAdaptorServer({ fetch: app.fetch }) as Server);
    server.on('upgrade', (req, socket, head) => hub.handleUpgrade(req, socket, head));
    const port = await listen(server, config.listen.host, config.listen.port);
    let tlsReloader: TlsFiles.TlsReloader | null = null;
    if (tls && config.tls) {
      tlsReloader = new tls.mod.TlsReloader(server as HttpsServer, config.tls, tls.pair, logger);
      tlsReloader.watch();
      const r = tlsReloader;
      releasers.push(() => r.stop());
      logger.info({ cert_file: config.tls.certFile, serial: tls.pair.serial, fingerprint256: tls.pair.fingerprint256, subject: tls.pair.subject, valid_to: tls.pair.validTo }, 'serving HTTPS and WSS');
    } else if (!isLoopbackHost(config.listen.host)) {
      logger.warn({ listen: `${config.listen.host}:${port}` }, 'listening on a non-loopback address without TLS: API tokens, agent tokens and logs cross the network in clear text (set tls.cert and tls.key)');
    }
    releasers.push(
      () =>
        new Promise<void>((resolve) => {
          hub.closeAll();
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );

    core.startTimers();
    ready = true;
    releasers.push(() => {
      ready = false;
    });

    const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? '127.0.0.1' : config.listen.host;
    url = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
    logger.info({ url, data_dir: config.dataDir, cas: core.cas.location, builds: engine.buildIds().length }, 'coordinator listening');
    return {
      url,
      port,
      dataDir: config.dataDir,
      statePath: store.path,
      initialized,
      recovered: `recovered: ${store.data.builds.size} active build${store.data.builds.size === 1 ? '' : 's'}, ${store.data.archived.size} finished`,
      tokens: core.tokens,
      engine,
      store,
      cas: core.cas,
      retention: core.retention,
      reload: (reason) => {
        if (tlsReloader) tlsReloader.reload(reason);
        else logger.info({ reason }, 'nothing to reload (no TLS configured)');
      },
      keys: core.keys,
      audit: core.audit,
      events: core.events,
      stop: cleanup,
    };
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}
