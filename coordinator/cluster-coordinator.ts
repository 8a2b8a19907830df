/**
 * A coordinator on a shared PostgreSQL state (issue 14): one process of several that share
 * one database, of which the one holding the leader lease (`cluster/leader-lease.ts`) runs
 * the builds and the others stand by.
 *
 * The process listens from the start and answers as a standby (`http/standby-app.ts`:
 * writes and agents are sent to the leader). When it wins the lease it reads the whole state
 * from the database (the PostgreSQL backend, every write fenced by the lease's epoch), opens
 * the coordinator's services over it (`openCore`), adopts the agents that reconnect (their
 * running attempts resume, as after a restart) and serves. When it loses the lease (a pause
 * longer than the lease, the database away for as long) it stops them at once: its agents
 * are closed with NOT_LEADER naming the new leader, and whatever it still tries to write is
 * refused by the fencing check. The role changes one at a time, in the order they happen.
 */
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import { CLOSE_CODES, coerceError, KilnError, NotLeaderError, notLeaderReason } from '../shared/index.js';
import { LeaderLease } from './cluster/leader-lease.js';
import { PgLeaseStore } from './cluster/lease-store.js';
import { checkSharedCas } from './cluster/shared-cas.js';
import type { CoordinatorConfig } from './config.js';
import { openCore, type CoordinatorCore, type RunningCoordinator } from './coordinator-core.js';
import { listen, listenUrl, loadTls, watchTls } from './listen.js';
import { AgentCredentialStore } from './access/agent-credentials.js';
import { ApiKeyStore } from './access/api-keys.js';
import { TokenCheck } from './http/auth.js';
import { createStandbyApp } from './http/standby-app.js';
import { lockDataDir, loadTokens, prepareDataDir } from './state/data-dir.js';
import { migrate } from './state/pg/migrate.js';
import { openPg } from './state/pg/pg-client.js';
import { PgDocuments } from './state/pg/pg-documents.js';
import { PgStateBackend } from './state/pg/pg-state-backend.js';
import { StateStore } from './state/state-store.js';

/** How often a standby applies the leader's new journal rows to its copy of the state. */
const REPLICA_POLL_MS = 250;
/** Pause before trying to lead again after a failed takeover (the lease is given up meanwhile). */
const RETRY_LEAD_MS = 1_000;

