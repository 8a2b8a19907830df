/**
 * Outgoing webhooks (issue 13): build and node state changes POSTed to the coordinator's
 * hooks (config `webhooks.hooks`) and to each build's own (`notify.webhooks` in its spec).
 * Loaded (dynamic import, coordinator.ts) only when a hook can exist.
 *
 * From the engine's events (`build`, `node`) to deliveries:
 * 1. At the event (synchronously, as the engine emits it) the payload is taken from the
 *    records (event-payloads.ts), once, and only when the state differs from the last one
 *    sent for that build or node (the engine also emits when an attempt ends without a
 *    state change). A build's first event is always its own `build` event, so a receiver
 *    hears of a build before its nodes.
 * 2. Events of one event-loop turn wait for the state store's commit: nothing is announced
 *    before it is durable.
 * 3. Each hook whose filter wants the event gets it in its queue (hook-queue.ts) with a
 *    delivery id of its own; the body is
 *    `{"id": <delivery>, "type": "build"|"node", "at": <ISO time of the change>, "data": ...}`,
 *    signed per attempt with the hook's secret (signature.ts).
 *
 * Nothing here blocks the engine: listeners only copy and queue. Queues, delivery logs and
 * counters are in memory: a restart forgets them (and what was still queued).
 */
import { stat, readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { KilnError, KILN_VERSION, errnoCode, coerceError, hostAllowed, isBuildTerminal, newId, resolveFilter, wantsEvent, webhookHost, webhookPort, type BuildState, type DeliveryViewT, type NodeState, type WebhookEventType, type WebhookFilter, type WebhookViewT } from '../../shared/index.js';
import type { Engine } from '../builds/engine.js';
import type { AgentRegistry } from '../placement/agent-registry.js';
import type { BuildRecord } from '../state/records.js';
import { buildEventData, nodeEventData } from './event-payloads.js';
import { HookQueue, type AttemptOutcome, type DeliveryRecord, type HookCounters, type QueuedEvent } from './hook-queue.js';
import { sendHttp, type HttpAttempt } from './http-sender.js';
import { SIGNATURE_HEADER, signBody } from './signature.js';
import type { WebhookSettings } from './webhook-settings.js';

/** Attempts kept in each hook's delivery log. */
export const DELIVERY_LOG_SIZE = 50;
/** Builds one hook delivers to at once (each build's events stay in order). */
export const LANES_PER_HOOK = 4;
/** Largest retry delay (before Retry-After). */
export const BACKOFF_CAP_MS = 300_000;
/** Builds' hooks kept in memory (idle ones beyond this are forgotten, oldest first). */
export const MAX_BUILD_HOOKS = 1000;
/** Finished builds whose last sent states are remembered (for the dedup of late events). */
const MAX_FINISHED_SEEN = 1000;

/** What the HTTP routes and the metrics ask (http/routes-webhooks.ts). */
export interface WebhookQuery {
  list(): WebhookViewT[];
  /** A hook's view and delivery log (newest first), or undefined. */
  deliveries(id: string): { hook: WebhookViewT; items: DeliveryViewT[] } | undefined;
  /** Delivery counters per hook label (a coordinator hook's name, or `build` for every build's own hooks together). */
  counters(): Map<string, HookCounters>;
}

export interface WebhookDeps {
  engine: Pick<Engine, 'on' | 'off' | 'activeBuild' | 'graph' | 'budgetWaiting'>;
  agents: AgentRegistry;
  /** Resolves once every state change made before the call is durable (StateStore.commit). */
  durable: () => Promise<void>;
  /** The build secrets (per-build hooks name one); null: none. */
  secrets: { values(names: readonly string[]): Array<{ name: string; value: Uint8Array }> } | null;
  logger: Logger;
  send?: (a: HttpAttempt) => Promise<AttemptOutcome>;
  now?: () => number;
}

/** How a hook signs: a secret read at start, a build secret read per attempt, or none. */
type Signer = { kind: 'none' } | { kind: 'key'; key: Uint8Array } | { kind: 'build-secret'; name: string };

interface Hook {
  id: string;
  scope: 'coordinator' | 'build';
  name: string | null;
  build: string | null;
  url: string;
  filter: WebhookFilter;
  signer: Signer;
  queue: HookQueue;
}

interface PendingEvent {
  type: WebhookEventType;
  build: BuildRecord;
  node: string | null;
  state: string;
  at: string;
  data: string;
}

/** Reads a coordinator hook's secret file: not readable by group or others, not empty; its content without surrounding whitespace. */
export async function readHookSecret(hook: string, path: string): Promise<Uint8Array> {
  const setting = `config webhooks.hooks: hook '${hook}': secret_file`;
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) throw new KilnError('E_CONFIG', `${setting} ${path} is readable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); chmod 600 it`);
    const text = (await readFile(path, 'utf8')).trim();
    if (text === '') throw new KilnError('E_CONFIG', `${setting} ${path} is empty`);
    return Buffer.from(text, 'utf8');
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new KilnError('E_CONFIG', `${setting} ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`);
  }
}

