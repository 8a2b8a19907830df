/**
 * PostgreSQL driver benchmark (issue 14): node-postgres (`pg`, with and without its opt-in
 * pipelining) against porsager's `postgres`, in the same run on the same server, for the three
 * patterns kiln's PostgreSQL state backend has:
 *   (a) the journal append: one connection, sequential transactions of
 *       `SELECT kiln_fence($epoch, $holder)` + `INSERT` of a 2 KiB text: commits/s, p50/p99;
 *   (b) the same from 8 concurrent callers on a pool of 8 connections;
 *   (c) reading back 100,000 rows of ~500 B in order (what a standby tailing the journal and a
 *       coordinator loading the state do), whole and in keyset pages of 10,000.
 * kiln's own wrapper (`PgClient.tx` of coordinator/state/pg/pg-client.ts) is measured too.
 * The lease table and `kiln_fence` are migration m001's own SQL. Each variant runs `--runs`
 * times, interleaved with the others, and the median is reported.
 *
 *   node dist/scripts/bench/pg-driver.js [--url postgres://…] [--tx 2000] [--runs 3] [--rows 100000]
 *
 * The URL defaults to KILN_TEST_POSTGRES, then /run/kiln-infra/postgres/env
 * (scripts/infra/postgres.sh start). A database kiln_bench_<random> is made and dropped.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import postgres from 'postgres';
import { m001Cluster } from '../../coordinator/state/pg/migrations/m001-cluster.js';
import { openPg } from '../../coordinator/state/pg/pg-client.js';
import { fmt, machineLine, median, percentile } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
if (args.includes('--help')) {
  console.log('usage: node dist/scripts/bench/pg-driver.js [--url postgres://…] [--tx 2000] [--runs 3] [--rows 100000]');
  process.exit(0);
}
const TX = Number(arg('tx', '2000'));
const RUNS = Number(arg('runs', '3'));
const ROWS = Number(arg('rows', '100000'));
const CONCURRENCY = 8;
const PAGE = 10_000;
const EPOCH = 1;
const HOLDER = 'bench-holder';
const BODY = 'x'.repeat(2048);

function serverUrl(): string {
  const given = arg('url', process.env.KILN_TEST_POSTGRES ?? '');
  if (given) return given;
  try {
    const line = readFileSync('/run/kiln-infra/postgres/env', 'utf8').trim();
    return line.slice(line.indexOf('=') + 1);
  } catch {
    throw new Error('no PostgreSQL: pass --url, set KILN_TEST_POSTGRES, or run scripts/infra/postgres.sh start (as root)');
  }
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** What one variant of (a) or (b) did: commits/s and per-transaction latency (ms). */
interface TxResult {
  perSec: number;
  p50: number;
  p99: number;
}

