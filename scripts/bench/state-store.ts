/**
 * State store benchmark (benchmarks.md C8): kiln's real `StateStore` (journal with group
 * commit, fdatasync per write) doing the logical transitions of a 10,000-step build (4 per
 * step: ready, assigned, running, success; one `markNode` + `commit()` each), against
 * better-sqlite3 in WAL mode with synchronous=NORMAL doing the same transitions as one row
 * update each, in autocommit and in 100-row transactions, measured in the same run.
 *
 * kiln runs with 50 transitions in flight (like 50 agents, each change awaited until it is
 * on disk) and with 1 in flight (every change waits for its own fdatasync). Reports
 * transitions/s, the ratio to sqlite autocommit (target >= 0.5x) and ack-to-disk latency
 * (change made -> its commit durable; target <= 200 ms). sqlite with synchronous=NORMAL
 * does not sync on commit (only at checkpoints); sqlite with synchronous=FULL (a sync per
 * commit, durable like kiln) is printed as context.
 *
 *   node dist/scripts/bench/state-store.js [--steps 10000] [--runs 3] [--history 10000]
 *
 * `--history N` puts N archived build summaries in the state file first (the snapshot a
 * compaction would rewrite). Each run uses a fresh data directory.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeMutable } from '../../coordinator/state/journal-entries.js';
import { StateStore } from '../../coordinator/state/state-store.js';
import { assignedAttempt, emptyState, pendingNode, stateToFile, type BuildRecord, type NodeRecord } from '../../coordinator/state/records.js';
import { fmt, machineLine, median, now, percentile } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
if (args.includes('--help')) {
  console.log('usage: node dist/scripts/bench/state-store.js [--steps 10000] [--runs 3] [--history 10000]');
  process.exit(0);
}
const STEPS = arg('steps', 10_000);
const RUNS = arg('runs', 3);
const HISTORY = arg('history', 10_000);
const TRANSITIONS = STEPS * 4;
const BUILD_ID = 'b-01m87q8730000-bench000';

/**
 * The parts of better-sqlite3 used here (it ships no types). It is a comparator only, so it is
 * not a dependency of kiln (a native addon compiled at install time): `npm run bench` installs
 * it into `.bench-deps/` (scripts/bench/install-comparators.sh) and it is loaded from there.
 */
interface SqliteStatement {
  run(...params: unknown[]): unknown;
}
interface SqliteDb {
  pragma(source: string): unknown;
  exec(sql: string): void;
  prepare(sql: string): SqliteStatement;
  transaction<A extends unknown[]>(fn: (...a: A) => void): (...a: A) => void;
  close(): void;
}
type SqliteCtor = new (file: string) => SqliteDb;

function loadSqlite(): SqliteCtor | null {
  try {
    const root = join(import.meta.dirname, '..', '..', '..');
    return createRequire(join(root, '.bench-deps', 'package.json'))('better-sqlite3') as SqliteCtor;
  } catch {
    return null;
  }
}

function buildRecord(steps: number): BuildRecord {
  return {
    id: BUILD_ID,
    name: 'bench',
    state: 'running',
    cancel_requested: false,
    created_at: Date.now(),
    started_at: Date.now(),
    finished_at: null,
    nodes: Array.from({ length: steps }, (_, i) => ({
      name: `n${i}`,
      platform: 'linux/amd64',
      context: null,
      dockerfile: null,
      dockerfile_inline: 'FROM scratch',
      build_args: {},
      labels: {},
      labels_not: {},
      allow_emulation: false,
      gpus: null,
      priority: 0,
      retry: true,
      test: null,
      needs: [],
      timeout_ms: 3_600_000,
      target: null,
      no_cache: false,
      inputs: [],
      outputs: [],
      reuse: true,
    })).map((n) => Object.assign(pendingNode(n), { retries: 0, budget_from: 0 })),
  };
}

/** Applies transition `k` (0..3) of a step to its node, as the engine would. */
function transition(node: NodeRecord, k: number, t: number): void {
  switch (k) {
    case 0:
      node.state = 'ready';
      node.ready_at = t;
      return;
    case 1:
      node.state = 'assigned';
      node.attempts.push(
        assignedAttempt({
          id: `a-01m87q8730000-${node.name.padStart(8, '0')}`,
          number: node.attempts.length + 1,
          agent: 'agent-17',
          session: 's-01m87q8730000-abcdefgh',
          assigned_at: t,
          log_header: '',
          inputs: {},
          spec_digest: null,
        }),
      );
      return;
    case 2: {
      node.state = 'running';
      node.started_at = t;
      const a = node.attempts[node.attempts.length - 1];
      if (a) {
        a.state = 'running';
        a.accepted_at = t;
        a.started_at = t;
      }
      return;
    }
    default: {
      node.state = 'success';
      node.finished_at = t;
      const a = node.attempts[node.attempts.length - 1];
      if (a) {
        a.state = 'success';
        a.finished_at = t;
        a.exit_code = 0;
      }
    }
  }
}

