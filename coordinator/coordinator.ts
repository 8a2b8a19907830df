/**
 * Assembles a coordinator from its parts and runs it: data dir (lock, state, tokens),
 * CAS, log store, agent registry, engine, HTTP API and the agents' WebSocket endpoint on
 * one server, and the periodic sweep for lost agents and overdue attempts.
 */
import type { AddressInfo, Server as NetServer } from 'node:net';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import { KILN_VERSION, KilnError, errnoCode, isLoopbackHost, openTracer, type Digest, type Payload } from '../shared/index.js';
import { AgentHub } from './agents/agent-hub.js';
import { AgentRegistry } from './placement/agent-registry.js';
import { Engine } from './builds/engine.js';
import { ReuseIndex } from './builds/reuse-index.js';
import { Cas } from './cas/cas.js';
import { Retention } from './cas/retention.js';
import { createBlobStore } from './cas/create-blob-store.js';
import type { CoordinatorConfig } from './config.js';
import { TokenCheck } from './http/auth.js';
import { AgentCredentialStore } from './access/agent-credentials.js';
import { ApiKeyStore } from './access/api-keys.js';
import { AuditLog } from './access/audit-log.js';
import { RefusalThrottle } from './access/audit-throttle.js';
import { RateLimiter } from './access/rate-limit.js';
import { createApp } from './http/app.js';
import { LogStore } from './logs/log-store.js';
import { lockDataDir, loadTokens, prepareDataDir, type LoadedTokens } from './state/data-dir.js';
import { StateStore } from './state/state-store.js';
import { sweepCacheTags } from './builds/cache-retention.js';
import { embeddedClusterView } from './cluster/embedded-view.js';
import { contextDockerfile, loadContextDockerfile, wantContextDockerfiles } from './registry/context-dockerfiles.js';
import type * as TlsFiles from './tls/tls-files.js';
import { SecretStore } from './secrets/secret-store.js';
import { secretValuesAttacher } from './secrets/assign-secrets.js';
import { BuildTracing } from './tracing/build-spans.js';
import type { Webhooks } from './webhooks/webhooks.js';
import { ChangeFeed } from './events/change-feed.js';
import { engineSource } from './events/event-source.js';

export interface RunningCoordinator {
  /** http(s)://host:port the coordinator listens on (port resolved when 0 was asked). */
  url: string;
  port: number;
  dataDir: string;
  statePath: string;
  /** true when this start created the data dir or the state file. */
  initialized: boolean;
  /** What an existing state held, for the start banner (`3 active builds, 120 archived`). */
  recovered: string;
  tokens: LoadedTokens;
  engine: Engine;
  store: StateStore;
  cas: Cas;
  retention: Retention;
  /** SIGHUP: re-reads what can change without a restart (the TLS certificate and key). */
  reload(reason: string): void;
  keys: ApiKeyStore;
  audit: AuditLog;
  /** The change feed behind GET /api/v1/events. */
  events: ChangeFeed;
  stop(): Promise<void>;
}

