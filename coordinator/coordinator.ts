/**
 * Assembles a coordinator from its parts and runs it: data dir (lock, state, tokens),
 * CAS, log store, agent registry, engine, HTTP API and the agents' WebSocket endpoint on
 * one server, and the periodic sweep for lost agents and overdue attempts.
 */
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import type { CoordinatorConfig } from './config.js';
import { lockDataDir, prepareDataDir } from './state/data-dir.js';
import { StateStore } from './state/state-store.js';
import { openCore, type RunningCoordinator } from './coordinator-core.js';
import { listen, listenUrl, loadTls, watchTls } from './listen.js';
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
    const tls = await loadTls(config);
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
    const tlsReloader = watchTls(server, config, tls, port, logger);
    if (tlsReloader) releasers.push(() => tlsReloader.stop());
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

    url = listenUrl(config.listen.host, port, tls !== null);
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
