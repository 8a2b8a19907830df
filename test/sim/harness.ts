/**
 * Deterministic simulation of the coordinator engine with N simulated agents in one
 * process (reliability catalogue K1): `runSimulation(seed)` builds the seed's scenario
 * (workload.ts), runs it on a fake clock and returns the invariant violations found, the
 * trace's tail and a digest of the whole trace (equal for two runs of one seed).
 *
 * The real Engine, AgentRegistry, Scheduler, StateStore (persist: false, so commits
 * resolve at once), LogStore and CAS (files in a temp dir, on /dev/shm when there is one)
 * run unchanged; the engine gets the simulated clock and a `defer` queue for its
 * placement pass. Both ends of every connection run the real session modules: the
 * agent's (agent/agent-session.ts, in a simulated process, sim-agent.ts, with a simulated
 * build, sim-executor.ts) and the coordinator's (coordinator/agents/agent-session.ts,
 * sim-hub.ts), on the simulated clock, with their timers on the event queue. The network
 * (sim-net.ts, which documents the fault model) is simulated.
 *
 * One event loop drives everything: pop the earliest event (a frame arriving at either
 * end, an agent timer, a sweep every 500 ms, a submission, a cancel, a fault), advance the
 * clock to it, run it to the end (awaiting the engine), run the deferred placement
 * (usually right away; sometimes after the next event at the same instant, as a busy
 * event loop would), let background microtasks settle, check the step invariants
 * (invariants.ts). Every random choice comes from the seed's mulberry32 streams.
 *
 * Phases: faults (agent kills and graceful stops, connection breaks, partitions, stalls,
 * latency spikes, disk-full spells, infra failures and hangs, a coordinator restart, operator pauses and node
 * retries) only in the first 30 s; then every dead agent restarts and the run continues
 * until the system is quiescent (every build terminal, no attempt holding a slot, every
 * agent connected with no jobs) or a deadline long enough for lost detection, backoff,
 * circuit breakers, timeouts and the remaining work: not quiescent by then is a liveness
 * violation. At the end the engine stops and the stored logs are compared with what the
 * agents produced.
 *
 * A coordinator restart happens between two events: the old engine stops (its pending
 * placement pass is dropped), every connection dies (agents get a reset behind the frames
 * already on the wire; frames toward the coordinator are lost), the state is read back as
 * new objects (JSON), and after the down time (connects are refused meanwhile) a new
 * Engine, AgentRegistry, LogStore and hub start on it and `recover()`. Since commits are
 * immediate (persist: false), a crash *inside* a commit is not simulated (see
 * state-store.journal.test.ts for that); the CAS and reuse index carry over as they are.
 * API calls made while it is down are retried every 500 ms.
 *
 * A leader failover (issue 14; scenarios without a restart, drawn last so other seeds keep
 * their scenario) runs the whole seed on a shared state (sim-shared-state.ts: the journal
 * rows of every commit, tagged with the lease epoch, as the PostgreSQL backend keeps them):
 * the leader's connections die as in a crash but its engine lives on and wakes up to sweep
 * (a paused process), a standby takes the lease over after the down time (the epoch moves
 * on, so the old engine's commits are refused), replays the rows into a new state and
 * starts a new Engine on it; agents reconnect to it. Every invariant holds across it.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { AgentRegistry } from '../../coordinator/placement/agent-registry.js';
import { Engine, type EngineTimings } from '../../coordinator/builds/engine.js';
import { ReuseIndex } from '../../coordinator/builds/reuse-index.js';
import { Cas } from '../../coordinator/cas/cas.js';
import { LocalBlobStore } from '../../coordinator/cas/local-blob-store.js';
import { LogStore } from '../../coordinator/logs/log-store.js';
import type { BuildRecord } from '../../coordinator/state/records.js';
import { StateStore } from '../../coordinator/state/state-store.js';
import { coerceError, NotLeaderError, SLOT_HOLDING_ATTEMPT_STATES, isBuildTerminal, isKilnError, isNodeTerminal, validateSpec } from '../../shared/index.js';
import { InvariantChecker } from './invariants.js';
import { SimSharedState } from './sim-shared-state.js';
import { Rng } from './rng.js';
import { SimAgent } from './sim-agent.js';
import { SimHub } from './sim-hub.js';
import { Net, Path } from './sim-net.js';
import { describeScenario, makeScenario, type Fault, type ScenarioOptions } from './workload.js';
import { scrub, World, type Violation } from './world.js';

/** Engine timings of the simulated coordinator (as in the engine unit tests). */
export const SIM_TIMINGS: EngineTimings = {
  heartbeatIntervalMs: 1000,
  lostAfterMs: 3000,
  reconnectGraceMs: 5000,
  cancelGraceMs: 2000,
  timeoutGraceMs: 1000,
  acceptTimeoutMs: 2500,
};

