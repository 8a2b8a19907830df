/**
 * An in-process harness for the coordinator engine: fake agent channels that record what
 * the engine sends, hello/frame/finished builders, and test timings. Used by the engine's
 * unit tests (the wire and Docker are covered by the integration tests).
 *
 * The state backend is the embedded one, or PostgreSQL with `KILN_TEST_STATE=postgres`
 * (issue 14: the same engine tests run against both, `scripts/test.sh` runs them twice): a
 * fresh database per data dir (reopening the dir reopens its database), this process
 * holding the lease.
 */
import { pino } from 'pino';
import { AgentRegistry, type AgentChannel } from '../../coordinator/placement/agent-registry.js';
import { Engine } from '../../coordinator/builds/engine.js';
import { ReuseIndex } from '../../coordinator/builds/reuse-index.js';
import { Cas } from '../../coordinator/cas/cas.js';
import { LocalBlobStore } from '../../coordinator/cas/local-blob-store.js';
import { createLogStore } from '../../coordinator/logs/create-log-store.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import { StateStore } from '../../coordinator/state/state-store.js';
import type { StateBackend } from '../../coordinator/state/state-backend.js';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { PgStateBackend } from '../../coordinator/state/pg/pg-state-backend.js';
import { freshDatabase, type TestDatabase } from './postgres.js';
import type { BuildTracing } from '../../coordinator/tracing/build-spans.js';
import { PROTOCOL_VERSION, type Frame, type HelloPayload, type Payload, type Timers, type ToAgentType } from '../../shared/index.js';

export interface Sent {
  type: ToAgentType;
  payload: Record<string, unknown>;
}

export class FakeChannel implements AgentChannel {
  sent: Sent[] = [];
  closed: { code: number; reason: string } | null = null;
  send<T extends ToAgentType>(type: T, payload: Payload<T>): void {
    this.sent.push({ type, payload: payload as Record<string, unknown> });
  }
  close(code: number, reason: string): void {
    this.closed = { code, reason };
  }
  assigns(): Array<Payload<'assign'>> {
    return this.sent.filter((s) => s.type === 'assign').map((s) => s.payload as unknown as Payload<'assign'>);
  }
  cancels(): string[] {
    return this.sent.filter((s) => s.type === 'cancel').map((s) => s.payload.attempt_id as string);
  }
}

let current: Engine | null = null;

/** Lets the engine run what it queued: placement, and the assignments it sends once their attempts are durable. */
export const tick = async (): Promise<void> => {
  await new Promise((r) => setImmediate(r));
  await current?.settled();
};

export function hello(name: string, opts: Partial<HelloPayload> = {}): HelloPayload {
  return {
    protocol_versions: [PROTOCOL_VERSION],
    agent_version: 'test',
    name,
    session: `${name}-session-1`,
    platforms: [{ platform: 'linux/amd64', emulated: false }],
    labels: {},
    max_jobs: 4,
    executor: 'noop',
    docker: null,
    gpus: [],
    running: [],
    ...opts,
  };
}

let seq = 0;
export function frame<T extends 'started' | 'finished' | 'reject' | 'log' | 'heartbeat' | 'resolved' | 'accept'>(type: T, payload: Payload<T>): Frame {
  return { v: 1, type, id: ++seq, payload } as Frame;
}

export function finished(attempt_id: string, status: 'success' | 'failed' | 'cancelled', extra: Partial<Payload<'finished'>> = {}): Payload<'finished'> {
  return {
    attempt_id,
    status,
    exit_code: status === 'failed' ? 1 : null,
    error: status === 'failed' ? 'RUN failed' : null,
    failed_step: null,
    infra: false,
    image_id: status === 'success' ? `sha256:${'a'.repeat(64)}` : null,
    timings: { accepted_at: 1, started_at: 2, finished_at: 3, fetch_ms: 0, build_ms: 1 },
    log_bytes: 0,
    outputs: [],
    base_images: [],
    dockerfile_digest: null,
    ...extra,
  };
}

export const TIMINGS = { heartbeatIntervalMs: 1000, lostAfterMs: 3000, reconnectGraceMs: 5000, cancelGraceMs: 2000, timeoutGraceMs: 1000, acceptTimeoutMs: 2500 };


export interface OpenedEngine {
  engine: Engine;
  store: StateStore;
  logs: LogStorage;
  cas: Cas;
}

/** Which state backend the engine tests run on (`KILN_TEST_STATE`). */
export const TEST_STATE: 'embedded' | 'postgres' = process.env.KILN_TEST_STATE === 'postgres' ? 'postgres' : 'embedded';

const databases = new Map<string, { db: TestDatabase; pg: PgClient }>();
const TEST_LEASE = { epoch: 1, holder: 'engine-harness' };

/** The PostgreSQL backend of data dir `dir` (its own database, created at the first open). */
async function pgDatabase(dir: string): Promise<{ db: TestDatabase; pg: PgClient }> {
  let entry = databases.get(dir);
  if (!entry) {
    const db = await freshDatabase();
    const pg = await openPg(db.url, { applicationName: 'kiln-engine-harness', max: 4 });
    await migrate(pg);
    await pg.query(`INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, $1, $2, 'http://127.0.0.1:1', now() + interval '1 day')`, [TEST_LEASE.epoch, TEST_LEASE.holder]);
    entry = { db, pg };
    databases.set(dir, entry);
  }
  return entry;
}

/** Drops the databases this process made (call in afterAll; nothing under the embedded backend). */
export async function dropTestDatabases(): Promise<void> {
  for (const [dir, { db, pg }] of databases) {
    databases.delete(dir);
    await pg.close();
    await db.drop();
  }
}

/** An engine on real files in `dir` (state, logs, local CAS, reuse index), recovered, with test timings and the given clock. */
export async function openEngine(dir: string, clock: () => number, opts: { concurrencyGroups?: ReadonlyMap<string, number>; timers?: Timers; tracing?: BuildTracing | null } = {}): Promise<OpenedEngine> {
  // PostgreSQL: the state and the logs in the data dir's database, as a coordinator on a shared state keeps them.
  const shared = TEST_STATE === 'postgres' ? await pgDatabase(dir) : null;
  const backend: StateBackend | undefined = shared ? new PgStateBackend({ pg: shared.pg, fence: () => TEST_LEASE, retryMs: { first: 10, max: 100 } }) : undefined;
  const store = await StateStore.open({ dataDir: dir, persist: true, init: true, ...(backend ? { backend } : {}) });
  const logs = createLogStore(dir, shared ? { pg: shared.pg, fence: () => TEST_LEASE } : null);
  const cas = new Cas(new LocalBlobStore(dir, 1 << 30));
  await cas.init();
  const reuse = new ReuseIndex(dir, true);
  await reuse.init();
  const engine = new Engine({ store, logs, cas, reuse, agents: new AgentRegistry(), logger: pino({ level: 'silent' }), timings: TIMINGS, clock, ...opts });
  await engine.recover();
  current = engine;
  return { engine, store, logs, cas };
}
