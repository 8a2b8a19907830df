/**
 * Assembles a coordinator from its parts and runs it: data dir (lock, state, tokens),
 * CAS, log store, agent registry, engine, HTTP API and the agents' WebSocket endpoint on
 * one server, and the periodic sweep for lost agents and overdue attempts.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import { KilnError, errnoCode, type Digest, type Payload } from '../shared/index.js';
import { AgentHub } from './agents/agent-hub.js';
import { AgentRegistry } from './placement/agent-registry.js';
import { Engine } from './builds/engine.js';
import { ReuseIndex } from './builds/reuse-index.js';
import { Cas } from './cas/cas.js';
import { Retention } from './cas/retention.js';
import { createBlobStore } from './cas/create-blob-store.js';
import type { CoordinatorConfig } from './config.js';
import { TokenCheck } from './http/auth.js';
import { ApiKeyStore } from './access/api-keys.js';
import { AuditLog } from './access/audit-log.js';
import { RateLimiter } from './access/rate-limit.js';
import { createApp } from './http/app.js';
import { LogStore } from './logs/log-store.js';
import { lockDataDir, loadTokens, prepareDataDir, type LoadedTokens } from './state/data-dir.js';
import { StateStore } from './state/state-store.js';
import { sweepCacheTags } from './builds/cache-retention.js';
import { contextDockerfile, loadContextDockerfile, wantContextDockerfiles } from './registry/context-dockerfiles.js';

export interface RunningCoordinator {
  /** http://host:port the coordinator listens on (port resolved when 0 was asked). */
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
  keys: ApiKeyStore;
  audit: AuditLog;
  stop(): Promise<void>;
}

function listen(server: Server, host: string, port: number): Promise<number> {
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
    const prepared = await prepareDataDir(config.dataDir);
    releasers.push(await lockDataDir(config.dataDir, (stale) => logger.warn({ stale: stale.holder, reason: stale.reason }, stale.message)));
    const store = await StateStore.open({ dataDir: config.dataDir, persist: config.persist, init: config.init || prepared.created });
    const initialized = store.created;
    const tokens = await loadTokens(config.dataDir, { agentTokenFile: config.agentTokenFile, apiTokenFile: config.apiTokenFile });
    const cas = new Cas(createBlobStore(config.cas, config.dataDir, config.maxBlobBytes));
    await cas.init();
    const reuse = new ReuseIndex(config.dataDir, config.persist);
    await reuse.init();
    const logs = new LogStore(config.dataDir);
    releasers.push(() => logs.closeAll());
    const agents = new AgentRegistry();
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
    });
    await engine.recover();
    releasers.push(() => store.drain());
    releasers.push(() => engine.stop());

    let ready = false;
    const keys = await ApiKeyStore.open(config.dataDir, { legacyApiToken: true });
    const audit = await AuditLog.open(config.dataDir, { onError: (err) => logger.error({ err }, 'audit log write failed') });
    releasers.push(() => audit.close());
    const tokenCheck = new TokenCheck(tokens, keys);
    const { perKey, perAddress } = config.rateLimit;
    const rateLimits = { perKey: perKey ? new RateLimiter(perKey) : null, perAddress: perAddress ? new RateLimiter(perAddress) : null };
    const retention = new Retention({ cas, store, logger }, { retentionMs: config.artifacts.retentionMs, graceMs: config.artifacts.gcGraceMs });
    const app = createApp({
      engine,
      agents,
      logs,
      cas,
      retention,
      tokens: tokenCheck,
      keys,
      audit,
      rateLimits,
      logger,
      defaultPlatform: config.defaultPlatform,
      maxSpecBytes: config.maxSpecBytes,
      maxBlobBytes: config.maxBlobBytes,
      isReady: () => ready,
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
    const withRegistryAuth = (a: Payload<'assign'>): Payload<'assign'> => {
      const auth = registries.forAssign(a, dockerfileOf(a));
      return auth.length > 0 ? { ...a, registry_auth: auth } : a;
    };
    const hub = new AgentHub({
      engine,
      tokens: tokenCheck,
      logger,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      lostAfterMs: config.lostAfterMs,
      cutoffCancelMs: config.cutoffCancelMs,
      ...(registries.size > 0 ? { withRegistryAuth } : {}),
    });
    const server = createAdaptorServer({ fetch: app.fetch }) as Server;
    server.on('upgrade', (req, socket, head) => hub.handleUpgrade(req, socket, head));
    const port = await listen(server, config.listen.host, config.listen.port);
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
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
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
      keys,
      audit,
      stop: cleanup,
    };
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}