function listen(server: NetServer, host: string, port: number): Promise<number> {
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

export async function startCoordinator(config: CoordinatorConfig, logger: Logger): Promise<RunningCoordinator> {
  const releasers: Array<() => Promise<void> | void> = [];
  const cleanup = async () => {
    for (const r of releasers.splice(0).reverse()) await r();
  };
  try {
    if (config.state.kind === 'postgres') {
      throw new KilnError('E_CONFIG', `config state: ${config.state.location}: the PostgreSQL state backend is not wired into the coordinator yet; leave state empty for the embedded state`);
    }
    // The TLS pair first: a bad one is a config error, found before anything is opened.
    let tls: { pair: TlsFiles.TlsPair; mod: typeof TlsFiles } | null = null;
    if (config.tls) {
      const mod = await import('./tls/tls-files.js');
      tls = { pair: mod.loadTlsPair(config.tls), mod };
    }
    const prepared = await prepareDataDir(config.dataDir);
    releasers.push(await lockDataDir(config.dataDir, (stale) => logger.warn({ stale: stale.holder, reason: stale.reason }, stale.message)));
    const store = await StateStore.open({ dataDir: config.dataDir, persist: config.persist, init: config.init || prepared.created, unsyncedJournal: config.unsyncedJournal });
    const initialized = store.created;
    const tokens = await loadTokens(config.dataDir, { agentTokenFile: config.agentTokenFile, apiTokenFile: config.apiTokenFile });
    // Who did what (mutations and refused calls), from the API, enrolment and agent connections.
    const audit = await AuditLog.open(config.dataDir, { onError: (err) => logger.error({ err }, 'audit log write failed') });
    releasers.push(() => audit.close());
    // Refusals (which anyone can cause) are recorded at a bounded rate per address and action.
    const auditSink = new RefusalThrottle(audit);
    // Enrolment tokens and per-agent credentials (a corrupt file stops the start, naming it).
    const credentials = await AgentCredentialStore.open(config.dataDir, { audit: auditSink });
    // Build secrets: a store its key does not open refuses the start (naming both files).
    const secrets = await SecretStore.open({ dataDir: config.dataDir, keyFile: config.secretsKeyFile });
    const cas = new Cas(createBlobStore(config.cas, config.dataDir, config.maxBlobBytes));
    await cas.init();
    const reuse = new ReuseIndex(config.dataDir, config.persist);
    await reuse.init();
    const logs = new LogStore(config.dataDir);
    releasers.push(() => logs.closeAll());
    const agents = new AgentRegistry();
    // Tracing (issue 12): OpenTelemetry loads only when an OTLP endpoint is configured; its
    // shutdown (sending what is left) runs after the engine's.
    let tracing: BuildTracing | null = null;
    if (config.tracing) {
      const otlp = config.tracing;
      const tracer = await openTracer({ ...otlp, serviceVersion: KILN_VERSION, onExportError: (message) => logger.warn({ err: message, url: otlp.url }, 'sending traces failed') });
      releasers.push(() => tracer.shutdown(5_000));
      tracing = new BuildTracing(tracer);
      logger.info({ url: otlp.url, service: otlp.serviceName }, 'tracing: sending build traces over OTLP/HTTP');
    }
    const engine = new Engine({
      store,
      logs,
      cas,
      reuse,
      agents,
      logger,
      timings: {
        heartbeatIntervalMs: config.heartbeatIntervalMs,
        lostAfterMs: config.lostAfterMs,
        reconnectGraceMs: config.reconnectGraceMs,
        cancelGraceMs: config.cancelGraceMs,
        timeoutGraceMs: config.timeoutGraceMs,
        acceptTimeoutMs: config.acceptTimeoutMs,
      },
      layerCache: config.cache,
      concurrencyGroups: config.concurrencyGroups,
      tracing,
    });
    await engine.recover();
    releasers.push(() => store.drain());
    releasers.push(() => credentials.idle());
    releasers.push(() => engine.stop());
    // Webhooks (issue 13): loaded only when a hook can exist (the coordinator's own, or
    // builds' own to allowed hosts); stopped before the engine.
    let webhooks: Webhooks | null = null;
    const wh = config.webhooks;
    if (wh.hooks.length > 0 || wh.allowedHosts.length > 0) {
      const mod = await import('./webhooks/webhooks.js');
      const w = await mod.Webhooks.open(wh, { engine, agents, durable: () => store.commit(), secrets, logger });
      webhooks = w;
      releasers.push(() => w.stop());
      logger.info({ hooks: w.targets(), allowed_hosts: wh.allowedHosts }, 'webhooks: sending build and node state changes');
    }

    let ready = false;
    // GET /api/v1/cluster names this coordinator by its advertise_url, else its listen URL (set once listening).
    let advertisedUrl = config.advertiseUrl ?? '';
    const keys = await ApiKeyStore.open(config.dataDir, { legacyApiToken: true });
    const tokenCheck = new TokenCheck(tokens, keys, credentials);
    const { perKey, perAddress } = config.rateLimit;
    const rateLimits = { perKey: perKey ? new RateLimiter(perKey) : null, perAddress: perAddress ? new RateLimiter(perAddress) : null };
    // GET /api/v1/events: watches the engine and the agents only while someone subscribes.
    const events = new ChangeFeed(engineSource(engine, agents), { logger });
    releasers.push(() => events.stop());
    const retention = new Retention({ cas, store, logger }, { retentionMs: config.artifacts.retentionMs, graceMs: config.artifacts.gcGraceMs });
    const app = createApp({
      engine,
      agents,
      logs,
      cas,
      retention,
      tokens: tokenCheck,
      agentAccess: { store: credentials, hub: { revoke: (name) => hub.revoke(name), askRotate: (name) => hub.askRotate(name) } },
      secrets,
      ...(webhooks ? { webhooks } : {}),
      webhookPolicy: { allowedHosts: wh.allowedHosts },
      keys,
      audit: { record: (e) => auditSink.record(e), query: (q) => audit.query(q) },
      rateLimits,
      logger,
      defaultPlatform: config.defaultPlatform,
      maxSpecBytes: config.maxSpecBytes,
      maxBlobBytes: config.maxBlobBytes,
      isReady: () => ready,
      secureCookies: tls !== null,
      events: { feed: events },
      cluster: () => Promise.resolve(embeddedClusterView(advertisedUrl)),
    });
    const registries = config.registries;
    wantContextDockerfiles(registries.size > 0);
    // The node's Dockerfile, for the registries it pulls from: inline in the spec, or read
    // from its context in the CAS at submit (a miss starts the read for the next attempt).
    const dockerfileOf = (a: Payload<'assign'>): string | null => {
      if (a.dockerfile_inline !== null || a.context === null) return a.dockerfile_inline;
      const context = a.context;
      const path = a.dockerfile ?? 'Dockerfile';
      const text = contextDockerfile(context, path);
      if (text === undefined) void loadContextDockerfile(context, path, () => cas.read(context as Digest));
      return text ?? null;
    };
    const withSecretValues = secretValuesAttacher(secrets);
    // Registry credentials and secret values join an assignment only as it is sent (never stored).
    const withRegistryAuth = (a: Payload<'assign'>): Payload<'assign'> => {
      const auth = registries.size > 0 ? registries.forAssign(a, dockerfileOf(a)) : [];
      return withSecretValues(auth.length > 0 ? { ...a, registry_auth: auth } : a);
    };
    const hub = new AgentHub({
      engine,
      tokens: tokenCheck,
      credentials,
      audit: auditSink,
      logger,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      lostAfterMs: config.lostAfterMs,
      cutoffCancelMs: config.cutoffCancelMs,
      withRegistryAuth,
      refusalLimit: rateLimits.perAddress,
    });
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

    const sweepEvery = Math.max(50, Math.min(1000, Math.floor(config.heartbeatIntervalMs / 2)));
    let sweeping = false;
    const timer = setInterval(() => {
      if (sweeping) return;
      sweeping = true;
      engine
        .sweep()
        .catch((err: unknown) => logger.error({ err }, 'sweep failed'))
        .finally(() => (sweeping = false));
    }, sweepEvery);
    timer.unref();
    releasers.push(() => clearInterval(timer));
    let cacheSweep: Promise<void> | null = null;
    const gcTimer = setInterval(() => {
      retention.sweep().catch((err: unknown) => logger.error({ err }, 'retention sweep failed'));
      // Layer cache: keep the last cache.keep versioned tags per node and platform.
      const lc = config.cache;
      if (lc && lc.keep > 0 && cacheSweep === null) cacheSweep = sweepCacheTags(lc.registry, lc.keep, logger).finally(() => (cacheSweep = null));
    }, config.artifacts.gcIntervalMs);
    gcTimer.unref();
    releasers.push(async () => {
      clearInterval(gcTimer);
      await retention.idle();
      await cacheSweep;
    });
    ready = true;
    releasers.push(() => {
      ready = false;
    });

    const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? '127.0.0.1' : config.listen.host;
    const url = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
    advertisedUrl = config.advertiseUrl ?? url;
    logger.info({ url, data_dir: config.dataDir, cas: cas.location, builds: engine.buildIds().length }, 'coordinator listening');
    return {
      url,
      port,
      dataDir: config.dataDir,
      statePath: store.path,
      initialized,
      recovered: `recovered: ${store.data.builds.size} active build${store.data.builds.size === 1 ? '' : 's'}, ${store.data.archived.size} finished`,
      tokens,
      engine,
      store,
      cas,
      retention,
      reload: (reason) => {
        if (tlsReloader) tlsReloader.reload(reason);
        else logger.info({ reason }, 'nothing to reload (no TLS configured)');
      },
      keys,
      audit,
      events,
      stop: cleanup,
    };
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}