/** Runs `callers` loops that together commit `total` transactions; each loop awaits its own. */
async function driveTx(total: number, callers: number, one: (i: number) => Promise<void>): Promise<TxResult> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (let i = next++; i < total; i = next++) {
        const s = performance.now();
        await one(i);
        lat.push(performance.now() - s);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  return { perSec: total / secs, p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

interface Variant {
  name: string;
  /** Opens its connection(s) for `callers` callers and returns the transaction function and a closer. */
  open(callers: number): Promise<{ tx: (i: number) => Promise<void>; close: () => Promise<void> }>;
}

const INSERT = 'INSERT INTO bench_journal (body) VALUES ($1)';
const FENCE = 'SELECT kiln_fence($1, $2)';

function variants(url: string): Variant[] {
  return [
    {
      name: 'pg (awaited, 4 round trips)',
      open: async (callers) => {
        const pool = new pg.Pool({ connectionString: url, max: callers });
        return {
          tx: async () => {
            const c = await pool.connect();
            try {
              await c.query('BEGIN');
              await c.query(FENCE, [EPOCH, HOLDER]);
              await c.query(INSERT, [BODY]);
              await c.query('COMMIT');
            } finally {
              c.release();
            }
          },
          close: () => pool.end(),
        };
      },
    },
    {
      name: 'pg pipeline: true',
      open: async (callers) => {
        const pool = new pg.Pool({ connectionString: url, max: callers, pipeline: true });
        return {
          tx: async () => {
            const c = await pool.connect();
            try {
              // one flush: BEGIN, the fence, the insert and COMMIT (a failed fence aborts the
              // transaction, so the INSERT fails too and COMMIT rolls back)
              await Promise.all([c.query('BEGIN'), c.query(FENCE, [EPOCH, HOLDER]), c.query(INSERT, [BODY]), c.query('COMMIT')]);
            } finally {
              c.release();
            }
          },
          close: () => pool.end(),
        };
      },
    },
    {
      // what the state backend gets: pg-client's tx over a pipelined pool, fence and insert issued together
      name: 'kiln PgClient.tx (pg pipeline)',
      open: async (callers) => {
        const client = await openPg(url, { applicationName: 'kiln-bench', max: callers });
        return {
          tx: async () => {
            await client.tx((q) => Promise.all([q.query(FENCE, [EPOCH, HOLDER]), q.query(INSERT, [BODY])]));
          },
          close: () => client.close(),
        };
      },
    },
    {
      name: 'postgres (awaited in begin)',
      open: async (callers) => {
        const sql = postgres(url, { max: callers, onnotice: () => {} });
        return {
          tx: async () => {
            await sql.begin(async (t) => {
              await t.unsafe(FENCE, [EPOCH, HOLDER]);
              await t.unsafe(INSERT, [BODY]);
            });
          },
          close: () => sql.end(),
        };
      },
    },
    {
      name: 'postgres (pipelined in begin)',
      open: async (callers) => {
        const sql = postgres(url, { max: callers, onnotice: () => {} });
        return {
          tx: async () => {
            await sql.begin((t) => [t.unsafe(FENCE, [EPOCH, HOLDER]), t.unsafe(INSERT, [BODY])]);
          },
          close: () => sql.end(),
        };
      },
    },
  ];
}

interface ReadResult {
  wholeMs: number;
  pagedMs: number;
}

async function readPg(url: string): Promise<ReadResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    let t0 = performance.now();
    const all = await c.query<{ seq: string; body: string }>('SELECT seq, body FROM bench_rows ORDER BY seq');
    if (all.rows.length !== ROWS) throw new Error(`pg read ${all.rows.length} rows, not ${ROWS}`);
    const wholeMs = performance.now() - t0;
    t0 = performance.now();
    let after = 0;
    let n = 0;
    for (;;) {
      const page = await c.query<{ seq: string; body: string }>('SELECT seq, body FROM bench_rows WHERE seq > $1 ORDER BY seq LIMIT $2', [after, PAGE]);
      if (page.rows.length === 0) break;
      n += page.rows.length;
      after = Number(page.rows[page.rows.length - 1]!.seq);
    }
    if (n !== ROWS) throw new Error(`pg paged read ${n} rows, not ${ROWS}`);
    return { wholeMs, pagedMs: performance.now() - t0 };
  } finally {
    await c.end();
  }
}

async function readPostgres(url: string): Promise<ReadResult> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    let t0 = performance.now();
    const all = await sql.unsafe<Array<{ seq: string; body: string }>>('SELECT seq, body FROM bench_rows ORDER BY seq');
    if (all.length !== ROWS) throw new Error(`postgres read ${all.length} rows, not ${ROWS}`);
    const wholeMs = performance.now() - t0;
    t0 = performance.now();
    let after = 0;
    let n = 0;
    for (;;) {
      const page = await sql.unsafe<Array<{ seq: string; body: string }>>('SELECT seq, body FROM bench_rows WHERE seq > $1 ORDER BY seq LIMIT $2', [after, PAGE]);
      if (page.length === 0) break;
      n += page.length;
      after = Number(page[page.length - 1]!.seq);
    }
    if (n !== ROWS) throw new Error(`postgres paged read ${n} rows, not ${ROWS}`);
    return { wholeMs, pagedMs: performance.now() - t0 };
  } finally {
    await sql.end();
  }
}

