/**
 * Issue 9: the coordinator killed with SIGKILL again and again under load, restarted each
 * time on the same data dir and port. Load: a steady stream of small DAGs (3–10 noop nodes,
 * some with needs) on noop agents that take 5–60 ms per node and record every run
 * (KILN_NOOP_RECORD), cancels of random running builds, pins sent 0–20 ms after a build ends.
 * Each round kills at a random instant of one of four kinds: after a random delay; right after
 * a submission was acknowledged; right after a build ended (archiving, pins in flight); or the
 * instant an agent logs that it got an assignment (`on-assign`: the coordinator may not have
 * committed that attempt yet, which is where a node can run twice; about 3 in 4 such kills
 * hit that window on a coordinator that has the bug, against 1 in 4 random ones).
 *
 * Checked (kill-loop-checks.ts), after every restart for the acknowledgements of the last
 * rounds and at the end for all of them (after the load stopped, every build finished and
 * one more, clean, restart):
 * - every acknowledged build (201) is listed and readable;
 * - every acknowledged cancel (202) holds: the build is `cancelled`, every node as the 202
 *   answer left it, no attempt added or turned successful since;
 * - every acknowledged pin (200) holds: `pinned: true` in GET /builds/{id} and in the list,
 *   after the build finished and was archived;
 * - at most one successful attempt per node; every run an agent completed is an attempt the
 *   coordinator recorded, on that agent; a node runs to completion again only after the
 *   coordinator gave its earlier run up (`lost`, or an infrastructure failure);
 * - every restart succeeds (the journal replays); the coordinator never dies on its own.
 *
 * Knobs (environment): KILN_KILL_ROUNDS (default 10; the nightly runs 100), KILN_KILL_SEED
 * (default random; printed, and in every failure), KILN_KILL_AGENTS (default 3),
 * KILN_KILL_MODE=random|after-submit|after-end|on-assign (every kill of that kind; default a mix),
 * KILN_KILL_REPORT=<file> (a JSON summary: counts, violations, for scripts/kill-loop-nightly.sh),
 * KILN_KILL_KEEP=1 (keep the temp dir; it is always kept when something failed).
 * The seed fixes the test's choices, not the processes' timing.
 *
 * The first describe block runs the same checks on made-up histories, so each check is
 * known to catch what it is meant to catch (and to let legitimate re-runs pass).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AttemptViewT, BuildSummaryT, BuildViewT, NodeViewT } from '../../shared/index.js';
import { startAgent, startCoordinator, tempDir, waitForAgent, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';
import {
  checkBuildsExist,
  checkCancels,
  checkPins,
  checkRuns,
  checkSuccesses,
  checkSuccessesRan,
  countByKind,
  dedupe,
  isTerminalBuild,
  parseRunRecords,
  type AckedCancel,
  type RunRecord,
  type Violation,
} from '../helpers/kill-loop-checks.js';
import { KillLoopLoad, sleep } from '../helpers/kill-loop-load.js';
import { Rng } from '../sim/rng.js';
import { coerceError, apiPath } from '../../shared/index.js';

function intEnv(name: string, dflt: number, min: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return dflt;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min} (got '${text}')`);
  return n;
}

const ROUNDS = intEnv('KILN_KILL_ROUNDS', 10, 1);
const SEED = intEnv('KILN_KILL_SEED', Math.floor(Math.random() * 2 ** 31), 0);
const AGENTS = intEnv('KILN_KILL_AGENTS', 3, 1);
const MODES = ['random', 'after-submit', 'after-end', 'on-assign'] as const;
type KillMode = (typeof MODES)[number];
const ONLY_MODE = process.env.KILN_KILL_MODE as KillMode | undefined;
if (ONLY_MODE !== undefined && !MODES.includes(ONLY_MODE)) throw new Error(`KILN_KILL_MODE must be one of ${MODES.join(', ')} (got '${ONLY_MODE}')`);
/** How often each kind of kill is drawn: 3 random, 2 after-submit, 2 after-end, 3 on-assign in 10. */
const MODE_MIX: readonly KillMode[] = ['random', 'random', 'random', 'after-submit', 'after-submit', 'after-end', 'after-end', 'on-assign', 'on-assign', 'on-assign'];
const REPORT = process.env.KILN_KILL_REPORT;
const KEEP = process.env.KILN_KILL_KEEP === '1';
const REPLAY = `KILN_KILL_SEED=${SEED} KILN_KILL_ROUNDS=${ROUNDS} npx vitest run test/integration/fault.coordinator-kill-loop.test.ts`;