export async function startClusterCoordinator(config: CoordinatorConfig, logger: Logger): Promise<RunningCoordinator> {
  if (config.state.kind !== 'postgres') throw new Error('startClusterCoordinator needs a PostgreSQL state');
  const stateUrl = config.state.url;
  const releasers: Array<() => Promise<void> | void> = [];
  const cleanup = async () => {
    for (const r of releasers.splice(0).reverse()) await r();
  };
  try {
    const tls = await loadTls(config);
    // The data dir keeps this process's own files (logs, the local CAS, tokens); the lock
    // keeps a second process off it.
    await prepareDataDir(config.dataDir);
    releasers.push(await lockDataDir(config.dataDir, (stale) => logger.warn({ stale: stale.holder, reason: stale.reason }, stale.message)));
    // State writes and reads, and the lease on a client of its own (renewals never queue behind writes).
    // A write transaction idle for a lease TTL is ended by the server: a paused leader must not
    // hold the lease row (kiln_fence's FOR SHARE) against a takeover past its lease.
    const pg = await openPg(stateUrl, { applicationName: 'kiln-coordinator', max: 8, idleInTransactionTimeoutMs: config.leaseTtlMs });
    releasers.push(() => pg.close());
    const applied = await migrate(pg);
    // Others reach this coordinator at its advertised URL (the lease, agents sent here, the cluster view): a wildcard address names no one.
    if (!config.advertiseUrl && ['0.0.0.0', '::', ''].includes(config.listen.host)) {
      throw new KilnError('E_CONFIG', `listen ${config.listen.host || '*'}:${config.listen.port} with a PostgreSQL state: set advertise_url (--advertise-url, KILN_ADVERTISE_URL) to the URL other coordinators, agents and clients reach this one at`);
    }
    // A takeover that meets a lease row locked by a paused leader's transaction fails its poll
    // (and tries again at the next) instead of waiting, so this coordinator goes on being seen.
    const leasePg = await openPg(stateUrl, { applicationName: 'kiln-coordinator-lease', max: 2, lockTimeoutMs: Math.max(200, Math.floor(config.leaseTtlMs / 5)) });
    releasers.push(() => leasePg.close());

    let lease: LeaderLease | null = null;
    // Keys, credentials, secrets, reuse records and generated tokens: documents in the database,
    // written (fenced) only by the leader, read by every coordinator.
    const docs = new PgDocuments({ pg, fence: () => lease?.token ?? null });
    // Who may ask a standby for the cluster view: the same tokens and keys as on the leader,
    // read again whenever the leader changed them.
    const tokens = await loadTokens(config.dataDir, { agentTokenFile: config.agentTokenFile, apiTokenFile: config.apiTokenFile }, docs);
    const keys = await ApiKeyStore.open(docs, { legacyApiToken: true });
    const credentials = await AgentCredentialStore.open(docs);
    let reloadFailed = false;
    let reloading = false;
    const reloadTimer = setInterval(() => {
      // the leader's own stores are current; one reload at a time (the database may be away)
      if (core || reloading) return;
      reloading = true;
      Promise.all([keys.reload(), credentials.reload()])
        .then(
          () => (reloadFailed = false),
          (err: unknown) => {
            if (!reloadFailed) logger.warn({ err: coerceError(err).message }, 'reading the API keys and agent credentials again failed (the last ones read stay in use)');
            reloadFailed = true;
          },
        )
        .finally(() => (reloading = false));
    }, Math.min(1_000, Math.floor(config.leaseTtlMs / 4)));
    reloadTimer.unref();
    releasers.push(() => clearInterval(reloadTimer));

    let core: CoordinatorCore | null = null;
    /** Ends the current term's fence (set while leading). */
    let endTerm: (() => void) | null = null;
    let ready = false;
    const leaderUrl = () => lease?.leaderUrl ?? null;
    // On the main pool: views (any reader may ask) never queue the lease's renewals.
    const views = new PgLeaseStore(pg);
    const clusterView = () => views.view(3 * config.leaseTtlMs);
    let url = '';
    /** Set once the coordinator is shutting down. */
    let stopping = false;
    // The standby's own copy of the state, for reads (see openReplica below).
    let replica: { core: CoordinatorCore; backend: PgStateBackend } | null = null;
    const standby = createStandbyApp({
      leader: leaderUrl,
      get self() {
        return url;
      },
      cluster: clusterView,
      tokens: new TokenCheck(tokens, keys, credentials),
      replica: () => (replica && !core ? replica.core.app.fetch : null),
    });
    const fetch = (req: Request) => (core ? core.app.fetch(req) : standby.fetch(req));
    const server = tls
      ? (createAdaptorServer({ fetch, createServer: tls.mod.createHttpsServer, serverOptions: { cert: tls.pair.cert, key: tls.pair.key } }) as HttpsServer)
      : (createAdaptorServer({ fetch }) as Server);
    server.on('upgrade', (req, socket, head) => (core ? core.hub.handleUpgrade(req, socket, head) : standby.handleUpgrade(req, socket, head)));
    const port = await listen(server, config.listen.host, config.listen.port);
    const tlsReloader = watchTls(server, config, tls, port, logger);
    if (tlsReloader) releasers.push(() => tlsReloader.stop());
    url = config.advertiseUrl ?? listenUrl(config.listen.host, port, tls !== null);
    // One CAS for every coordinator of the state (a local-disk one only while alone; this URL's own earlier rows are not another coordinator).
    await checkSharedCas(pg, config.cas, config.dataDir, config.leaseTtlMs, url, logger);
    releasers.push(
      () =>
        new Promise<void>((resolve) => {
          standby.close();
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );

    /**
     * A standby's copy of the state, for reads: the whole state read as a leader reads it, the
     * services opened over it read-only (nothing recovered, no timers, no webhooks; every write
     * refused by a fence that is always closed), then the leader's journal rows applied as they
     * come (every REPLICA_POLL_MS). When rows it had not read were folded into a newer snapshot,
     * it reads the state again.
     */
    const openReplica = async (): Promise<void> => {
      const closed = () => null;
      const backend = new PgStateBackend({ pg, fence: closed });
      const store = await StateStore.open({ dataDir: config.dataDir, persist: true, init: false, backend });
      const c = await openCore(config, logger, store, {
        replica: true,
        isReady: () => false,
        secureCookies: tls !== null,
        cluster: clusterView,
        docs: new PgDocuments({ pg, fence: closed }),
        sharedLogs: { pg, fence: closed },
      });
      c.engine.relist();
      replica = { core: c, backend };
      logger.info({ builds: store.data.builds.size, journal_seq: backend.lastSeq }, 'standby: a copy of the state is open for reads');
    };
    const closeReplica = async (): Promise<void> => {
      const r = replica;
      replica = null;
      await r?.core.stop().catch((err: unknown) => logger.warn({ err: coerceError(err).message }, 'closing the standby copy of the state'));
    };
    let refreshing = false;
    let refreshFailed = false;
    const refreshReplica = async (): Promise<void> => {
      if (core || stopping) return;
      try {
        if (!replica) await openReplica();
        else if ((await replica.backend.catchUp(replica.core.store.data)) > 0) replica.core.engine.relist();
        // the copy's keys and credentials, read again when the leader changed them
        if (replica) await Promise.all([replica.core.keys.reload(), replica.core.credentials.reload()]);
        refreshFailed = false;
      } catch (err) {
        if (!refreshFailed) logger.warn({ err: coerceError(err).message }, 'the standby copy of the state could not be brought up to date: reading it again');
        refreshFailed = true;
        await closeReplica();
      }
    };
    const replicaTimer = setInterval(() => {
      if (refreshing) return;
      refreshing = true;
      void refreshReplica().finally(() => (refreshing = false));
    }, REPLICA_POLL_MS);
    replicaTimer.unref();
    releasers.push(async () => {
      clearInterval(replicaTimer);
      while (refreshing) await new Promise((r) => setTimeout(r, 10));
      await closeReplica();
    });

    /** Becomes the leader: reads the state, opens the services, serves. */
    const lead = async (epoch: number) => {
      const t0 = performance.now();
      // The copy goes (its services would share the data dir's files); the leader reads the state itself.
      while (refreshing) await new Promise((r) => setTimeout(r, 10));
      await closeReplica();
      // Every write of this term is fenced by the token it started with, and by nothing once
      // it ends: a core still stopping after the lease was lost never writes under a later
      // epoch this process may win meanwhile.
      const token = lease?.token;
      if (!token) throw new Error('the lease was lost before the state was read');
      let live = true;
      const fence = () => (live ? token : null);
      endTerm = () => {
        live = false;
      };
      const termDocs = new PgDocuments({ pg, fence });
      const b = new PgStateBackend({
        pg,
        fence,
        onHealth: (healthy, err) => {
          if (healthy) logger.info({ state: pg.location }, 'the database answers again: writes resumed');
          else logger.error({ state: pg.location, err: err?.message }, 'the database does not answer: writes wait (not ready)');
        },
      });
      const store = await StateStore.open({ dataDir: config.dataDir, persist: true, init: false, backend: b });
      // Logs in the database too (fenced like the state), so a standby that takes over serves them all.
      const c: CoordinatorCore = await openCore(config, logger, store, {
        isReady: () => ready && b.healthy && c.logs.healthy,
        secureCookies: tls !== null,
        cluster: clusterView,
        docs: termDocs,
        sharedLogs: {
          pg,
          fence,
          onHealth: (healthy) => logger[healthy ? 'info' : 'error']({ state: pg.location }, healthy ? 'log writes resumed' : 'log writes wait: the database does not answer'),
        },
      });
      c.startTimers();
      core = c;
      ready = true;
      logger.info(
        { url, epoch, state: pg.location, builds: store.data.builds.size, journal_seq: b.lastSeq, took_ms: Math.round(performance.now() - t0) },
        'leading: the state is read and the coordinator serves (agents reconnecting resume their attempts)',
      );
    };

    /** Stops leading: at once when the lease was lost (agents are sent to the new leader), or at shutdown. */
    const stepDown = async (why: 'lost' | 'shutdown') => {
      const c = core;
      const end = endTerm;
      ready = false;
      core = null;
      endTerm = null;
      // The lease is gone: nothing of this term may land any more (a shutdown writes its last first).
      if (why === 'lost') end?.();
      if (!c) return;
      if (why === 'lost') {
        logger.warn({ url, leader: leaderUrl() }, 'no longer the leader: stopping the builds here (the new leader adopts them)');
        c.hub.closeAll(CLOSE_CODES.NOT_LEADER, notLeaderReason(leaderUrl()));
        // Open requests and streams (a log follow) end now: their clients go to the new leader.
        server.closeAllConnections();
      } else c.hub.closeAll();
      await c.stop().catch((err: unknown) => logger.error({ err: coerceError(err).message }, 'stopping after the lease was lost'));
      end?.();
    };

    // Role changes run one at a time, in order.
    let queue: Promise<void> = Promise.resolve();
    const newLease = (): LeaderLease => {
      const l = new LeaderLease({ pg: leasePg, url, ttlMs: config.leaseTtlMs, renewMs: Math.max(200, Math.floor(config.leaseTtlMs / 5)), pollMs: Math.min(1_000, Math.floor(config.leaseTtlMs / 4)), logger });
      l.on('role', (role, epoch) => {
        queue = queue.then(async () => {
          if (lease !== l) return;
          if (role === 'standby') return stepDown('lost');
          try {
            await lead(epoch);
          } catch (err) {
            // Could not read the state or open the services: give the lease up for another coordinator and try again.
            logger.error({ err: coerceError(err).message, epoch }, 'taking the lead failed: giving the lease up');
            await stepDown('lost');
            await l.stop();
            await new Promise((r) => setTimeout(r, RETRY_LEAD_MS));
            if (lease === l && !stopping) {
              lease = newLease();
              await lease.start();
            }
          }
        });
      });
      return l;
    };
    lease = newLease();
    releasers.push(async () => {
      stopping = true;
      const l = lease;
      lease = null;
      await queue;
      await stepDown('shutdown');
      // Given up last: a standby takes over at its next poll, after this process wrote its last.
      await l?.stop();
    });
    await lease.start();
    await queue;
    // A standby answers reads from its copy as soon as it is up.
    if (!core) await refreshReplica();
    logger.info({ url, role: core ? 'leader' : 'standby', leader: leaderUrl(), state: pg.location, migrations_applied: applied.applied.length }, 'coordinator listening');

    const current = (): CoordinatorCore => {
      if (!core) throw new NotLeaderError(leaderUrl());
      return core;
    };
    return {
      url,
      port,
      dataDir: config.dataDir,
      get statePath() {
        return pg.location;
      },
      initialized: false,
      get recovered() {
        const c = core;
        return c ? `recovered: ${c.store.data.builds.size} active builds, ${c.store.data.archived.size} finished` : `standby (leader: ${leaderUrl() ?? 'none yet'})`;
      },
      tokens,
      get engine() {
        return current().engine;
      },
      get store() {
        return current().store;
      },
      get cas() {
        return current().cas;
      },
      get retention() {
        return current().retention;
      },
      keys,
      get audit() {
        return current().audit;
      },
      get events() {
        return current().events;
      },
      role: () => (core ? 'leader' : 'standby'),
      reload: (reason) => {
        if (tlsReloader) tlsReloader.reload(reason);
        else logger.info({ reason }, 'nothing to reload (no TLS configured)');
      },
      stop: cleanup,
    };
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}