async function main(): Promise<void> {
  const base = serverUrl();
  const dbName = `kiln_bench_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const url = withDatabase(base, dbName);
  try {
    const setup = new pg.Client({ connectionString: url });
    await setup.connect();
    const version = (await setup.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
    const fsync = (await setup.query<{ f: string }>("SELECT current_setting('fsync') AS f")).rows[0]!.f;
    await setup.query(m001Cluster.sql);
    await setup.query("INSERT INTO kiln_lease (epoch, holder, url, expires_at) VALUES ($1, $2, 'http://bench', now() + interval '1 hour')", [EPOCH, HOLDER]);
    await setup.query('CREATE TABLE bench_journal (seq bigserial PRIMARY KEY, body text NOT NULL)');
    await setup.query('CREATE TABLE bench_rows (seq bigserial PRIMARY KEY, body text NOT NULL)');
    await setup.query("INSERT INTO bench_rows (body) SELECT repeat(md5(g::text), 15) || lpad(g::text, 20, '0') FROM generate_series(1, $1) g", [ROWS]);
    await setup.query('VACUUM ANALYZE bench_rows');
    await setup.end();

    console.log(`# PostgreSQL driver benchmark: pg ${pgVersion()} vs postgres ${postgresVersion()}`);
    console.log(`# ${machineLine()}; PostgreSQL ${version} on the same machine (fsync=${fsync}), ${TX} transactions per run, median of ${RUNS} runs`);

    const vs = variants(url);
    for (const [label, callers] of [
      ['(a) journal append, 1 connection, sequential', 1],
      [`(b) journal append, ${CONCURRENCY} concurrent callers, pool of ${CONCURRENCY}`, CONCURRENCY],
    ] as const) {
      const results = new Map<string, TxResult[]>();
      for (let run = 0; run < RUNS; run++) {
        for (const v of vs) {
          const conn = await v.open(callers);
          try {
            await driveTx(50, callers, conn.tx); // warm-up: connections, prepared plans
            const r = await driveTx(TX, callers, conn.tx);
            results.set(v.name, [...(results.get(v.name) ?? []), r]);
          } finally {
            await conn.close();
          }
        }
      }
      console.log(`\n${label}`);
      console.log('  driver                         commits/s    p50 ms   p99 ms');
      for (const v of vs) {
        const rs = results.get(v.name)!;
        console.log(
          `  ${v.name.padEnd(30)} ${fmt(median(rs.map((r) => r.perSec)), 0).padStart(9)} ${fmt(median(rs.map((r) => r.p50)), 2).padStart(9)} ${fmt(median(rs.map((r) => r.p99)), 2).padStart(8)}`,
        );
      }
    }

    const reads = new Map<string, ReadResult[]>();
    for (let run = 0; run < RUNS; run++) {
      for (const [name, fn] of [
        ['pg', readPg],
        ['postgres', readPostgres],
      ] as const) {
        reads.set(name, [...(reads.get(name) ?? []), await fn(url)]);
      }
    }
    console.log(`\n(c) read ${ROWS} rows of ~500 B in order`);
    console.log('  driver        whole ms   pages of 10,000 ms   rows/s (paged)');
    for (const [name, rs] of reads) {
      const paged = median(rs.map((r) => r.pagedMs));
      console.log(`  ${name.padEnd(12)} ${fmt(median(rs.map((r) => r.wholeMs)), 0).padStart(9)} ${fmt(paged, 0).padStart(20)} ${fmt(ROWS / (paged / 1000), 0).padStart(16)}`);
    }
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  }
}

function pgVersion(): string {
  return packageVersion('pg');
}
function postgresVersion(): string {
  return packageVersion('postgres');
}
function packageVersion(name: string): string {
  try {
    const path = new URL(`../../../node_modules/${name}/package.json`, import.meta.url);
    return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

await main();