const COORDINATOR_ARGS = ['--heartbeat-interval', '300ms', '--lost-after', '2s'];
/** Cancelled attempts whose agent dropped them during a restart confirm nothing: free them soon. */
const COORDINATOR_CONFIG = { cancel_grace: '2s' };
const NOOP_ENV = { KILN_NOOP_DELAY_MS: '5-60' };

// ------------------------------------------------------------------ made-up histories

function attempt(id: string, number: number, agent: string, state: AttemptViewT['state'], extra: Partial<AttemptViewT> = {}): AttemptViewT {
  return { id, number, agent, state, infra: false, reason: null, ...extra } as AttemptViewT;
}

function view(id: string, nodes: Array<{ name: string; state: NodeViewT['state']; attempts: AttemptViewT[] }>, extra: Partial<BuildViewT> = {}): BuildViewT {
  return { id, state: 'success', pinned: false, cancel_requested: false, nodes, ...extra } as unknown as BuildViewT;
}

function run(build: string, node: string, attemptId: string, n: number, agent: string, startedAt: number, status: RunRecord['status'] = 'success'): RunRecord {
  return { build_id: build, node, attempt_id: attemptId, attempt: n, agent, status, started_at: startedAt, finished_at: startedAt + 10 };
}

describe('kill-loop checks on made-up histories', () => {
  it('flags a run under an attempt the coordinator never recorded, and the node run twice', () => {
    const views = new Map([['b1', view('b1', [{ name: 'n0', state: 'success', attempts: [attempt('a2', 1, 'x', 'success')] }])]]);
    const v = checkRuns([run('b1', 'n0', 'a1', 1, 'x', 100), run('b1', 'n0', 'a2', 1, 'x', 900)], views);
    expect(v.map((x) => x.kind).sort()).toEqual(['ran-twice', 'unknown-attempt']);
  });

  it('lets a node run again after the coordinator recorded its earlier run lost (or an infra failure)', () => {
    const views = new Map([
      ['b1', view('b1', [{ name: 'n0', state: 'success', attempts: [attempt('a1', 1, 'x', 'lost', { reason: 'gone' }), attempt('a2', 2, 'y', 'success')] }])],
      ['b2', view('b2', [{ name: 'n0', state: 'success', attempts: [attempt('c1', 1, 'x', 'failed', { infra: true }), attempt('c2', 2, 'y', 'success')] }])],
    ]);
    const runs = [run('b1', 'n0', 'a1', 1, 'x', 100), run('b1', 'n0', 'a2', 2, 'y', 900), run('b2', 'n0', 'c1', 1, 'x', 100), run('b2', 'n0', 'c2', 2, 'y', 900)];
    expect(checkRuns(runs, views)).toEqual([]);
    // a cancelled run is not a run to completion; one completed run of a cancelled attempt is fine
    const cancelled = new Map([['b3', view('b3', [{ name: 'n0', state: 'cancelled', attempts: [attempt('d1', 1, 'x', 'cancelled')] }], { state: 'cancelled' })]]);
    expect(checkRuns([run('b3', 'n0', 'd1', 1, 'x', 100)], cancelled)).toEqual([]);
    expect(checkRuns([run('b3', 'n0', 'zz', 1, 'x', 100, 'cancelled')], cancelled)).toEqual([]);
  });

  it('flags a second run after one the coordinator did not give up, a run on the wrong agent and two successes', () => {
    const views = new Map([['b1', view('b1', [{ name: 'n0', state: 'success', attempts: [attempt('a1', 1, 'x', 'success'), attempt('a2', 2, 'y', 'success')] }])]]);
    const v = checkRuns([run('b1', 'n0', 'a1', 1, 'x', 100), run('b1', 'n0', 'a2', 2, 'z', 900)], views);
    expect(v.map((x) => x.kind).sort()).toEqual(['attempt-misrun', 'ran-twice']);
    expect(checkSuccesses(views.values()).map((x) => x.kind)).toEqual(['two-successes']);
    // a success the coordinator records but no agent ran (or a broken run record)
    expect(checkSuccessesRan([run('b1', 'n0', 'a1', 1, 'x', 100)], views.values()).map((x) => x.subject)).toEqual(['a2']);
    expect(checkSuccessesRan([run('b1', 'n0', 'a1', 1, 'x', 100), run('b1', 'n0', 'a2', 2, 'y', 900)], views.values())).toEqual([]);
    expect(checkRuns([], new Map([['b9', null]]))).toEqual([]);
    expect(checkRuns([run('b9', 'n0', 'q', 1, 'x', 1)], new Map([['b9', null]])).map((x) => x.kind)).toEqual(['unknown-attempt']);
  });

  it('flags a cancel that did not hold and a pin that did not', () => {
    const answer = view('b1', [{ name: 'n0', state: 'success', attempts: [attempt('a1', 1, 'x', 'success')] }, { name: 'n1', state: 'cancelled', attempts: [attempt('a2', 1, 'x', 'cancelling')] }], { state: 'cancelled', cancel_requested: true });
    const kept: AckedCancel[] = [{ id: 'b1', answer }];
    const same = view('b1', [{ name: 'n0', state: 'success', attempts: [attempt('a1', 1, 'x', 'success')] }, { name: 'n1', state: 'cancelled', attempts: [attempt('a2', 1, 'x', 'cancelled')] }], { state: 'cancelled', cancel_requested: true });
    expect(checkCancels(kept, new Map([['b1', same]]))).toEqual([]);
    const ranOn = view('b1', [{ name: 'n0', state: 'success', attempts: [attempt('a1', 1, 'x', 'success')] }, { name: 'n1', state: 'success', attempts: [attempt('a2', 1, 'x', 'cancelled'), attempt('a3', 2, 'x', 'success')] }], { state: 'success', cancel_requested: true });
    const v = checkCancels(kept, new Map([['b1', ranOn]]));
    expect(v.map((x) => x.kind)).toEqual(['cancel-lost']);
    expect(v[0]!.detail).toMatch(/build state is success.*node n1 was cancelled in the 202 answer, now success.*got attempt 2/);

    const pinned = view('b2', [], { pinned: true });
    const unpinned = view('b2', [], { pinned: false });
    const summary = (p: boolean) => new Map([['b2', { id: 'b2', pinned: p } as BuildSummaryT]]);
    expect(checkPins([{ id: 'b2', afterEndMs: 3 }], new Map([['b2', pinned]]), summary(true))).toEqual([]);
    expect(checkPins([{ id: 'b2', afterEndMs: 3 }], new Map([['b2', unpinned]]), summary(true)).map((x) => x.kind)).toEqual(['pin-lost']);
    expect(checkPins([{ id: 'b2', afterEndMs: 3 }], new Map([['b2', pinned]]), summary(false)).map((x) => x.kind)).toEqual(['pin-lost-in-list']);
    expect(checkBuildsExist(['b2', 'b3'], new Set(['b2']), new Map([['b3', null]])).map((x) => x.subject)).toEqual(['b3']);
  });
});

