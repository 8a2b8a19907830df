/**
 * Dispatch with the state in PostgreSQL against the embedded state (issue 14): the wide build
 * of `dispatch.js` (N no-op nodes, 50 simulated agents over real WebSockets, submit to build
 * finished) and one chain of 500 (one node in flight: dispatch latency p50), on the embedded
 * journal and on a PostgreSQL database (a fresh one per cluster on the test server of
 * `scripts/infra/postgres.sh`: the same machine), in A-B-B-A order per run, each from a
 * collected heap. Reports nodes/s of each, the ratio, the coordinator's CPU per node, and
 * the durable writes per wide build.
 *
 *   node dist/scripts/bench/dispatch-pg.js [--nodes 10000] [--runs 3] [--postgres URL]
 *
 * The server: `--postgres URL` (database `postgres`, a role that may create databases), else
 * KILN_TEST_POSTGRES, else /run/kiln-infra/postgres/env (`scripts/infra/postgres.sh start`).
 */
import { loadavg } from 'node:os';
import { argValue, benchDatabase, benchPostgresUrl } from './bench-pg.js';
import { fmt, machineLine, median, percentile } from './bench-util.js';
import { chainSpec, collectGarbage, latencies, mainThreadMs, runBuild, startCluster, stopCluster, wideSpec, type Side } from './dispatch-cluster.js';

const args = process.argv.slice(2);
if (args.includes('--help')) {
  console.log('usage: node dist/scripts/bench/dispatch-pg.js [--nodes 10000] [--runs 3] [--postgres URL]');
  process.exit(0);
}
const arg = (name: string): string | undefined => argValue(args, name);
const NODES = Number(arg('nodes') ?? 10_000);
const RUNS = Number(arg('runs') ?? 3);
const AGENTS = 50;

type Backend = 'embedded' | 'postgres';

async function oneRun(backend: Backend, server: string) {
  const db = backend === 'postgres' ? await benchDatabase(server, 'kiln_bench') : null;
  const side: Side = db ? { postgres: db.url } : 'on';
  const c = await startCluster(side, { agents: AGENTS, eventClients: 0 });
  try {
    await runBuild(c, wideSpec(500)); // warm-up
    await latencies(c, '');
    collectGarbage();
    const cpu0 = process.cpuUsage();
    const main0 = mainThreadMs();
    const w0 = c.coord.store.writes;
    const r = await runBuild(c, wideSpec(NODES));
    const cpu = process.cpuUsage(cpu0);
    if (r.state !== 'success') throw new Error(`wide build ended ${r.state}`);
    const out = {
      rate: NODES / (r.totalMs / 1000),
      submitMs: r.submitMs,
      cpuUs: (cpu.user + cpu.system) / NODES,
      mainUs: ((mainThreadMs() - main0) * 1000) / NODES,
      writes: c.coord.store.writes - w0,
      p50One: 0,
      p99One: 0,
    };
    await latencies(c, '');
    const single = await runBuild(c, chainSpec(1, 500));
    const lat = await latencies(c, single.id);
    out.p50One = percentile(lat, 50);
    out.p99One = percentile(lat, 99);
    return out;
  } finally {
    await stopCluster(c);
    await db?.drop();
  }
}

async function main() {
  const server = benchPostgresUrl(args);
  console.log(`# dispatch with the state in PostgreSQL vs the embedded journal: ${NODES} no-op nodes (wide), ${AGENTS} simulated agents (1 slot each), ${RUNS} runs of embedded and postgres in A-B-B-A order (means per run; median and min–max over runs)`);
  console.log(`# ${machineLine()}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; PostgreSQL on the same machine`);
  await oneRun('embedded', server); // JIT warm-up, not measured
  type R = Awaited<ReturnType<typeof oneRun>>;
  const mean = (rs: R[]): R => Object.fromEntries(Object.keys(rs[0]!).map((k) => [k, rs.reduce((a, r) => a + r[k as keyof R], 0) / rs.length])) as R;
  const emb: R[] = [];
  const pg: R[] = [];
  for (let i = 0; i < RUNS; i++) {
    const order: Backend[] = i % 2 === 0 ? ['embedded', 'postgres', 'postgres', 'embedded'] : ['postgres', 'embedded', 'embedded', 'postgres'];
    const got = new Map<Backend, R[]>([
      ['embedded', []],
      ['postgres', []],
    ]);
    for (const b of order) got.get(b)!.push(await oneRun(b, server));
    const e = mean(got.get('embedded')!);
    const p = mean(got.get('postgres')!);
    emb.push(e);
    pg.push(p);
    console.log(
      `run ${i + 1} (load ${loadavg()[0]!.toFixed(2)}): embedded ${fmt(e.rate, 0)} nodes/s (CPU ${fmt(e.cpuUs, 1)} µs/node, main thread ${fmt(e.mainUs, 1)}, ${fmt(e.writes, 0)} durable writes, one-in-flight p50 ${fmt(e.p50One, 3)} ms); ` +
        `postgres ${fmt(p.rate, 0)} nodes/s (CPU ${fmt(p.cpuUs, 1)} µs/node, main thread ${fmt(p.mainUs, 1)}, ${fmt(p.writes, 0)} commits, one-in-flight p50 ${fmt(p.p50One, 3)} ms); postgres/embedded ${fmt(p.rate / e.rate, 3)}`,
    );
  }
  const med = (xs: number[], d: number) => `${fmt(median(xs), d)} (${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)})`;
  const ratios = pg.map((p, i) => p.rate / emb[i]!.rate);
  console.log(`embedded: ${med(emb.map((r) => r.rate), 0)} nodes/s; one node in flight p50 ${med(emb.map((r) => r.p50One), 3)} ms, p99 ${med(emb.map((r) => r.p99One), 2)} ms`);
  console.log(`postgres: ${med(pg.map((r) => r.rate), 0)} nodes/s; one node in flight p50 ${med(pg.map((r) => r.p50One), 3)} ms, p99 ${med(pg.map((r) => r.p99One), 2)} ms; ${med(pg.map((r) => r.writes / NODES), 3)} commits per node`);
  const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
  const rates = pg.map((r) => r.rate);
  console.log(`target (issue 14) postgres >= 3000 nodes/s, every run: ${med(rates, 0)} -> ${verdict(Math.min(...rates) >= 3000)}`);
  console.log(`target (issue 14) postgres >= 0.4x embedded, every run: ${med(ratios, 3)} -> ${verdict(Math.min(...ratios) >= 0.4)}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