function targetOf(url: string): string {
  return new URL(url).origin;
}

function deliveryView(r: DeliveryRecord): DeliveryViewT {
  return {
    delivery: r.delivery,
    event: r.type,
    build: r.build,
    node: r.node,
    state: r.state,
    attempt: r.attempt,
    at: new Date(r.at).toISOString(),
    status: r.status,
    error: r.error,
    duration_ms: r.durationMs,
    response: r.response,
    outcome: r.outcome,
  };
}

export class Webhooks implements WebhookQuery {
  private readonly coordinatorHooks: Hook[] = [];
  private readonly buildHooks = new Map<string, Hook>();
  /** Build hooks' counters of hooks forgotten (MAX_BUILD_HOOKS). */
  private readonly forgotten: HookCounters = { delivered: 0, failed: 0, dropped: 0, retried: 0 };
  /** The last state sent per build, and per node of it. */
  private readonly seen = new Map<string, { state: BuildState; nodes: Map<string, NodeState> }>();
  private readonly finished: string[] = [];
  private batch: PendingEvent[] | null = null;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly lastLog = new Map<string, number>();
  private readonly onBuild = (id: string) => this.buildEvent(id);
  private readonly onNode = (id: string, node: string) => this.nodeEvent(id, node);

  private constructor(
    private readonly settings: WebhookSettings,
    private readonly deps: WebhookDeps,
  ) {}

