/**
 * Log store benchmark (issue 14): which shared store keeps build logs when several
 * coordinators share a PostgreSQL state, measured against today's file store in the same run.
 *
 *   file      the embedded store (coordinator/logs/log-store.ts): the attempt file in a temp
 *             dir; it acks once the bytes are written to the file (fsync at the attempt's end).
 *   postgres  coordinator/logs/pg-log-store.ts on the test PostgreSQL (fsync on): acks once the
 *             batch's fenced transaction committed; appends that arrive meanwhile share it.
 *   s3        the object-store pattern (S3 has no append): one object per frame,
 *             `logs/<build>/<node>/<attempt>/<offset>`, acked once its PUT returned, through
 *             the `minio` client the CAS uses, against s3rver (the test S3) in a child process.
 *
 * Load, as agents send it: 1 and 10 concurrent attempts, each printing 1,000 or 10,000 lines/s
 * of 100 B, sent as one frame every 10 ms (the agent's batch window) without waiting for the
 * acks (agents keep sending while acks are outstanding); each frame's ack latency is measured.
 * Reported per store and load: the lines/s acked (offered rate when it keeps up) and the ack
 * latency p50/p99. The load is open-loop, so a store that cannot keep up shows it as latency.
 *
 *   node dist/scripts/bench/log-store.js [--url postgres://…] [--seconds 3] [--runs 1] [--only file,postgres,s3]
 *
 * The URL defaults to KILN_TEST_POSTGRES, then /run/kiln-infra/postgres/env (database
 * kiln_bench_logs_<random> is made and dropped).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'minio';
import { LogStore } from '../../coordinator/logs/log-store.js';
import { PgLogStore } from '../../coordinator/logs/pg-log-store.js';
import type { AttemptLogRef } from '../../coordinator/logs/log-storage.js';
import { openPg, type PgClient } from '../../coordinator/state/pg/pg-client.js';
import { migrate } from '../../coordinator/state/pg/migrate.js';
import { fmt, machineLine, median, percentile } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const SECONDS = Number(arg('seconds', '3'));
const RUNS = Number(arg('runs', '1'));
const ONLY = new Set(arg('only', 'file,postgres,s3').split(','));
const LINE_BYTES = 100;
const FRAME_MS = 10;
const LOADS = [
  { attempts: 1, linesPerSec: 1_000 },
  { attempts: 1, linesPerSec: 10_000 },
  { attempts: 10, linesPerSec: 1_000 },
  { attempts: 10, linesPerSec: 10_000 },
];
const TOKEN = { epoch: 1, holder: 'bench' };

type Append = (ref: AttemptLogRef, offset: number, data: Buffer) => Promise<number>;

interface Store {
  name: string;
  append: Append;
  /** After a load: close its attempts. */
  settle(refs: AttemptLogRef[]): Promise<void>;
  stop(): Promise<void>;
}

interface Result {
  linesPerSec: number;
  p50: number;
  p99: number;
  frames: number;
}

function line(i: number): string {
  const head = `[step 3/7] RUN make -j8   line ${i} `;
  return `${head}${'.'.repeat(LINE_BYTES - 1 - head.length)}\n`;
}

/** Open-loop load: every attempt sends a frame each FRAME_MS with the lines due since the last one. */
async function runLoad(store: Store, attempts: number, linesPerSec: number, tag: string): Promise<Result> {
  const refs = Array.from({ length: attempts }, (_, i): AttemptLogRef => ({ buildId: `b-${tag}`, node: `n${i}`, number: 1, header: '' }));
  const offsets = refs.map(() => 0);
  const sentLines = refs.map(() => 0);
  const latencies: number[] = [];
  const acks: Array<Promise<void>> = [];
  let acked = 0;
  let lastAck = 0;
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  for (;;) {
    const t = performance.now();
    if (t >= end) break;
    const due = Math.floor(((t - t0) / 1000) * linesPerSec);
    for (let a = 0; a < attempts; a++) {
      const n = due - sentLines[a]!;
      if (n <= 0) continue;
      let text = '';
      for (let i = 0; i < n; i++) text += line(sentLines[a]! + i);
      const data = Buffer.from(text);
      const offset = offsets[a]!;
      offsets[a] = offset + data.length;
      sentLines[a] = due;
      const sent = performance.now();
      acks.push(
        store.append(refs[a]!, offset, data).then((written) => {
          if (written !== offset + data.length) throw new Error(`${store.name}: acked ${written}, expected ${offset + data.length}`);
          const now = performance.now();
          latencies.push(now - sent);
          acked += n;
          lastAck = now;
        }),
      );
    }
    await new Promise((r) => setTimeout(r, FRAME_MS));
  }
  await Promise.all(acks);
  await store.settle(refs);
  return { linesPerSec: acked / ((lastAck - t0) / 1000), p50: percentile(latencies, 50), p99: percentile(latencies, 99), frames: latencies.length };
}

function serverUrl(): string {
  const given = arg('url', process.env.KILN_TEST_POSTGRES ?? '');
  if (given) return given;
  try {
    const text = readFileSync('/run/kiln-infra/postgres/env', 'utf8').trim();
    return text.slice(text.indexOf('=') + 1);
  } catch {
    throw new Error('no PostgreSQL: pass --url, set KILN_TEST_POSTGRES, or run scripts/infra/postgres.sh start (as root)');
  }
}

