/**
 * The coordinator's services over one opened state (issue 14 split them from the process in
 * `coordinator.ts`): tokens and keys, the audit log, agent credentials, secrets, the CAS, the
 * reuse index, logs, the agent registry, the engine (recovered), webhooks, the events feed,
 * retention, the HTTP app and the agents' WebSocket hub, and the periodic sweeps. The
 * embedded coordinator opens them once; a coordinator on a shared PostgreSQL state opens
 * them each time it becomes the leader and stops them when it is not any more. `stop()`
 * releases them in the reverse order of opening.
 */
import type { Logger } from 'pino';
import { KILN_VERSION, openTracer, type Digest, type Payload } from '../shared/index.js';
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
import { createLogStore, type SharedLogOptions } from './logs/create-log-store.js';
import type { LogStorage } from './logs/log-storage.js';
import { loadTokens, type LoadedTokens } from './state/data-dir.js';
import type { DocumentStore } from './state/documents.js';
import type { StateStore } from './state/state-store.js';
import { sweepCacheTags } from './builds/cache-retention.js';
import { contextDockerfile, loadContextDockerfile, wantContextDockerfiles } from './registry/context-dockerfiles.js';
import { SecretStore } from './secrets/secret-store.js';
import { secretValuesAttacher } from './secrets/assign-secrets.js';
import { BuildTracing } from './tracing/build-spans.js';
import type { Webhooks } from './webhooks/webhooks.js';
import { ChangeFeed } from './events/change-feed.js';
import { engineSource } from './events/event-source.js';
import type { ClusterViewT } from '../shared/index.js';

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
  /** A coordinator on a shared state: whether it leads now (absent: embedded, always the leader). */
  role?: () => 'leader' | 'standby';
  stop(): Promise<void>;
}

export interface CoreOptions {
  /** /readyz and submissions: whether the coordinator serves now. */
  isReady: () => boolean;
  /** The session cookie is Secure (TLS is on). */
  secureCookies: boolean;
  /** GET /api/v1/cluster. */
  cluster: () => Promise<ClusterViewT>;
  /** Logs in the shared PostgreSQL store (a coordinator on a PostgreSQL state); absent: files in the data dir. */
  sharedLogs?: SharedLogOptions;
  /**
   * Where keys, credentials, secrets, reuse records and generated tokens are kept: the
   * documents of a PostgreSQL state (fenced writes; the secrets key must then be given). @default the data dir's files
   */
  docs?: DocumentStore;
  /**
   * A standby's read-only copy (issue 14): the state is not recovered (nothing is written:
   * recovery would change it), no webhooks; the caller starts no timers and routes only
   * reads to the app. @default false
   */
  replica?: boolean;
}

export interface CoordinatorCore {
  app: ReturnType<typeof createApp>;
  hub: AgentHub;
  engine: Engine;
  store: StateStore;
  cas: Cas;
  /** Build logs (`healthy` is false while a shared store's database is away: for /readyz). */
  logs: LogStorage;
  retention: Retention;
  tokens: LoadedTokens;
  keys: ApiKeyStore;
  credentials: AgentCredentialStore;
  audit: AuditLog;
  events: ChangeFeed;
  /** Starts the sweep for lost agents and overdue attempts, and the retention and cache sweeps. */
  startTimers(): void;
  /** Stops the timers and releases every service, in the reverse order of opening. */
  stop(): Promise<void>;
}

export async function openCore(config: CoordinatorConfig, logger: Logger, store: StateStore, opts: CoreOptions): Promise<CoordinatorCore> {
  const releasers: Array<() => Promise<void> | void> = [];
  const stop = async () => {
    for (const r of releasers.splice(0).reverse()) await r();
  };
  try {
    const shared = opts.docs?.kind === 'postgres' ? opts.docs : undefined;
    const tokens = await loadTokens(config.dataDir, { agentTokenFile: config.agentTokenFile, apiTokenFile: config.apiTokenFile }, shared);
    // Who did what (mutations and refused calls), from the API, enrolment and agent connections.
    const audit = await AuditLog.open(config.dataDir, { onError: (err) => logger.error({ err }, 'audit log write failed') });
    releasers.push(() => audit.close());
    // Refusals (which anyone can cause) are recorded at a bounded rate per address and action.
    const auditSink = new RefusalThrottle(audit);
    // Enrolment tokens and per-agent credentials (a corrupt file stops the start, naming it).
    const credentials = await AgentCredentialStore.open(opts.docs ?? config.dataDir, { audit: auditSink });
    // Build secrets: a store its key does not open refuses the start (naming both files).
    const secrets = await SecretStore.open({ dataDir: config.dataDir, keyFile: config.secretsKeyFile, ...(opts.docs ? { docs: opts.docs } : {}), createKey: !shared });
    const cas = new Cas(createBlobStore(config.cas, config.dataDir, config.maxBlobBytes));
    await cas.init();
    const reuse = new ReuseIndex(config.dataDir, config.persist, opts.docs);
    await reuse.init();
    const logs = createLogStore(config.dataDir, opts.sharedLogs ?? null);
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
    if (!opts.replica) await engine.recover();
    releasers.push(() => store.drain());
    releasers.push(() => credentials.idle());
    releasers.push(() => engine.stop());
    // Webhooks (issue 13): loaded only when a hook can exist (the coordinator's own, or
    // builds' own to allowed hosts); stopped before the engine.
    let webhooks: Webhooks | null = null;
    const wh = config.webhooks;
    if (!opts.replica && (wh.hooks.length > 0 || wh.allowedHosts.length > 0)) {
      const mod = await import('./webhooks/webhooks.js');
      const w = await mod.Webhooks.open(wh, { engine, agents, durable: () => store.commit(), secrets, logger });
      webhooks = w;
      releasers.push(() => w.stop());
      logger.info({ hooks: w.targets(), allowed_hosts: wh.allowedHosts }, 'webhooks: sending build and node state changes');
    }

    const keys = await ApiKeyStore.open(opts.docs ?? config.dataDir, { legacyApiToken: true });
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
      isReady: opts.isReady,
      secureCookies: opts.secureCookies,
      events: { feed: events },
      cluster: opts.cluster,
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

    const startTimers = () => {
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
    };
    return { app, hub, engine, store, cas, logs, retention, tokens, keys, credentials, audit, events, startTimers, stop };
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}