/** What a journal entry carries for a node (the same text goes into sqlite's row). */
function mutableJson(n: NodeRecord): string {
  return JSON.stringify(nodeMutable(n));
}

function history(n: number) {
  const s = emptyState();
  for (let i = 0; i < n; i++) {
    const id = `b-01m87q8730000-h${String(i).padStart(7, '0')}`;
    s.archived.set(id, { id, name: 'old', state: 'success', created_at: 1, started_at: 1, finished_at: 2, node_counts: { success: 12 } });
  }
  return s;
}

interface KilnResult {
  rate: number;
  ackP50: number;
  ackP99: number;
  ackMax: number;
  writes: number;
  /** Snapshots (compactions) written during the run. */
  snapshots: number;
}

/** kiln: `inFlight` workers, each making a change and awaiting its durable commit. */
async function kilnRun(inFlight: number): Promise<KilnResult> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-state-'));
  try {
    await writeFile(join(dir, 'state.json'), JSON.stringify(stateToFile(history(HISTORY))));
    await writeFile(join(dir, 'journal.jsonl'), '');
    const store = await StateStore.open({ dataDir: dir, persist: true, init: false });
    const build = buildRecord(STEPS);
    store.data.builds.set(build.id, build);
    store.markNew(build.id);
    await store.commit();
    const writes0 = store.writes;
    const snapshots0 = store.snapshots;
    const acks: number[] = [];
    let next = 0;
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= STEPS) return;
        const node = build.nodes[i]!;
        for (let k = 0; k < 4; k++) {
          const t = now();
          transition(node, k, Date.now());
          store.markNode(build.id, node.name);
          await store.commit();
          acks.push(now() - t);
        }
      }
    };
    const t0 = now();
    await Promise.all(Array.from({ length: inFlight }, worker));
    const elapsed = now() - t0;
    const writes = store.writes - writes0;
    const snapshots = store.snapshots - snapshots0;
    await store.drain();
    // Check: what was acknowledged replays.
    const again = await StateStore.open({ dataDir: dir, persist: true, init: false });
    const done = again.data.builds.get(build.id)?.nodes.filter((n) => n.state === 'success').length ?? 0;
    await again.drain();
    if (done !== STEPS) throw new Error(`replay found ${done} of ${STEPS} nodes finished`);
    return { rate: TRANSITIONS / (elapsed / 1000), ackP50: percentile(acks, 50), ackP99: percentile(acks, 99), ackMax: percentile(acks, 100), writes, snapshots };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** better-sqlite3: one UPDATE per transition, in autocommit (`batch` 1) or in transactions of `batch` rows. */