const START = 1_000_000;
const SWEEP_EVERY_MS = 500;
/** After the faults stop: lost detection, cancel grace, accept timeout, backoff, an open breaker, a hung build's timeout. */
const SETTLE_BASE_MS = 90_000;
/** ... plus this much per node for the work left (fetch + build + log flush, one at a time). */
const SETTLE_PER_NODE_MS = 6000;

export interface SimOptions extends ScenarioOptions {
  /** Trace lines kept for the report (default 200). */
  traceLines?: number;
  /** Where the per-run data dir goes (default /dev/shm when present, else the OS temp dir). */
  dataRoot?: string;
  /** Stop at the first violation (default true). */
  stopAtFirst?: boolean;
  /** A shared state that loses its last rows at a takeover (acknowledged writes gone): the harness's own test breaks it on purpose. */
  loseRowsAtTakeover?: number;
  /** Changes the system under test before the run (the harness's own tests break it on purpose). */
  mutate?: (sys: { engine: Engine; logs: LogStore; registry: AgentRegistry }) => void;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  violations: Violation[];
  /** The last trace lines (ending at the first violation when stopAtFirst). */
  trace: string[];
  /** Earlier trace lines about the nodes the violations name (their whole story, up to 150 lines). */
  focus: string[];
  /** sha256 of the whole trace: equal for two runs of the same seed. */
  traceDigest: string;
  scenario: string;
  stats: {
    events: number;
    simMs: number;
    builds: Record<string, number>;
    attempts: Record<string, number>;
    faults: number;
    quiescentAtMs: number | null;
    /** Frames naming a no longer current attempt, by type. */
    notCurrent: Record<string, number>;
    /** Frames handled from a connection the agent had already replaced. */
    staleConnection: number;
    /** Commits of a deposed leader the shared state refused (leader failover; 0 without one). */
    fencedWrites: number;
  };
}

export function defaultDataRoot(): string {
  return existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
}