  /** Reads the coordinator hooks' secret files (a bad one is an E_CONFIG naming it) and subscribes to the engine. */
  static async open(settings: WebhookSettings, deps: WebhookDeps): Promise<Webhooks> {
    const w = new Webhooks(settings, deps);
    for (const h of settings.hooks) {
      const signer: Signer = h.secretFile === null ? { kind: 'none' } : { kind: 'key', key: await readHookSecret(h.name, h.secretFile) };
      w.coordinatorHooks.push(w.makeHook(h.name, 'coordinator', h.name, null, h.url, h, signer));
    }
    deps.engine.on('build', w.onBuild);
    deps.engine.on('node', w.onNode);
    return w;
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  private makeHook(id: string, scope: Hook['scope'], name: string | null, build: string | null, url: string, filter: WebhookFilter, signer: Signer): Hook {
    const log = this.deps.logger;
    const hook: Hook = { id, scope, name, build, url, filter: resolveFilter(filter), signer, queue: null as unknown as HookQueue };
    // Drops and failures are logged at most every 10 s per hook and kind, with the running count.
    const throttled = (kind: string): boolean => {
      const key = `${kind}\0${id}`;
      const last = this.lastLog.get(key) ?? -Infinity;
      if (this.now() - last < 10_000) return true;
      this.lastLog.set(key, this.now());
      return false;
    };
    hook.queue = new HookQueue({
      queueLimit: this.settings.queueLimit,
      maxAttempts: this.settings.maxAttempts,
      backoffBaseMs: this.settings.backoffBaseMs,
      backoffCapMs: BACKOFF_CAP_MS,
      logSize: DELIVERY_LOG_SIZE,
      lanes: LANES_PER_HOOK,
      now: () => this.now(),
      send: (e, attempt, signal) => this.send(hook, e, attempt, signal),
      onDrop: (e, dropped) => {
        if (throttled('drop')) return;
        log.warn({ webhook: id, dropped_total: dropped, delivery: e.delivery, build: e.build, queue_limit: this.settings.queueLimit }, 'webhook queue full: dropped the oldest event');
      },
      onFail: (e, last) => {
        if (throttled('fail')) return;
        log.warn({ webhook: id, failed_total: hook.queue.counters.failed, delivery: e.delivery, event: e.type, build: e.build, node: e.node, attempt: last.attempt, status: last.status, error: last.error }, 'webhook delivery failed');
      },
    });
    return hook;
  }

  private async send(hook: Hook, e: QueuedEvent, attempt: number, signal: AbortSignal): Promise<AttemptOutcome> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': `kiln/${KILN_VERSION}`,
      'x-kiln-event': e.type,
      'x-kiln-delivery': e.delivery,
      'x-kiln-attempt': String(attempt),
    };
    const s = hook.signer;
    if (s.kind === 'key') headers[SIGNATURE_HEADER] = signBody(e.body, s.key);
    else if (s.kind === 'build-secret') {
      const value = this.deps.secrets?.values([s.name])[0]?.value;
      if (value === undefined) return { status: null, error: `not sent: the build secret '${s.name}' is no longer held by the coordinator`, retryAfter: null, final: true, durationMs: 0, response: '' };
      headers[SIGNATURE_HEADER] = signBody(e.body, value);
      value.fill(0);
    }
    return (this.deps.send ?? sendHttp)({ url: hook.url, headers, body: e.body, timeoutMs: this.settings.timeoutMs, signal });
  }

  // ------------------------------------------------------------------ events

  /** true when a hook applies to the build at all (hooks are fixed at submit): else its events cost nothing. */
  private hasHooks(b: BuildRecord): boolean {
    return this.coordinatorHooks.length > 0 || (b.notify?.webhooks.length ?? 0) > 0;
  }

  /** true when some hook of the build wants an event of `type` in `state`. */
  private wanted(b: BuildRecord, type: WebhookEventType, state: string): boolean {
    return this.coordinatorHooks.some((h) => wantsEvent(h.filter, type, state)) || (b.notify?.webhooks ?? []).some((h) => wantsEvent(h, type, state));
  }

  private buildEvent(id: string): void {
    const b = this.deps.engine.activeBuild(id);
    if (b && this.hasHooks(b)) this.emitBuild(b);
  }

  private emitBuild(b: BuildRecord): void {
    let seen = this.seen.get(b.id);
    if (seen?.state === b.state) return;
    if (!seen) this.seen.set(b.id, (seen = { state: b.state, nodes: new Map() }));
    else seen.state = b.state;
    if (this.wanted(b, 'build', b.state)) {
      this.pend({ type: 'build', build: b, node: null, state: b.state, at: new Date(this.now()).toISOString(), data: JSON.stringify(buildEventData(b)) });
    }
    if (isBuildTerminal(b.state)) {
      this.finished.push(b.id);
      // Late node events of a finished build (an attempt confirming its cancel) are deduped against
      // what was sent; builds finished long ago are forgotten (a retry of one starts afresh).
      while (this.finished.length > MAX_FINISHED_SEEN) {
        const old = this.finished.shift()!;
        const s = this.seen.get(old);
        if (s && isBuildTerminal(s.state)) this.seen.delete(old);
      }
    }
  }

  private nodeEvent(id: string, name: string): void {
    const b = this.deps.engine.activeBuild(id);
    if (!b || !this.hasHooks(b)) return;
    if (!this.seen.has(id)) this.emitBuild(b);
    const node = this.deps.engine.graph(b).byName.get(name);
    const seen = this.seen.get(id);
    if (!node || !seen || seen.nodes.get(name) === node.state) return;
    seen.nodes.set(name, node.state);
    if (!this.wanted(b, 'node', node.state)) return;
    const now = this.now();
    const data = nodeEventData(b, node, this.deps.agents, now, node.state === 'ready' ? this.deps.engine.budgetWaiting(b, node) : null);
    this.pend({ type: 'node', build: b, node: name, state: node.state, at: new Date(now).toISOString(), data: JSON.stringify(data) });
  }

  /** Collects the turn's events; once the state store has committed them, they are queued. */
  private pend(e: PendingEvent): void {
    if (this.stopped) return;
    if (this.batch) {
      this.batch.push(e);
      return;
    }
    this.batch = [e];
    setImmediate(() => {
      const batch = this.batch ?? [];
      this.batch = null;
      const durable = this.deps.durable();
      this.chain = this.chain
        .then(() => durable)
        .then(
          () => this.route(batch),
          (err: unknown) => this.deps.logger.error({ err: coerceError(err).message, events: batch.length }, 'webhook events dropped: the state store did not commit'),
        );
    });
  }

  private route(batch: PendingEvent[]): void {
    if (this.stopped) return;
    for (const e of batch) {
      const hooks = [...this.coordinatorHooks, ...this.hooksOf(e.build)];
      for (const hook of hooks) {
        if (!wantsEvent(hook.filter, e.type, e.state)) continue;
        const delivery = newId('d');
        const body = `{"id":${JSON.stringify(delivery)},"type":"${e.type}","at":"${e.at}","data":${e.data}}`;
        hook.queue.push({ delivery, type: e.type, build: e.build.id, node: e.node, state: e.state, body });
      }
    }
  }

  /** The build's own hooks (made on its first event). */
  private hooksOf(b: BuildRecord): Hook[] {
    const list = b.notify?.webhooks ?? [];
    const out: Hook[] = [];
    list.forEach((h, i) => {
      const id = `${b.id}:${i + 1}`;
      // Checked at submit, and again here: a coordinator restarted with a narrower allow-list
      // does not call what it no longer allows (the event is logged, at a bounded rate, and not sent).
      if (!hostAllowed(webhookHost(h.url), this.settings.allowedHosts, webhookPort(h.url))) {
        const last = this.lastLog.get('denied') ?? -Infinity;
        if (this.now() - last >= 10_000) {
          this.lastLog.set('denied', this.now());
          this.deps.logger.warn({ webhook: id, build: b.id }, "a build's webhook is no longer in webhooks.allowed_hosts: its events are not sent (logged at most every 10 s)");
        }
        return;
      }
      let hook = this.buildHooks.get(id);
      if (!hook) {
        this.forgetIdleBuildHooks();
        hook = this.makeHook(id, 'build', null, b.id, h.url, h, h.secret === undefined ? { kind: 'none' } : { kind: 'build-secret', name: h.secret });
        this.buildHooks.set(id, hook);
      }
      out.push(hook);
    });
    return out;
  }

  private forgetIdleBuildHooks(): void {
    if (this.buildHooks.size < MAX_BUILD_HOOKS) return;
    const idle = [...this.buildHooks.values()].filter((h) => h.queue.queued === 0 && h.queue.inFlight === 0).sort((a, b) => a.queue.lastActive - b.queue.lastActive);
    for (const h of idle.slice(0, Math.max(1, this.buildHooks.size - MAX_BUILD_HOOKS + 1))) {
      this.buildHooks.delete(h.id);
      for (const kind of ['drop', 'fail']) this.lastLog.delete(`${kind}\0${h.id}`);
      for (const k of ['delivered', 'failed', 'dropped', 'retried'] as const) this.forgotten[k] += h.queue.counters[k];
    }
  }

  // ------------------------------------------------------------------ queries

  private view(h: Hook): WebhookViewT {
    const q = h.queue;
    const last = q.last();
    return {
      id: h.id,
      scope: h.scope,
      name: h.name,
      build: h.build,
      target: targetOf(h.url),
      events: [...h.filter.events],
      build_states: h.filter.build_states ? [...h.filter.build_states] : null,
      node_states: h.filter.node_states ? [...h.filter.node_states] : null,
      signed: h.signer.kind !== 'none',
      queued: q.queued,
      in_flight: q.inFlight,
      ...q.counters,
      last: last ? deliveryView(last) : null,
    };
  }

  list(): WebhookViewT[] {
    return [...this.coordinatorHooks, ...this.buildHooks.values()].map((h) => this.view(h));
  }

  deliveries(id: string): { hook: WebhookViewT; items: DeliveryViewT[] } | undefined {
    const h = this.coordinatorHooks.find((x) => x.id === id) ?? this.buildHooks.get(id);
    return h ? { hook: this.view(h), items: h.queue.deliveries().map(deliveryView) } : undefined;
  }

  counters(): Map<string, HookCounters> {
    const out = new Map<string, HookCounters>();
    for (const h of this.coordinatorHooks) out.set(h.id, { ...h.queue.counters });
    const builds = { ...this.forgotten };
    for (const h of this.buildHooks.values()) for (const k of ['delivered', 'failed', 'dropped', 'retried'] as const) builds[k] += h.queue.counters[k];
    out.set('build', builds);
    return out;
  }

  /** Hosts of the coordinator's hooks (the start-up log line). */
  targets(): string[] {
    return this.coordinatorHooks.map((h) => `${h.id} -> ${webhookHost(h.url)}`);
  }

  /** Resolves once every queued delivery ended (tests). */
  async idle(): Promise<void> {
    await this.chain;
    await Promise.all([...this.coordinatorHooks, ...this.buildHooks.values()].map((h) => h.queue.idle()));
  }

  /** Unsubscribes, aborts deliveries in flight and drops what waits (logged with the count). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.deps.engine.off('build', this.onBuild);
    this.deps.engine.off('node', this.onNode);
    let left = 0;
    for (const h of [...this.coordinatorHooks, ...this.buildHooks.values()]) left += await h.queue.close();
    if (left > 0) this.deps.logger.warn({ undelivered: left }, 'webhooks stopped with deliveries left (kept in memory only: not sent)');
  }
}