// ------------------------------------------------------------------ the kill loop

class Fatal extends Error {}

/**
 * Sends SIGKILL to `victim` from inside the stderr handler of the first agent that logs
 * `building` (it accepted an assignment), so as little as possible happens in between; after
 * `guardMs` without one, kills anyway. Resolves once the victim is dead.
 */
async function killOnNextAssign(agents: readonly Proc[], victim: Proc, guardMs: number): Promise<boolean> {
  const listeners: Array<[Proc, (d: Buffer) => void]> = [];
  let killed = false;
  const kill = () => {
    killed ||= victim.running;
    victim.kill('SIGKILL');
    for (const [p, l] of listeners) p.child.stderr?.off('data', l);
  };
  for (const p of agents) {
    const l = (d: Buffer) => {
      if (d.includes('"msg":"building"')) kill();
    };
    p.child.stderr?.on('data', l);
    listeners.push([p, l]);
  }
  const timer = setTimeout(kill, guardMs);
  await victim.exited;
  clearTimeout(timer);
  return killed;
}

/** Every build the coordinator lists (all pages), by id. */
async function listAll(c: CoordinatorHandle): Promise<Map<string, BuildSummaryT>> {
  const out = new Map<string, BuildSummaryT>();
  let cursor: string | null = null;
  for (;;) {
    const r: { status: number; body: { items: BuildSummaryT[]; next_cursor: string | null } } = await c.api(`${apiPath.builds()}?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (r.status !== 200) throw new Error(`GET ${apiPath.builds()}: ${r.status} ${JSON.stringify(r.body)}`);
    for (const s of r.body.items) out.set(s.id, s);
    cursor = r.body.next_cursor;
    if (!cursor) return out;
  }
}

/** GET /api/v1/builds/{id} for each id: the view, or null when it is not there (404) or unreadable. */
async function views(c: CoordinatorHandle, ids: Iterable<string>): Promise<Map<string, BuildViewT | null>> {
  const out = new Map<string, BuildViewT | null>();
  for (const id of ids) {
    if (out.has(id)) continue;
    const r = await c.api<BuildViewT>(apiPath.build(id));
    out.set(id, r.status === 200 ? r.body : null);
  }
  return out;
}

describe('coordinator kill -9 loop under load (issue 9)', () => {
  const procs: Proc[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const p of procs.splice(0).reverse()) await p.stop();
    for (const c of cleanups) await c();
  });

  it(`keeps every acknowledged build, cancel and pin and runs no node twice over ${ROUNDS} kills (seed ${SEED})`, { timeout: 120_000 + ROUNDS * 20_000 }, async () => {
    const t0 = Date.now();
    const dir = await tempDir('kill-loop');
    const recordFile = join(dir.path, 'runs.jsonl');
    const rng = new Rng(SEED);
    const killRng = rng.fork();
    let coord = await startCoordinator({ dataDir: join(dir.path, 'data'), args: COORDINATOR_ARGS, config: COORDINATOR_CONFIG });
    procs.push(coord.proc);
    const agentNames = Array.from({ length: AGENTS }, (_, i) => `noop-${i + 1}`);
    const agents: Proc[] = [];
    for (const name of agentNames) {
      const p = await startAgent({ coordinator: coord, name, workDir: join(dir.path, name), executor: 'noop', maxJobs: 3, env: { ...NOOP_ENV, KILN_NOOP_RECORD: recordFile } });
      procs.push(p);
      agents.push(p);
    }
    const load = new KillLoopLoad({
      target: () => coord,
      seed: Math.floor(rng.fork().next() * 2 ** 31),
      maxActive: 8,
      submitGapMs: [0, 40],
      cancelGapMs: [80, 400],
      pinShare: 0.5,
      pinDelayMs: [0, 20],
      nodes: [3, 10],
    });
    const violations: Array<Violation & { round: number }> = [];
    const note = (round: number, vs: Violation[]) => violations.push(...vs.map((v) => ({ ...v, round })));
    const kills: Array<{ round: number; mode: KillMode; delay: number; at: number }> = [];
    const fail = (msg: string): never => {
      throw new Fatal(`seed ${SEED}: ${msg}\nreplay: ${REPLAY}\ntemp dir kept: ${dir.path}`);
    };
    const diedOnItsOwn = (round: number) => fail(`round ${round}: the coordinator died on its own (exit ${coord.proc.exitCode ?? coord.proc.signal}): ${coord.proc.stderr.slice(-4000)}`);
    const agentsAlive = () => {
      agents.forEach((p, i) => {
        if (!p.running) fail(`agent ${agentNames[i]} exited (${p.exitCode ?? p.signal}): ${p.stderr.slice(-3000)}`);
      });
    };
    // After a restart the cancels and pins acknowledged since the restart before the last one
    // are checked (each twice, so a loss that only a later restart reveals is caught too); all
    // of them at the end.
    const marks = { cancels: [0, 0], pins: [0, 0] };

    let failed = true;
    let reported = false;
    try {
      load.start();
      for (let round = 1; round <= ROUNDS; round++) {
        const drawn = killRng.pick(MODE_MIX);
        const mode = ONLY_MODE ?? drawn;
        let delay: number;
        if (mode === 'on-assign') {
          // The instant an agent says it got an assignment: the coordinator may not have
          // committed that attempt yet (the window of the run-twice bug).
          await sleep(killRng.int(50, 400));
          delay = 0;
          if (!(await killOnNextAssign(agents, coord.proc, 5000))) diedOnItsOwn(round);
        } else if (mode === 'random') {
          delay = killRng.int(100, 1500);
          await sleep(delay);
        } else {
          await sleep(killRng.int(50, 400));
          await (mode === 'after-submit' ? load.nextSubmitAck(5000) : load.nextEnd(5000));
          delay = killRng.int(0, mode === 'after-submit' ? 2 : 15);
          if (delay > 0) await sleep(delay);
        }
        agentsAlive();
        if (mode !== 'on-assign') {
          if (!coord.proc.running) diedOnItsOwn(round);
          await coord.proc.kill9();
        }
        kills.push({ round, mode, delay, at: Date.now() });
        try {
          coord = await startCoordinator({ dataDir: coord.dataDir, port: coord.port, args: coord.args, env: coord.env });
        } catch (err) {
          note(round, [{ kind: 'restart-failed', subject: `round ${round}`, detail: coerceError(err).message }]);
          fail(`round ${round}: the restart after kill -9 failed: ${coerceError(err).message}`);
        }
        procs.push(coord.proc);
        for (let i = 0; i < agents.length; i++) await waitForAgent(coord, agentNames[i]!, 'connected', agents[i]);

        // Right after the restart: every acknowledged build is there, recent cancels and pins hold
        // (what was acknowledged before the list was asked for: the load goes on meanwhile).
        const acked = [...load.builds.keys()];
        const now = { cancels: load.cancels.length, pins: load.pins.length };
        const listed = await listAll(coord);
        const missing = acked.filter((id) => !listed.has(id));
        const cancels = load.cancels.slice(marks.cancels[0], now.cancels);
        const pins = load.pins.slice(marks.pins[0], now.pins);
        const seen = await views(coord, [...missing, ...cancels.map((c) => c.id), ...pins.map((p) => p.id)]);
        const lost = checkBuildsExist(acked, new Set(listed.keys()), seen);
        for (const v of lost) load.builds.get(v.subject)!.lost = true;
        note(round, [...lost, ...checkCancels(cancels, seen), ...checkPins(pins, seen, listed)]);
        marks.cancels = [marks.cancels[1]!, now.cancels];
        marks.pins = [marks.pins[1]!, now.pins];
      }

      // The end: no new work; every build finishes; one clean restart; then everything is checked.
      await load.quiesce();
      const deadline = Date.now() + 120_000;
      let unfinished: string[] = [];
      for (;;) {
        agentsAlive();
        const listed = await listAll(coord);
        unfinished = [...listed.values()].filter((s) => !isTerminalBuild(s.state)).map((s) => s.id);
        if (unfinished.length === 0 || Date.now() > deadline) break;
        await sleep(200);
      }
      await load.stop(30_000);
      await coord.proc.stop();
      if (coord.proc.exitCode !== 0) note(ROUNDS + 1, [{ kind: 'restart-failed', subject: 'final stop', detail: `SIGTERM: exit ${coord.proc.exitCode ?? coord.proc.signal}: ${coord.proc.stderr.slice(-4000)}` }]);
      try {
        coord = await startCoordinator({ dataDir: coord.dataDir, port: coord.port, args: coord.args, env: coord.env });
      } catch (err) {
        fail(`the final restart failed: ${coerceError(err).message}`);
      }
      procs.push(coord.proc);

      const listed = await listAll(coord);
      const records = parseRunRecords(await readFile(recordFile, 'utf8').catch(() => ''));
      const ids = new Set([...load.builds.keys(), ...listed.keys(), ...records.map((r) => r.build_id)]);
      const all = await views(coord, ids);
      const known = [...all.values()].filter((v): v is BuildViewT => v !== null);
      const final: Violation[] = [
        ...unfinished.map((id) => ({ kind: 'not-finished' as const, subject: id, detail: `build ${id} did not finish within 120 s after the load stopped (${all.get(id)?.state ?? 'unreadable'})` })),
        ...checkBuildsExist(load.builds.keys(), new Set(listed.keys()), all),
        ...checkCancels(load.cancels, all),
        ...checkPins(load.pins, all, listed),
        ...checkSuccesses(known),
        ...checkRuns(records, all),
        ...checkSuccessesRan(records, known),
      ];
      note(ROUNDS + 1, final);

      // ---- summary (always printed; the nightly script reads the report file)
      const found = dedupe(violations) as Array<Violation & { round: number }>;
      const completed = records.filter((r) => r.status === 'success');
      const legitReruns = [...all.values()].flatMap((v) => v?.nodes ?? []).flatMap((n) => n.attempts).filter((a) => a.state === 'lost').length;
      const livePins = load.pins.filter((p) => p.afterEndMs !== null && p.afterEndMs <= 20);
      const lostPinIds = new Set(found.filter((v) => v.kind === 'pin-lost' || v.kind === 'pin-lost-in-list').map((v) => v.subject));
      // Which kind of kill came first after each node's first (unrecorded) run, for the report.
      const killAfter = (at: number) => kills.find((k) => k.at >= at);
      const doubleRunKills = new Set<(typeof kills)[number] | undefined>();
      for (const v of found.filter((x) => x.kind === 'ran-twice')) {
        const first = completed.filter((r) => `${r.build_id}/${r.node}` === v.subject).sort((a, b) => a.started_at - b.started_at)[0];
        doubleRunKills.add(first ? killAfter(first.started_at) : undefined);
      }
      const ranTwiceBy: Record<string, number> = {};
      for (const k of doubleRunKills) ranTwiceBy[k?.mode ?? 'none'] = (ranTwiceBy[k?.mode ?? 'none'] ?? 0) + 1;
      const summary = {
        seed: SEED,
        rounds: ROUNDS,
        agents: AGENTS,
        seconds: Math.round((Date.now() - t0) / 1000),
        kills: Object.fromEntries(MODES.map((m) => [m, kills.filter((k) => k.mode === m).length])),
        builds_acknowledged: load.builds.size,
        builds_unacknowledged_but_stored: load.unacked.size,
        cancels_acknowledged: load.cancels.length,
        pins_acknowledged: load.pins.length,
        pins_within_20ms_of_end: livePins.length,
        pins_lost: lostPinIds.size,
        pins_lost_within_20ms: livePins.filter((p) => lostPinIds.has(p.id)).length,
        runs_completed: completed.length,
        attempts_lost: legitReruns,
        /** Kills after which some node ran twice, by how the kill was timed. */
        kills_with_double_runs: ranTwiceBy,
        load: load.stats,
        violations: countByKind(found),
      };
      console.log(`kill loop: ${JSON.stringify(summary)}`);
      const killLog = kills.map((k) => ({ round: k.round, mode: k.mode, delay_ms: k.delay, double_run: doubleRunKills.has(k) }));
      if (REPORT) await writeFile(REPORT, `${JSON.stringify({ ...summary, replay: REPLAY, dir: found.length ? dir.path : null, kill_log: killLog, details: found }, null, 2)}\n`);

      const shown = found.slice(0, 40).map((v) => `  [${v.kind}] (round ${v.round > ROUNDS ? 'final' : v.round}) ${v.detail}`);
      const message = `seed ${SEED}: ${found.length} violations ${JSON.stringify(countByKind(found))}\n${shown.join('\n')}${found.length > shown.length ? `\n  ... and ${found.length - shown.length} more` : ''}\nreplay: ${REPLAY}\ntemp dir kept: ${dir.path}`;
      reported = true;
      expect(found.length, message).toBe(0);
      failed = false;
    } catch (err) {
      if (REPORT && !reported) await writeFile(REPORT, `${JSON.stringify({ seed: SEED, rounds: ROUNDS, fatal: coerceError(err).message, replay: REPLAY, dir: dir.path }, null, 2)}\n`).catch(() => {});
      throw err;
    } finally {
      await load.stop(0).catch(() => {});
      if (!failed && !KEEP) cleanups.push(dir.cleanup);
      else console.log(`kill loop (seed ${SEED}): temp dir kept: ${dir.path}`);
    }
  });
});