async function sqliteRun(Sqlite: SqliteCtor, synchronous: 'NORMAL' | 'FULL', batch: number): Promise<{ rate: number; commitP50: number; commitP99: number; commitMax: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-sqlite-'));
  const db = new Sqlite(join(dir, 'state.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${synchronous}`);
    db.exec('CREATE TABLE archived (id TEXT PRIMARY KEY, summary TEXT NOT NULL)');
    db.exec('CREATE TABLE nodes (build_id TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (build_id, name))');
    const build = buildRecord(STEPS);
    const insA = db.prepare('INSERT INTO archived (id, summary) VALUES (?, ?)');
    const insN = db.prepare('INSERT INTO nodes (build_id, name, state, data) VALUES (?, ?, ?, ?)');
    db.transaction(() => {
      for (const [id, s] of history(HISTORY).archived) insA.run(id, JSON.stringify(s));
      for (const n of build.nodes) insN.run(build.id, n.name, n.state, mutableJson(n));
    })();
    const upd = db.prepare('UPDATE nodes SET state = ?, data = ? WHERE build_id = ? AND name = ?');
    const apply = (i: number) => {
      const node = build.nodes[i >> 2]!;
      transition(node, i & 3, Date.now());
      upd.run(node.state, mutableJson(node), build.id, node.name);
    };
    const many = db.transaction((from: number, to: number) => {
      for (let i = from; i < to; i++) apply(i);
    });
    const commits: number[] = [];
    const t0 = now();
    for (let i = 0; i < TRANSITIONS; i += batch) {
      const t = now();
      if (batch === 1) apply(i);
      else many(i, Math.min(TRANSITIONS, i + batch));
      commits.push(now() - t);
    }
    const elapsed = now() - t0;
    return { rate: TRANSITIONS / (elapsed / 1000), commitP50: percentile(commits, 50), commitP99: percentile(commits, 99), commitMax: percentile(commits, 100) };
  } finally {
    db.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const range = (xs: number[], digits = 0) => (xs.length > 1 ? `${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)}` : fmt(xs[0] ?? NaN, digits));

async function main() {
  const Sqlite = loadSqlite();
  console.log(`# state store benchmark (C8): ${STEPS} steps x 4 transitions = ${TRANSITIONS} logical transitions, ${HISTORY} archived builds in the state, ${RUNS} runs (median, min–max)`);
  console.log(`# ${machineLine()}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  if (!Sqlite) console.log('# better-sqlite3 is not installed (bash scripts/bench/install-comparators.sh): sqlite comparators skipped');
  const k50: KilnResult[] = [];
  const k1: KilnResult[] = [];
  const sqlAuto: number[] = [];
  const sqlTx: number[] = [];
  const sqlFull: Array<{ rate: number; commitP50: number; commitP99: number; commitMax: number }> = [];
  for (let r = 0; r < RUNS; r++) {
    // Interleaved, so a busy moment on the machine hits both sides.
    k50.push(await kilnRun(50));
    if (Sqlite) {
      sqlAuto.push((await sqliteRun(Sqlite, 'NORMAL', 1)).rate);
      sqlTx.push((await sqliteRun(Sqlite, 'NORMAL', 100)).rate);
    }
    k1.push(await kilnRun(1));
    if (Sqlite) sqlFull.push(await sqliteRun(Sqlite, 'FULL', 1));
    const last = k50[k50.length - 1]!;
    console.log(
      `run ${r + 1}: kiln 50 in flight ${fmt(last.rate, 0)}/s (${last.writes} writes), 1 in flight ${fmt(k1[k1.length - 1]!.rate, 0)}/s` +
        (Sqlite ? `; sqlite autocommit ${fmt(sqlAuto[r]!, 0)}/s, 100-row tx ${fmt(sqlTx[r]!, 0)}/s, FULL autocommit ${fmt(sqlFull[r]!.rate, 0)}/s` : ''),
    );
  }
  const rows: Array<[string, number[], string]> = [
    ['kiln journal, 50 in flight (group commit)', k50.map((x) => x.rate), `ack-to-disk p50 ${fmt(median(k50.map((x) => x.ackP50)), 2)} ms, p99 ${fmt(median(k50.map((x) => x.ackP99)), 2)} ms, max ${fmt(Math.max(...k50.map((x) => x.ackMax)), 1)} ms; ${fmt(median(k50.map((x) => TRANSITIONS / x.writes)), 1)} transitions per durable write; ${median(k50.map((x) => x.snapshots))} snapshot(s) during the run`],
    ['kiln journal, 1 in flight', k1.map((x) => x.rate), `ack-to-disk p50 ${fmt(median(k1.map((x) => x.ackP50)), 3)} ms, p99 ${fmt(median(k1.map((x) => x.ackP99)), 2)} ms, max ${fmt(Math.max(...k1.map((x) => x.ackMax)), 1)} ms; ${median(k1.map((x) => x.snapshots))} snapshot(s) during the run`],
  ];
  if (Sqlite) {
    rows.push(['sqlite WAL, synchronous=NORMAL, autocommit', sqlAuto, 'comparator; no sync per commit (durable at checkpoint)']);
    rows.push(['sqlite WAL, synchronous=NORMAL, 100-row tx', sqlTx, 'comparator']);
    rows.push(['sqlite WAL, synchronous=FULL, autocommit', sqlFull.map((x) => x.rate), `context (durable per commit): commit p50 ${fmt(median(sqlFull.map((x) => x.commitP50)), 3)} ms, p99 ${fmt(median(sqlFull.map((x) => x.commitP99)), 2)} ms, max ${fmt(Math.max(...sqlFull.map((x) => x.commitMax)), 1)} ms (the disk's own stalls)`]);
  }
  console.log('');
  console.log('| store | transitions/s (median) | runs min–max | notes |');
  console.log('|---|---|---|---|');
  for (const [label, rates, note] of rows) console.log(`| ${label} | ${fmt(median(rates), 0)} | ${range(rates)} | ${note} |`);
  console.log('');
  const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
  if (Sqlite) {
    const ratios = k50.map((x, i) => x.rate / sqlAuto[i]!);
    console.log(`ratio kiln (50 in flight) / sqlite autocommit, per run: ${ratios.map((x) => fmt(x, 2)).join(', ')} (median ${fmt(median(ratios), 2)}; 100-row tx: ${fmt(median(k50.map((x, i) => x.rate / sqlTx[i]!)), 2)}; FULL: ${fmt(median(k50.map((x, i) => x.rate / sqlFull[i]!.rate)), 2)})`);
    console.log(`target (C8) transitions/s >= 0.5x sqlite autocommit: min ratio ${fmt(Math.min(...ratios), 2)} -> ${verdict(Math.min(...ratios) >= 0.5)}`);
  }
  const worstAck = Math.max(...k50.map((x) => x.ackMax), ...k1.map((x) => x.ackMax));
  console.log(`target (C8) ack-to-disk <= 200 ms: worst ${fmt(worstAck, 1)} ms over every run -> ${verdict(worstAck <= 200)}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