export async function runSimulation(seed: number, opts: SimOptions = {}): Promise<SimResult> {
  const root = new Rng(seed);
  const scenario = makeScenario(root.fork(), opts);
  const netRng = root.fork();
  const schedRng = root.fork();
  const world = new World(START, Math.max(opts.traceLines ?? 200, 20_000));
  const stopAtFirst = opts.stopAtFirst ?? true;
  const dataRoot = opts.dataRoot ?? defaultDataRoot();
  await mkdir(dataRoot, { recursive: true });
  const dir = await mkdtemp(join(dataRoot, `kiln-sim-${seed}-`));
  let events = 0;
  let quiescentAt: number | null = null;
  const builds: BuildRecord[] = [];
  try {
    // What survives a coordinator restart: the state (persist: false, so every commit is
    // already "on disk"), the CAS, the reuse index, the log files.
    // A run with a leader failover keeps its state as the shared (PostgreSQL) state would:
    // journal rows a new leader replays (sim-shared-state.ts).
    const shared = scenario.faults.some((f) => f.kind === 'failover') ? new SimSharedState() : null;
    let store = await StateStore.open({ dataDir: dir, persist: shared !== null, init: true, ...(shared ? { backend: shared.backend() } : {}) });
    const cas = new Cas(new LocalBlobStore(dir, 1 << 30), () => world.now);
    await cas.init();
    const reuse = new ReuseIndex(dir, false);
    await reuse.init();
    const net = new Net(world, netRng);
    const produced = new Map<string, Buffer[]>();
    const checker = new InvariantChecker(world, () => builds, new AgentRegistry(), produced);

    // The coordinator process: engine, registry, log store and hub; replaced by a restart.
    const deferred: Array<() => void> = [];
    let engine!: Engine;
    let logs!: LogStore;
    let registry!: AgentRegistry;
    let up = false;
    const bootCoordinator = async () => {
      logs = new LogStore(dir);
      registry = new AgentRegistry();
      engine = new Engine({
        store,
        logs,
        cas,
        reuse,
        agents: registry,
        logger: pino({ level: 'silent' }),
        timings: SIM_TIMINGS,
        clock: () => world.now,
        defer: (fn) => deferred.push(fn),
      });
      opts.mutate?.({ engine, logs, registry });
      await engine.recover();
      checker.setRegistry(registry);
      const hub = new SimHub(world, net, engine, SIM_TIMINGS, checker);
      net.coord = hub;
      net.coordinatorUp = true;
      up = true;
    };
    /** The coordinator process dies between two events (every commit is done, some frames are in flight). */
    /** Every connection dies (agents get a reset behind the frames already on the wire). */
    const cutConnections = (why: string) => {
      up = false;
      net.coordinatorUp = false;
      deferred.length = 0; // a placement pass that had not run yet dies with the process
      for (const a of agents.values()) {
        for (const conn of a.path.conns) {
          if (conn.coordState === 'closed') continue;
          net.abort(conn, 'network', { coord: false, agent: true }, why);
          conn.coordState = 'closed';
        }
      }
    };
    const crashCoordinator = async () => {
      cutConnections('the coordinator process died');
      await engine.stop();
      await logs.closeAll();
      // A restarted process reads the state back: new objects, nothing of the old engine's in memory.
      const data = store.data;
      data.builds = new Map(Object.entries(JSON.parse(JSON.stringify(Object.fromEntries(data.builds))) as Record<string, BuildRecord>));
      for (let i = 0; i < builds.length; i++) builds[i] = data.builds.get(builds[i]!.id) ?? builds[i]!;
    };
    /**
     * Leader failover: the leader pauses (its connections die; its engine lives on, and wakes up
     * to sweep, whose writes the shared state refuses once the lease moved on); a standby takes
     * the lease over after `downMs`, reads the state back from the journal rows and serves.
     */
    const failover = (f: Extract<Fault, { kind: 'failover' }>) => {
      if (!shared) return;
      const zombie = engine;
      const zombieLogs = logs;
      cutConnections('the leader stopped answering (paused)');
      for (let k = 1; k <= 3; k++) {
        world.after(Math.floor((f.zombieMs * k) / 3), 'the old leader wakes up and sweeps', async () => {
          await zombie.sweep().catch((err: unknown) => world.log(`old leader: ${scrub(world, coerceError(err).message)}`));
        });
      }
      world.after(f.zombieMs + 1, 'the old leader stops', async () => {
        await zombie.stop().catch(() => {});
        await zombieLogs.closeAll();
      });
      world.after(f.downMs, 'a standby takes the lease over', async () => {
        const epoch = shared.takeOver();
        // The shared log store is fenced as the state is (issue 14): the deposed leader writes no log byte or header from now on.
        const fenced = () => Promise.reject(new NotLeaderError(null, `epoch ${epoch - 1} is over: log write refused`));
        Object.assign(zombieLogs, { append: fenced, appendNote: fenced, ensure: fenced });
        if (opts.loseRowsAtTakeover) shared.rows.splice(-opts.loseRowsAtTakeover);
        store = await StateStore.open({ dataDir: dir, persist: true, init: true, backend: shared.backend() });
        for (let i = 0; i < builds.length; i++) builds[i] = store.data.builds.get(builds[i]!.id) ?? builds[i]!;
        await bootCoordinator();
        world.log(`standby leads at epoch ${epoch}; state read back from ${shared.rows.length} journal rows`);
      });
    };
    await bootCoordinator();

    /** Runs an API call now, or once the coordinator is up again. */
    const api = (label: string, fn: () => Promise<void>) => {
      const attempt = async (): Promise<void> => {
        if (!up) {
          world.after(500, `${label} (coordinator down, retry)`, attempt);
          return;
        }
        await fn();
      };
      return attempt;
    };

    const agents = new Map<string, SimAgent>();
    for (const a of scenario.agents) {
      const path = new Path(a.cfg.name, netRng.fork(), a.path);
      const agent = new SimAgent(a.cfg, { world, net, cas, produced, odds: () => (world.faultsActive ? scenario.odds : { fail: scenario.odds.fail, infra: 0, hang: 0 }) }, path, root.fork());
      agents.set(a.cfg.name, agent);
      world.at(START + a.startAt, `start ${a.cfg.name}`, () => agent.start());
    }

    // submissions and cancels (API calls)
    let submitted = 0;
    for (const b of scenario.builds) {
      world.at(
        START + b.at,
        `submit ${b.name}`,
        api(`submit ${b.name}`, async () => {
          const r = validateSpec({ name: b.name, nodes: b.nodes, ...b.budget }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
          if (!r.ok) throw new Error(`the simulated spec ${b.name} is invalid: ${JSON.stringify(r.errors)}`);
          const rec = await engine.submit(r.value, { reuse: b.reuse });
          builds.push(rec);
          submitted++;
          world.log(`api submit ${b.name} -> ${world.aliasBuild(rec.id)} (${rec.nodes.map((n) => n.name).join(', ')})`);
          if (b.cancelAt === null) return;
          world.at(
            START + b.cancelAt,
            `cancel ${b.name}`,
            api(`cancel ${b.name}`, async () => {
              try {
                await engine.cancel(rec.id);
                world.log(`api cancel ${world.aliasBuild(rec.id)}`);
              } catch (err) {
                if (!isKilnError(err, 'E_CONFLICT')) throw err;
                world.log(`api cancel ${world.aliasBuild(rec.id)}: ${scrub(world, coerceError(err).message)}`);
              }
            }),
          );
        }),
      );
    }

    // faults and operator actions
    let faults = 0;
    const setControl = async (name: string, control: 'active' | 'paused' | 'draining'): Promise<boolean> => {
      try {
        await engine.setAgentControl(name, control, control === 'active' ? null : 'simulated operator');
        world.log(`api agent ${name} -> ${control}`);
        return true;
      } catch (err) {
        if (!isKilnError(err, 'E_NOT_FOUND')) throw err;
        world.log(`api agent ${name} -> ${control}: ${coerceError(err).message}`);
        return false;
      }
    };
    /** An operator retries a failed node (of a build that was not cancelled), if there is one. */
    const retryOne = async () => {
      const failed = builds.flatMap((b) => (b.cancel_requested ? [] : b.nodes.filter((n) => n.state === 'failed').map((n) => ({ b, n }))));
      if (failed.length === 0) return;
      const { b, n } = schedRng.pick(failed);
      faults++;
      try {
        const rec = await engine.retryNode(b.id, n.name);
        const ix = builds.findIndex((x) => x.id === rec.id);
        if (ix >= 0) builds[ix] = rec;
        checker.retried(rec);
        world.log(`api retry ${world.aliasBuild(b.id)}/${n.name}`);
      } catch (err) {
        if (!isKilnError(err, 'E_CONFLICT') && !isKilnError(err, 'E_NOT_FOUND')) throw err;
        world.log(`api retry ${world.aliasBuild(b.id)}/${n.name}: ${scrub(world, coerceError(err).message)}`);
      }
    };
    const applyFault = async (f: Fault) => {
      if (f.kind === 'retry') return api('retry', retryOne)();
      if (f.kind === 'failover') {
        if (!up) return;
        faults++;
        world.log(`fault leader failover (takeover after ${f.downMs} ms, the old leader wakes within ${f.zombieMs} ms)`);
        failover(f);
        return;
      }
      if (f.kind === 'restart') {
        if (!up) return;
        faults++;
        world.log(`fault coordinator restart (down ${f.downMs} ms)`);
        await crashCoordinator();
        world.after(f.downMs, 'coordinator starts', async () => {
          await bootCoordinator();
          world.log('coordinator started; state recovered');
        });
        return;
      }
      const agent = agents.get(f.agent)!;
      faults++;
      world.log(`fault ${f.kind} ${f.agent}${'mode' in f ? ` ${f.mode}` : ''}${'how' in f ? ` ${f.how}` : ''}${'control' in f ? ` ${f.control}` : ''}${'silent' in f ? (f.silent ? ' silent' : ' reset') : ''}${'dir' in f ? ` ${f.dir}` : ''}${'ms' in f ? ` ${f.ms} ms` : ''}`);
      switch (f.kind) {
        case 'kill':
          agent.kill(f.mode);
          world.after(f.restartAfter, `restart ${f.agent}`, () => agent.start());
          break;
        case 'break': {
          const conn = agent.connection();
          if (conn) net.abort(conn, 'network', f.silent ? { coord: false, agent: false } : { coord: true, agent: true }, f.silent ? 'the path blackholes' : 'a middlebox resets it');
          break;
        }
        case 'partition':
          net.partition(agent.path, world.now + f.ms);
          break;
        case 'stall':
          net.stall(agent.path, f.dir, world.now + f.ms);
          break;
        case 'drop':
          agent.dropConnection('simulated flaky link');
          break;
        case 'unhealthy':
          agent.unhealthyFor(f.ms);
          break;
        case 'stop':
          agent.stopGracefully(f.how, () => world.after(f.restartAfter, `restart ${f.agent}`, () => agent.start()));
          break;
        case 'control':
          await api('control', async () => {
            if (!(await setControl(f.agent, f.control))) return;
            // The operator resumes it later and insists: right after a coordinator restart the
            // agent is unknown (E_NOT_FOUND) until it reconnects, yet comes back paused.
            const resume = api(`resume ${f.agent}`, async () => {
              if (!(await setControl(f.agent, 'active'))) world.after(1000, `resume ${f.agent} again`, resume);
            });
            world.after(f.resumeAfter, `resume ${f.agent}`, resume);
          })();
          break;
      }
    };
    for (const f of scenario.faults) world.at(START + f.at, `fault ${f.kind}${'agent' in f ? ` ${f.agent}` : ''}`, () => applyFault(f));
    const faultEnd = START + scenario.faultEnd;
    world.at(faultEnd, 'faults stop', () => {
      world.faultsActive = false;
      world.log('faults stop; dead agents restart');
      for (const a of agents.values()) if (!a.alive) world.after(schedRng.int(0, 1000), `restart ${a.name}`, () => a.start());
    });

    const totalNodes = scenario.builds.reduce((n, b) => n + Object.keys(b.nodes).length, 0);
    const deadline = faultEnd + SETTLE_BASE_MS + SETTLE_PER_NODE_MS * totalNodes;
    const sweep = async () => {
      if (up) await engine.sweep();
      if (world.now + SWEEP_EVERY_MS <= deadline) world.after(SWEEP_EVERY_MS, 'sweep', sweep);
    };
    world.at(START + SWEEP_EVERY_MS, 'sweep', sweep);

    const quiescent = () =>
      !world.faultsActive &&
      up &&
      submitted === scenario.builds.length &&
      builds.every((b) => isBuildTerminal(b.state)) &&
      engine.activeAttempts() === 0 &&
      [...agents.values()].every((a) => a.online && a.jobCount() === 0);

    let pendingPlacement = false;
    for (;;) {
      const ev = world.queue.pop();
      if (!ev || ev.at > deadline) break;
      if (pendingPlacement && ev.at > world.now) {
        runAll(deferred);
        pendingPlacement = false;
      }
      world.now = ev.at;
      events++;
      try {
        await ev.run();
        if (deferred.length > 0) {
          if (schedRng.chance(0.85)) runAll(deferred);
          else pendingPlacement = true;
        }
        await new Promise((r) => setImmediate(r));
      } catch (err) {
        world.violate('engine-error', `${ev.label}: ${scrub(world, coerceError(err).stack ?? String(err))}`);
        break;
      }
      checker.checkStep();
      if (stopAtFirst && world.violations.length > 0) break;
      if (quiescent()) {
        quiescentAt = world.now;
        world.log('quiescent: every build terminal, no live attempt, every agent connected and idle');
        break;
      }
    }
    if (pendingPlacement) runAll(deferred);

    if (quiescentAt === null && !(stopAtFirst && world.violations.length > 0)) {
      const open: string[] = [];
      if (!up) open.push('the coordinator is down');
      for (const b of builds) {
        if (!isBuildTerminal(b.state)) open.push(`build ${world.aliasBuild(b.id)} ${b.state}`);
        for (const n of b.nodes) {
          if (!isNodeTerminal(n.state)) {
            const leader = n.waiting_on ? checker.find(n.waiting_on) : null;
            open.push(`node ${world.aliasBuild(b.id)}/${n.name} ${n.state}${n.waiting_on ? ` (follows ${world.attempt(n.waiting_on)}, which is ${leader?.attempt.state ?? 'unknown'})` : ''}`);
          }
          for (const a of n.attempts) if (SLOT_HOLDING_ATTEMPT_STATES.has(a.state)) open.push(`attempt ${world.attempt(a.id)} ${a.state} on ${a.agent}`);
        }
      }
      for (const a of agents.values()) if (!a.online || a.jobCount() > 0) open.push(`agent ${a.name} ${a.alive ? (a.online ? 'online' : 'offline') : 'dead'} with ${a.jobCount()} jobs (registry: ${registry.get(a.name)?.state ?? 'unknown'})`);
      if (submitted < scenario.builds.length) open.push(`${scenario.builds.length - submitted} builds never submitted`);
      world.violate('liveness', `not quiescent ${deadline - faultEnd} ms after the faults stopped: ${open.join('; ') || 'nothing open?'}`);
    }

    await engine.stop();
    await logs.closeAll();
    if (!(stopAtFirst && world.violations.length > 0)) await checker.checkLogs(logs);

    const stats: SimResult['stats'] = {
      events,
      simMs: world.now - START,
      builds: {},
      attempts: {},
      faults,
      quiescentAtMs: quiescentAt === null ? null : quiescentAt - START,
      notCurrent: checker.notCurrent,
      staleConnection: checker.staleConnection,
      fencedWrites: shared?.refused ?? 0,
    };
    for (const b of builds) {
      stats.builds[b.state] = (stats.builds[b.state] ?? 0) + 1;
      for (const n of b.nodes) for (const a of n.attempts) stats.attempts[a.state] = (stats.attempts[a.state] ?? 0) + 1;
    }
    return {
      seed,
      ok: world.violations.length === 0,
      violations: world.violations,
      trace: world.trace.last(opts.traceLines ?? 200),
      focus: focusLines(world, opts.traceLines ?? 200),
      traceDigest: world.trace.digest(),
      scenario: describeScenario(scenario),
      stats,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Trace lines (before the tail) naming a node or build that a violation names. */
function focusLines(world: World, tail: number): string[] {
  const names = new Set<string>();
  for (const v of world.violations) for (const m of v.detail.matchAll(/\bB\d+\/[A-Za-z0-9_.-]+/g)) names.add(m[0].replace(/#\d+$/, ''));
  if (names.size === 0) return [];
  const all = world.trace.last(Number.MAX_SAFE_INTEGER);
  const early = all.slice(0, Math.max(0, all.length - tail));
  const re = new RegExp(`(${[...names].map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})(#|\\b)`);
  return early.filter((l) => re.test(l)).slice(-150);
}

function runAll(queue: Array<() => void>): void {
  while (queue.length > 0) queue.shift()!();
}

/** A failing seed, as printed by the test and the nightly script. */
export function formatFailure(r: SimResult, replay: string): string {
  return [
    `simulation seed ${r.seed} failed: ${r.violations.map((v) => `[${v.invariant}] ${v.detail}`).join('\n  ')}`,
    `replay: ${replay}`,
    `scenario: ${r.scenario}`,
    ...(r.focus.length > 0 ? [`earlier events of the nodes named above (${r.focus.length}):`, ...r.focus.map((l) => `  ${l}`)] : []),
    `trace (last ${r.trace.length} events):`,
    ...r.trace.map((l) => `  ${l}`),
  ].join('\n');
}