async function fileStore(): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-logs-'));
  const logs = new LogStore(dir);
  return {
    name: 'file',
    append: (ref, offset, data) => logs.append(ref, offset, data),
    settle: async (refs) => {
      for (const r of refs) await logs.close(r);
    },
    stop: async () => {
      await logs.closeAll();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function pgStore(): Promise<Store & { batches: () => number }> {
  const server = serverUrl();
  const name = `kiln_bench_logs_${randomBytes(5).toString('hex')}`;
  const admin = await openPg(server, { applicationName: 'kiln-bench-admin', max: 1 });
  await admin.query(`CREATE DATABASE ${name}`);
  const u = new URL(server);
  u.pathname = `/${name}`;
  let pg: PgClient | null = null;
  try {
    pg = await openPg(u.toString(), { applicationName: 'kiln-bench-logs', max: 8 });
    await migrate(pg);
    await pg.query(`INSERT INTO kiln_lease (id, epoch, holder, url, expires_at) VALUES (1, $1, $2, 'http://127.0.0.1:1', now() + interval '1 day')`, [TOKEN.epoch, TOKEN.holder]);
  } catch (err) {
    await pg?.close();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.close();
    throw err;
  }
  const client = pg;
  const logs = new PgLogStore({ pg: client, fence: () => TOKEN });
  return {
    name: 'postgres',
    append: (ref, offset, data) => logs.append(ref, offset, data),
    batches: () => logs.batches,
    settle: async (refs) => {
      for (const r of refs) await logs.close(r);
    },
    stop: async () => {
      await logs.closeAll();
      await client.close();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.close();
    },
  };
}

/** s3rver in this process (the child's side of s3Store). */
async function serveS3(dir: string): Promise<void> {
  const S3rver = createRequire(import.meta.url)('s3rver') as new (o: { port: number; address: string; directory: string; silent: boolean }) => { run(): Promise<AddressInfo> };
  const address = await new S3rver({ port: 0, address: '127.0.0.1', directory: dir, silent: true }).run();
  process.send?.({ port: address.port });
}

async function s3Store(): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-logs-s3-'));
  const child: ChildProcess = fork(import.meta.filename, ['--serve-s3', dir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
  });
  const client = new Client({ endPoint: '127.0.0.1', port, useSSL: false, accessKey: 'S3RVER', secretKey: 'S3RVER', region: 'us-east-1', pathStyle: true });
  const bucket = 'kiln-logs';
  await client.makeBucket(bucket, 'us-east-1');
  return {
    name: 's3',
    append: async (ref, offset, data) => {
      await client.putObject(bucket, `logs/${ref.buildId}/${ref.node}/${ref.number}/${String(offset).padStart(16, '0')}`, data, data.length);
      return offset + data.length;
    },
    settle: () => Promise.resolve(),
    stop: async () => {
      child.kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  console.log(`# log store benchmark: ${LOADS.length} loads × ${SECONDS} s, ${RUNS} run(s), medians; lines of ${LINE_BYTES} B, a frame per attempt every ${FRAME_MS} ms, open loop`);
  console.log(`# ${machineLine()}`);
  const stores: Store[] = [];
  try {
    if (ONLY.has('file')) stores.push(await fileStore());
    if (ONLY.has('postgres')) stores.push(await pgStore());
    if (ONLY.has('s3')) stores.push(await s3Store());
    // warm-up (JIT, connections)
    for (const s of stores) await runLoad(s, 2, 1_000, `warm-${s.name}`).catch(() => null);
    const table = new Map<string, Result[]>();
    let tag = 0;
    for (let run = 0; run < RUNS; run++) {
      for (const load of LOADS) {
        for (const s of stores) {
          const key = `${load.attempts}×${load.linesPerSec}|${s.name}`;
          const r = await runLoad(s, load.attempts, load.linesPerSec, `${++tag}`);
          table.set(key, [...(table.get(key) ?? []), r]);
        }
      }
    }
    console.log('\n| attempts × lines/s | store | lines/s acked | ack p50 | ack p99 | frames |');
    console.log('|---|---|---|---|---|---|');
    for (const load of LOADS) {
      for (const s of stores) {
        const rs = table.get(`${load.attempts}×${load.linesPerSec}|${s.name}`)!;
        const m = (f: (r: Result) => number) => median(rs.map(f));
        console.log(
          `| ${load.attempts} × ${load.linesPerSec.toLocaleString('en')} | ${s.name} | ${Math.round(m((r) => r.linesPerSec)).toLocaleString('en')} | ${fmt(m((r) => r.p50), 2)} ms | ${fmt(m((r) => r.p99), 2)} ms | ${m((r) => r.frames)} |`,
        );
      }
    }
    const pg = stores.find((s) => s.name === 'postgres') as (Store & { batches: () => number }) | undefined;
    if (pg) console.log(`\npostgres: ${pg.batches()} transactions in all (appends share them)`);
  } finally {
    for (const s of stores) await s.stop().catch(() => {});
  }
}

if (args[0] === '--serve-s3') {
  await serveS3(args[1]!);
} else {
  await main();
}
