/**
 * CAS benchmark: blobs PUT and GET through a real coordinator's HTTP API over loopback
 * (local disk store: PUT answers only after fsync of the blob and its directory),
 * find-missing, and the agent's local cache, each next to a comparator measured in the
 * same run, as a ratio. Medians of --runs runs.
 *
 * Workloads: 10,000 x 1 KiB (16 in flight, blobs/s), 1,000 x 1 MiB (4 in flight, MiB/s),
 * 1 x 1 GiB (one stream, MiB/s; body streamed from a file of random bytes written once,
 * GET streamed into a discarding sink; nothing holds 1 GiB in memory; at most 2 runs, and
 * bench-util's median of two is the lower one). --quick: 1,000 x 1 KiB, 100 x 1 MiB,
 * 1 x 128 MiB, one run.
 *
 * Comparators, all measured in this run:
 *   (a) sha256 on one core: `openssl speed -evp sha256 -bytes 16384 -seconds 3`
 *       (node's crypto over 16 MiB chunks when openssl is missing; the line says which);
 *   (b) loopback: a bare node:http server (same child process as the coordinator) whose
 *       PUT handler discards the body, fed the same bytes the same way; for GET it streams
 *       the very file the coordinator stored (open, fstat, 1 MiB reads), so both GETs read
 *       the same page-cached bytes;
 *   (c) disk, one large file: `dd if=<file> of=<tmp> bs=1M conv=fsync` (node fs write +
 *       fsync when dd is missing);
 *   (d) disk, many blobs: per blob open + write + fsync + close + rename into a 256-way
 *       fan-out directory, same count and concurrency (the coordinator additionally
 *       fsyncs the directory).
 * Targets: 1 MiB and 1 GiB PUT >= 0.7 x min(a, b, d|c); GET >= 0.8 x (b) for every size;
 * 1 KiB PUT >= 0.5 x (d); find-missing >= 100k digests/s (100,000 digests, 1,000 of them
 * present, in batches of 1,000 one at a time, and as one request) next to a bare node:http
 * server that parses the same JSON and answers from a Set (no digest validation); agent
 * cache: a second acquire moves 0 bytes, 8 concurrent acquires of a new digest download once;
 * its first acquire of the big blob is shown next to min(a, b GET, a dd run just before).
 *
 * Fairness: the coordinator and the bare servers run in a forked child process, the load
 * generator (node:http client, keep-alive agent, same headers and bodies for both servers;
 * node:http rather than fetch because it is the cheaper client, so the servers are what is
 * measured) in this process: server and client each get one of the cores, as a coordinator
 * and its clients would. Every PUT stores new bytes (each run rewrites the first 32 bytes of
 * every blob, so digests are new); all sources are in the page cache. Before every timed
 * phase `sync` flushes what earlier phases left dirty. Virtual disks often absorb a burst
 * fast and then drop to a sustained rate (the VM this was written on: ~1-2 GiB at ~2 GB/s,
 * then ~400 MB/s, recovering within ~20 s idle),
 * so whichever disk-writing phase runs first after a pause is favoured: the phases that
 * write to disk (kiln PUT and its disk comparators) take turns going first, the comparator
 * first on even runs (with an odd --runs that favours the comparator, not kiln); kiln and
 * bare GETs alternate too. Per-run values and their cv are printed so noise shows.
 * Diagnostics (info, no target): for 1 KiB, (d) plus the directory fsync the store also
 * does; for the big blob, a second PUT of the stored digest (the store only drains the
 * body: the HTTP path's own cost). Missed targets are reported, not failures.
 *
 *   node dist/scripts/bench/cas.js [--quick] [--runs 3]
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, unlink } from 'node:fs/promises';
import { Agent as HttpAgent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { once } from 'node:events';
import { CasCache } from '../../agent/cas-cache.js';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { apiPath, createLogger, type Digest } from '../../shared/index.js';
import { cv, fmt, machineLine, median, now } from './bench-util.js';

const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const arg = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = arg('runs', QUICK ? 1 : 3);
const KiB = 1024;
const MiB = 1024 * 1024;
const SMALL = { count: QUICK ? 1000 : 10_000, size: KiB, inflight: 16 };
const MEDIUM = { count: QUICK ? 100 : 1000, size: MiB, inflight: 4 };
const BIG_SIZE = QUICK ? 128 * MiB : 1024 * MiB;
const FM_TOTAL = 100_000;
const FM_PRESENT = 1000;
const FM_BATCH = 1000;

// ---------------------------------------------------------------------------------------
// Child: the coordinator and the bare comparator servers.

interface Ready {
  type: 'ready';
  url: string;
  port: number;
  barePort: number;
  apiToken: string;
  agentToken: string;
}

async function serve(dir: string): Promise<void> {
  const dataDir = join(dir, 'data');
  const config = loadCoordinatorConfig({ dataDir, listen: '127.0.0.1:0', logLevel: 'silent', logFormat: 'json', rateLimitPerKey: 'off', rateLimitPerAddress: 'off' }, { env: {}, arch: process.arch, isTTY: false });
  const coord = await startCoordinator(config, createLogger({ name: 'bench', level: 'silent', format: 'json' }));
  let present = new Set<string>();
  const blobFile = (hex: string) => join(dataDir, 'cas', 'sha256', hex.slice(0, 2), hex);

  const bare = createServer((req: IncomingMessage, res: ServerResponse) => {
    const fail = (err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    };
    if (req.method === 'PUT') {
      req.on('data', () => {});
      req.on('end', () => {
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end('{"created":true}');
      });
      return;
    }
    if (req.method === 'GET' && req.url?.startsWith('/blob/')) {
      void (async () => {
        const fh = await open(blobFile(req.url!.slice('/blob/'.length)), 'r');
        const st = await fh.stat();
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(st.size) });
        await pipeline(fh.createReadStream({ highWaterMark: MiB }), res);
      })().catch(fail);
      return;
    }
    if (req.method === 'POST' && req.url === '/find-missing') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const { digests } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { digests: string[] };
          const missing: string[] = [];
          const seen = new Set<string>();
          for (const d of digests) {
            if (present.has(d) || seen.has(d)) continue;
            seen.add(d);
            missing.push(d);
          }
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ missing }));
        } catch (err) {
          fail(err);
        }
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  bare.listen(0, '127.0.0.1');
  await once(bare, 'listening');

  process.on('message', (m: { type: string; digests?: string[] }) => {
    if (m.type === 'present') {
      present = new Set(m.digests);
      process.send!({ type: 'present-ok' });
    } else if (m.type === 'stop') {
      void (async () => {
        bare.closeAllConnections();
        bare.close();
        await coord.stop();
        process.exit(0);
      })();
    }
  });
  const ready: Ready = {
    type: 'ready',
    url: coord.url,
    port: coord.port,
    barePort: (bare.address() as AddressInfo).port,
    apiToken: coord.tokens.apiToken,
    agentToken: coord.tokens.agentToken,
  };
  process.send!(ready);
}

function ask<T>(c: ChildProcess, msg: object | null, reply: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number) => reject(new Error(`server process exited (${code}) before '${reply}'`));
    const on = (m: { type: string }) => {
      if (m.type !== reply) return;
      c.off('message', on);
      c.off('exit', onExit);
      resolve(m as T);
    };
    c.on('message', on);
    c.once('exit', onExit);
    if (msg) c.send(msg);
  });
}

// ---------------------------------------------------------------------------------------
// Client side.

const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 });

interface Res {
  status: number;
  bytes: number;
  text: string;
}

/** One request with node:http; `keep` collects the response body (else it is counted and dropped). */
function http(port: number, method: string, path: string, headers: Record<string, string>, body: Buffer | Readable | null, keep: boolean): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request({ agent, host: '127.0.0.1', port, method, path, headers }, (res) => {
      let bytes = 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (keep) chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, text: keep ? Buffer.concat(chunks).toString('utf8') : '' }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body instanceof Readable) pipeline(body, req).catch(reject);
    else req.end(body ?? undefined);
  });
}

async function pool<T>(items: readonly T[], n: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

const hexOf = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

interface Blob {
  hex: string;
  data: Buffer;
}

/** `count` blobs of `size` random bytes, slices of one buffer. */
function makeBlobs(count: number, size: number): Blob[] {
  const buf = randomFillSync(Buffer.allocUnsafe(count * size));
  return Array.from({ length: count }, (_, i) => {
    const data = buf.subarray(i * size, (i + 1) * size);
    return { hex: hexOf(data), data };
  });
}

/** New bytes (and so new digests) for the next run: rewrites the first 32 bytes of every blob. */
function freshen(blobs: Blob[]): void {
  for (const b of blobs) {
    randomFillSync(b.data, 0, Math.min(32, b.data.length));
    b.hex = hexOf(b.data);
  }
}

interface Servers {
  kiln: { port: number; auth: string; agentToken: string; url: string };
  bare: { port: number };
}

const putHeaders = (s: Servers, size: number) => ({ authorization: s.kiln.auth, 'content-type': 'application/octet-stream', 'content-length': String(size) });
const kilnPath = (hex: string) => apiPath.casBlob(`sha256:${hex}`);
const barePath = (hex: string) => `/blob/${hex}`;

async function putAll(s: Servers, which: 'kiln' | 'bare', blobs: Blob[], inflight: number): Promise<number> {
  const port = which === 'kiln' ? s.kiln.port : s.bare.port;
  const path = which === 'kiln' ? kilnPath : barePath;
  await settle();
  const t0 = now();
  await pool(blobs, inflight, async (b) => {
    const r = await http(port, 'PUT', path(b.hex), putHeaders(s, b.data.length), b.data, true);
    if (r.status !== 201) throw new Error(`${which} PUT ${b.hex}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
  });
  return (now() - t0) / 1000;
}

async function getAll(s: Servers, which: 'kiln' | 'bare', blobs: readonly { hex: string; size: number }[], inflight: number): Promise<number> {
  const port = which === 'kiln' ? s.kiln.port : s.bare.port;
  const path = which === 'kiln' ? kilnPath : barePath;
  await settle();
  const t0 = now();
  await pool(blobs, inflight, async (b) => {
    const r = await http(port, 'GET', path(b.hex), { authorization: s.kiln.auth }, null, false);
    if (r.status !== 200 || r.bytes !== b.size) throw new Error(`${which} GET ${b.hex}: HTTP ${r.status}, ${r.bytes} of ${b.size} bytes`);
  });
  return (now() - t0) / 1000;
}

/**
 * Before every timed phase: flush what earlier phases left dirty (the big source file, temp
 * files being deleted) so their writeback does not land in the next measurement.
 */
async function settle(): Promise<void> {
  spawnSync('sync');
  await new Promise((r) => setTimeout(r, 100));
}

/** Comparator (d): per blob open + write + fsync + close + rename into a fan-out directory. */
async function diskBlobs(root: string, blobs: Blob[], inflight: number, syncDir = false): Promise<number> {
  await rm(root, { recursive: true, force: true });
  await mkdir(join(root, 'tmp'), { recursive: true });
  for (let i = 0; i < 256; i++) await mkdir(join(root, i.toString(16).padStart(2, '0')));
  await settle();
  const t0 = now();
  await pool(blobs, inflight, async (b) => {
    const tmp = join(root, 'tmp', `${b.hex.slice(0, 16)}-${randomBytes(6).toString('hex')}`);
    const fh = await open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(b.data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(root, b.hex.slice(0, 2), b.hex));
    if (syncDir) {
      const dh = await open(join(root, b.hex.slice(0, 2)), 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    }
  });
  const s = (now() - t0) / 1000;
  await rm(root, { recursive: true, force: true });
  return s;
}

/** Comparator (a): MiB/s of sha256 on one core. */
function sha256Speed(): { mibs: number; how: string } {
  const r = spawnSync('openssl', ['speed', '-evp', 'sha256', '-bytes', '16384', '-seconds', '3'], { encoding: 'utf8' });
  const m = r.status === 0 ? /^sha256\s+([\d.]+)k\s*$/m.exec(r.stdout) : null;
  if (m) return { mibs: (Number(m[1]) * 1000) / MiB, how: 'openssl speed -evp sha256 -bytes 16384 -seconds 3' };
  const chunk = randomFillSync(Buffer.allocUnsafe(16 * MiB));
  const h = createHash('sha256');
  let n = 0;
  const t0 = now();
  while (now() - t0 < 2000) {
    h.update(chunk);
    n += chunk.length;
  }
  h.digest();
  return { mibs: n / MiB / ((now() - t0) / 1000), how: `node crypto sha256 over 16 MiB chunks (openssl speed unavailable: ${r.error?.message ?? `exit ${r.status}`})` };
}

/** Comparator (c): seconds to copy `src` to a new file with fsync. */
async function diskLarge(src: string, dst: string): Promise<{ s: number; how: string }> {
  await unlink(dst).catch(() => {});
  await settle();
  const t0 = now();
  const r = spawnSync('dd', [`if=${src}`, `of=${dst}`, 'bs=1M', 'conv=fsync'], { encoding: 'utf8' });
  let s = (now() - t0) / 1000;
  let how = 'dd bs=1M conv=fsync';
  if (r.error || r.status !== 0) {
    await unlink(dst).catch(() => {});
    await settle();
    const t1 = now();
    const fh = await open(dst, 'w');
    try {
      for await (const c of createReadStream(src, { highWaterMark: MiB })) await fh.write(c as Buffer);
      await fh.sync();
    } finally {
      await fh.close();
    }
    s = (now() - t1) / 1000;
    how = `node fs write 1 MiB + fsync (dd unavailable: ${r.error?.message ?? r.stderr.trim().slice(0, 100)})`;
  }
  await unlink(dst).catch(() => {});
  return { s, how };
}

/** Writes `size` random bytes to `path` in 16 MiB chunks; returns the sha256 hex. */
async function makeBigFile(path: string, size: number): Promise<string> {
  const fh = await open(path, 'w');
  const h = createHash('sha256');
  const chunk = Buffer.allocUnsafe(16 * MiB);
  try {
    for (let off = 0; off < size; off += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, size - off));
      randomFillSync(part);
      h.update(part);
      await fh.write(part, 0, part.length, off);
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** New first 32 bytes (a new digest) for the next run; returns the new sha256 hex. */
async function freshenBigFile(path: string): Promise<string> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(randomBytes(32), 0, 32, 0);
  } finally {
    await fh.close();
  }
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(c as Buffer);
  return h.digest('hex');
}

function fsOf(path: string): string {
  try {
    let best = '';
    let type = '?';
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mnt, fstype] = line.split(' ');
      if (mnt && fstype && (path === mnt || path.startsWith(mnt.endsWith('/') ? mnt : `${mnt}/`)) && mnt.length > best.length) {
        best = mnt;
        type = fstype;
      }
    }
    return type;
  } catch {
    return '?';
  }
}

// ---------------------------------------------------------------------------------------
// Results.

interface Row {
  name: string;
  ours: string;
  comparator: string;
  ratio: string;
  target: string;
  met: boolean | null;
}
const rows: Row[] = [];
const runsOf = (xs: number[], d = 0) => (xs.length > 1 ? ` (runs ${xs.map((x) => fmt(x, d)).join(', ')}; cv ${fmt(cv(xs), 2)})` : '');
const rotate = <T>(xs: readonly T[], by: number): T[] => xs.map((_, i) => xs[(i + by) % xs.length]!);

function ratioRow(name: string, ours: number, unit: string, compName: string, comp: number, min: number | null): void {
  const ratio = ours / comp;
  const met = min === null ? null : ratio >= min;
  rows.push({ name, ours: `${fmt(ours, 0)} ${unit}`, comparator: `${fmt(comp, 0)} ${unit} ${compName}`, ratio: fmt(ratio, 3), target: min === null ? '-' : `>= ${min}`, met });
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-cas-'));
  let child: ChildProcess | null = null;
  try {
    console.log(
      `# CAS benchmark: real coordinator (local disk store, PUT answers after fsync) over loopback vs bare node:http / sha256 / disk comparators measured in this run; ${RUNS} run(s), medians${QUICK ? '; --quick sizes' : ''}`,
    );
    console.log(`# ${machineLine()}; temp dir ${dir} (${fsOf(dir)})`);

    child = fork(import.meta.filename, ['--serve', dir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const ready = await ask<Ready>(child, null, 'ready');
    const s: Servers = { kiln: { port: ready.port, auth: `Bearer ${ready.apiToken}`, agentToken: ready.agentToken, url: ready.url }, bare: { port: ready.barePort } };

    // (a) sha256, while nothing else runs.
    const sha = sha256Speed();
    console.log(`sha256, one core (${sha.how}): ${fmt(sha.mibs, 0)} MiB/s`);

    // Warm-up (JIT, keep-alive sockets) on both servers.
    const warm = makeBlobs(300, 4 * KiB);
    await putAll(s, 'kiln', warm, 16);
    await putAll(s, 'bare', warm, 16);
    await getAll(s, 'kiln', warm.map((b) => ({ hex: b.hex, size: b.data.length })), 16);
    await getAll(s, 'bare', warm.map((b) => ({ hex: b.hex, size: b.data.length })), 16);

    // --- 1 KiB and 1 MiB blobs -----------------------------------------------------------
    let smallBlobs: Blob[] = [];
    for (const w of [SMALL, MEDIUM]) {
      const blobs = makeBlobs(w.count, w.size);
      const small = w.size < MiB;
      const put = { kiln: [] as number[], bare: [] as number[], disk: [] as number[], diskDir: [] as number[] };
      const get = { kiln: [] as number[], bare: [] as number[] };
      for (let run = 0; run < RUNS; run++) {
        if (run > 0) freshen(blobs);
        // The phases that write to disk take turns going first (see the header); then the bare PUT.
        const diskPhases: Array<() => Promise<unknown>> = [
          async () => put.disk.push(await diskBlobs(join(dir, 'disk-blobs'), blobs, w.inflight)),
          // Diagnostic for small blobs: (d) plus the directory fsync the store also does.
          ...(small ? [async () => put.diskDir.push(await diskBlobs(join(dir, 'disk-blobs'), blobs, w.inflight, true))] : []),
          async () => put.kiln.push(await putAll(s, 'kiln', blobs, w.inflight)),
        ];
        for (const phase of rotate(diskPhases, run)) await phase();
        put.bare.push(await putAll(s, 'bare', blobs, w.inflight));
        const order = run % 2 === 0 ? (['bare', 'kiln'] as const) : (['kiln', 'bare'] as const);
        const refs = blobs.map((b) => ({ hex: b.hex, size: b.data.length }));
        for (const which of order) get[which].push(await getAll(s, which, refs, w.inflight));
      }
      const label = `${small ? '1 KiB' : '1 MiB'} x ${w.count}, ${w.inflight} in flight`;
      const rate = (sec: number) => (small ? w.count / sec : (w.count * w.size) / MiB / sec);
      const unit = small ? 'blobs/s' : 'MiB/s';
      const r = {
        putKiln: put.kiln.map(rate),
        putBare: put.bare.map(rate),
        putDisk: put.disk.map(rate),
        putDiskDir: put.diskDir.map(rate),
        getKiln: get.kiln.map(rate),
        getBare: get.bare.map(rate),
      };
      const m = { putKiln: median(r.putKiln), putBare: median(r.putBare), putDisk: median(r.putDisk), getKiln: median(r.getKiln), getBare: median(r.getBare) };
      console.log(
        `${label}: PUT kiln ${fmt(m.putKiln, 0)} ${unit}${runsOf(r.putKiln)}; bare http PUT ${fmt(m.putBare, 0)}${runsOf(r.putBare)}; disk write+fsync+rename ${fmt(m.putDisk, 0)}${runsOf(r.putDisk)}`,
      );
      console.log(`${label}: GET kiln ${fmt(m.getKiln, 0)} ${unit}${runsOf(r.getKiln)}; bare http GET of the same files ${fmt(m.getBare, 0)}${runsOf(r.getBare)}`);
      if (small) {
        ratioRow(`PUT ${label}`, m.putKiln, unit, '(d) disk write+fsync+rename', m.putDisk, 0.5);
        ratioRow(`  same vs bare http PUT (info)`, m.putKiln, unit, '(b) bare http PUT', m.putBare, null);
        const dDir = median(r.putDiskDir);
        console.log(`${label}: (diagnostic) disk write+fsync+rename+fsync(dir), as the store does: ${fmt(dDir, 0)} ${unit}${runsOf(r.putDiskDir)}`);
        ratioRow(`  same vs (d) + fsync(dir) (info)`, m.putKiln, unit, "(d') (d) + fsync(dir)", dDir, null);
        smallBlobs = blobs;
      } else {
        const limits: Array<[string, number]> = [
          ['(a) sha256', sha.mibs],
          ['(b) bare http PUT', m.putBare],
          ['(d) disk write+fsync+rename', m.putDisk],
        ];
        const [ln, lv] = limits.reduce((a, b) => (b[1] < a[1] ? b : a));
        ratioRow(`PUT ${label}`, m.putKiln, unit, `min(a,b,d) = ${ln}`, lv, 0.7);
      }
      ratioRow(`GET ${label}`, m.getKiln, unit, '(b) bare http GET', m.getBare, 0.8);
    }

    // --- one big blob --------------------------------------------------------------------
    const bigFile = join(dir, 'big.bin');
    let bigHex = await makeBigFile(bigFile, BIG_SIZE);
    const big = { kiln: [] as number[], bare: [] as number[], disk: [] as number[], drain: [] as number[], getKiln: [] as number[], getBare: [] as number[] };
    let diskHow = '';
    const bigRuns = QUICK ? RUNS : Math.min(RUNS, 2);
    for (let run = 0; run < bigRuns; run++) {
      if (run > 0) bigHex = await freshenBigFile(bigFile);
      const putBig = async (which: 'kiln' | 'bare', status = 201): Promise<number> => {
        await settle();
        const t0 = now();
        const r = await http(which === 'kiln' ? s.kiln.port : s.bare.port, 'PUT', which === 'kiln' ? kilnPath(bigHex) : barePath(bigHex), putHeaders(s, BIG_SIZE), createReadStream(bigFile, { highWaterMark: MiB }), true);
        if (r.status !== status) throw new Error(`${which} PUT big: HTTP ${r.status} ${r.text.slice(0, 200)}`);
        return (now() - t0) / 1000;
      };
      const diskPhases: Array<() => Promise<unknown>> = [
        async () => {
          const d = await diskLarge(bigFile, join(dir, 'dd-out.bin'));
          big.disk.push(d.s);
          diskHow = d.how;
        },
        async () => big.kiln.push(await putBig('kiln')),
      ];
      for (const phase of rotate(diskPhases, run)) await phase();
      big.bare.push(await putBig('bare'));
      // Diagnostic: the same PUT again; the digest is present, so the store only drains the body (no hash, no disk).
      big.drain.push(await putBig('kiln', 200));
      const order = run % 2 === 0 ? (['bare', 'kiln'] as const) : (['kiln', 'bare'] as const);
      for (const which of order) big[which === 'kiln' ? 'getKiln' : 'getBare'].push(await getAll(s, which, [{ hex: bigHex, size: BIG_SIZE }], 1));
    }
    const mibs = (sec: number) => BIG_SIZE / MiB / sec;
    const bl = `${BIG_SIZE / MiB} MiB x 1`;
    const b = {
      put: big.kiln.map(mibs),
      bare: big.bare.map(mibs),
      disk: big.disk.map(mibs),
      drain: big.drain.map(mibs),
      getKiln: big.getKiln.map(mibs),
      getBare: big.getBare.map(mibs),
    };
    const bm = { put: median(b.put), bare: median(b.bare), disk: median(b.disk), drain: median(b.drain), getKiln: median(b.getKiln), getBare: median(b.getBare) };
    console.log(`${bl}: PUT kiln ${fmt(bm.put, 0)} MiB/s${runsOf(b.put)}; bare http PUT ${fmt(bm.bare, 0)}${runsOf(b.bare)}; disk (${diskHow}) ${fmt(bm.disk, 0)}${runsOf(b.disk)}`);
    console.log(`${bl}: (diagnostic) PUT kiln of the digest already stored (HTTP path only: body drained, no hash, no disk) ${fmt(bm.drain, 0)} MiB/s${runsOf(b.drain)}`);
    console.log(`${bl}: GET kiln ${fmt(bm.getKiln, 0)} MiB/s${runsOf(b.getKiln)}; bare http GET of the same file ${fmt(bm.getBare, 0)}${runsOf(b.getBare)}`);
    {
      const limits: Array<[string, number]> = [
        ['(a) sha256', sha.mibs],
        ['(b) bare http PUT', bm.bare],
        ['(c) dd conv=fsync', bm.disk],
      ];
      const [ln, lv] = limits.reduce((x, y) => (y[1] < x[1] ? y : x));
      ratioRow(`PUT ${bl}`, bm.put, 'MiB/s', `min(a,b,c) = ${ln}`, lv, 0.7);
      ratioRow(`  kiln PUT, digest present (info)`, bm.drain, 'MiB/s', '(b) bare http PUT', bm.bare, null);
      ratioRow(`GET ${bl}`, bm.getKiln, 'MiB/s', '(b) bare http GET', bm.getBare, 0.8);
    }

    // --- find-missing --------------------------------------------------------------------
    const presentHex = smallBlobs.slice(0, FM_PRESENT).map((x) => `sha256:${x.hex}`);
    const query: string[] = [];
    const every = Math.floor(FM_TOTAL / presentHex.length);
    for (let i = 0, p = 0; i < FM_TOTAL; i++) {
      query.push(i % every === 0 && p < presentHex.length ? presentHex[p++]! : `sha256:${randomBytes(32).toString('hex')}`);
    }
    await ask(child, { type: 'present', digests: presentHex }, 'present-ok');
    const batches: Buffer[] = [];
    for (let i = 0; i < query.length; i += FM_BATCH) batches.push(Buffer.from(JSON.stringify({ digests: query.slice(i, i + FM_BATCH) })));
    const whole = Buffer.from(JSON.stringify({ digests: query }));
    const fm = async (which: 'kiln' | 'bare', bodies: readonly Buffer[], expectMissing = FM_TOTAL - presentHex.length): Promise<number> => {
      const port = which === 'kiln' ? s.kiln.port : s.bare.port;
      const path = which === 'kiln' ? apiPath.casFindMissing() : '/find-missing';
      let missing = 0;
      const t0 = now();
      for (const body of bodies) {
        const r = await http(port, 'POST', path, { authorization: s.kiln.auth, 'content-type': 'application/json', 'content-length': String(body.length) }, body, true);
        if (r.status !== 200) throw new Error(`${which} find-missing: HTTP ${r.status} ${r.text.slice(0, 200)}`);
        missing += (JSON.parse(r.text) as { missing: string[] }).missing.length;
      }
      const sec = (now() - t0) / 1000;
      if (missing !== expectMissing) throw new Error(`${which} find-missing said ${missing} missing, expected ${expectMissing}`);
      return sec;
    };
    const warmBodies = batches.slice(0, 10);
    const warmMissing = query.slice(0, warmBodies.length * FM_BATCH).filter((d) => !presentHex.includes(d)).length;
    await fm('kiln', warmBodies, warmMissing); // warm-up
    await fm('bare', warmBodies, warmMissing);
    for (const [label, bodies] of [
      [`${FM_TOTAL / FM_BATCH} requests of ${FM_BATCH}, one at a time`, batches],
      [`one request of ${FM_TOTAL}`, [whole]],
    ] as const) {
      const k: number[] = [];
      const bb: number[] = [];
      for (let run = 0; run < Math.max(RUNS, 3); run++) {
        if (run % 2 === 0) {
          bb.push(FM_TOTAL / (await fm('bare', bodies)));
          k.push(FM_TOTAL / (await fm('kiln', bodies)));
        } else {
          k.push(FM_TOTAL / (await fm('kiln', bodies)));
          bb.push(FM_TOTAL / (await fm('bare', bodies)));
        }
      }
      const mk = median(k);
      const mb = median(bb);
      console.log(`find-missing ${FM_TOTAL} digests (${presentHex.length} present), ${label}: kiln ${fmt(mk, 0)} digests/s${runsOf(k)}; bare http + JSON + Set ${fmt(mb, 0)}${runsOf(bb)}`);
      ratioRow(`find-missing, ${label}`, mk, 'digests/s', '(bare http+JSON+Set)', mb, null);
      rows.push({ name: `  same vs 100k digests/s`, ours: `${fmt(mk, 0)} digests/s`, comparator: '100000 digests/s (target)', ratio: fmt(mk / 100_000, 3), target: '>= 1', met: mk >= 100_000 });
    }

    // --- agent cache ---------------------------------------------------------------------
    const cache = new CasCache({ dir: join(dir, 'agent-cas'), coordinatorUrl: s.kiln.url, token: s.kiln.agentToken });
    const bigDigest = `sha256:${bigHex}` as Digest;
    // The disk comparator again, right before (the disk's burst state drifts; see the header).
    const ddNow = BIG_SIZE / MiB / (await diskLarge(bigFile, join(dir, 'dd-out.bin'))).s;
    await settle();
    let t0 = now();
    let before = cache.stats.downloadedBytes;
    let lease = await cache.acquire(bigDigest);
    lease.release();
    const firstMs = now() - t0;
    const firstBytes = cache.stats.downloadedBytes - before;
    if (firstBytes !== BIG_SIZE) throw new Error(`first acquire downloaded ${firstBytes} bytes, expected ${BIG_SIZE}`);
    const acqMibs = BIG_SIZE / MiB / (firstMs / 1000);
    t0 = now();
    before = cache.stats.downloadedBytes;
    lease = await cache.acquire(bigDigest);
    lease.release();
    const secondMs = now() - t0;
    const secondBytes = cache.stats.downloadedBytes - before;
    // A restarted agent (new CasCache on the same directory) hashes the blob again, downloads nothing.
    const cache2 = new CasCache({ dir: join(dir, 'agent-cas'), coordinatorUrl: s.kiln.url, token: s.kiln.agentToken });
    t0 = now();
    lease = await cache2.acquire(bigDigest);
    lease.release();
    const restartMs = now() - t0;
    const restartBytes = cache2.stats.downloadedBytes;
    // 8 concurrent acquires of one new 1 MiB digest.
    const one = makeBlobs(1, MiB)[0]!;
    await putAll(s, 'kiln', [one], 1);
    const d0 = cache.stats.downloads;
    const b0 = cache.stats.downloadedBytes;
    t0 = now();
    const leases = await Promise.all(Array.from({ length: 8 }, () => cache.acquire(`sha256:${one.hex}` as Digest)));
    const concMs = now() - t0;
    for (const l of leases) l.release();
    const downloads = cache.stats.downloads - d0;
    const concBytes = cache.stats.downloadedBytes - b0;

    const limits: Array<[string, number]> = [
      ['(a) sha256', sha.mibs],
      ['(b) bare http GET', bm.getBare],
      ['(c) dd conv=fsync, just before', ddNow],
    ];
    const [ln, lv] = limits.reduce((x, y) => (y[1] < x[1] ? y : x));
    console.log(
      `agent cache, first acquire of ${bl} (GET via fetch + sha256 verify + write + fsync): ${fmt(firstMs, 0)} ms = ${fmt(acqMibs, 0)} MiB/s; kiln GET to a discarding sink ${fmt(bm.getKiln, 0)} MiB/s; dd just before ${fmt(ddNow, 0)} MiB/s`,
    );
    console.log(`agent cache, second acquire: ${secondBytes} bytes moved in ${fmt(secondMs, 2)} ms (first: ${firstBytes} bytes in ${fmt(firstMs, 0)} ms)`);
    console.log(`agent cache, after a restart (new CasCache, same dir; re-hashes once): ${restartBytes} bytes moved in ${fmt(restartMs, 0)} ms; sha256 of ${bl} at (a) takes ${fmt((BIG_SIZE / MiB / sha.mibs) * 1000, 0)} ms`);
    console.log(`agent cache, 8 concurrent acquires of a new 1 MiB digest: ${downloads} download(s), ${concBytes} bytes, ${fmt(concMs, 1)} ms`);
    ratioRow(`agent cache 1st acquire ${bl} (info)`, acqMibs, 'MiB/s', `min(a,b,c) = ${ln}`, lv, null);
    rows.push({ name: 'agent cache 2nd acquire, bytes moved', ours: `${secondBytes} B in ${fmt(secondMs, 1)} ms`, comparator: `1st: ${firstBytes} B in ${fmt(firstMs, 0)} ms`, ratio: fmt(secondBytes / firstBytes, 3), target: '0 B', met: secondBytes === 0 });
    rows.push({ name: 'agent cache after restart, bytes moved', ours: `${restartBytes} B in ${fmt(restartMs, 0)} ms`, comparator: `sha256 at (a): ${fmt((BIG_SIZE / MiB / sha.mibs) * 1000, 0)} ms`, ratio: fmt(restartMs / ((BIG_SIZE / MiB / sha.mibs) * 1000), 3), target: '0 B', met: restartBytes === 0 });
    rows.push({ name: 'agent cache 8 concurrent acquires, 1 MiB', ours: `${downloads} download(s)`, comparator: '8 acquires', ratio: fmt(downloads / 8, 3), target: '1 download', met: downloads === 1 });

    // --- table ---------------------------------------------------------------------------
    console.log('');
    const head: Row = { name: 'result', ours: 'kiln', comparator: 'comparator (same run)', ratio: 'ratio', target: 'target', met: null };
    const w = (k: keyof Omit<Row, 'met'>) => Math.max(...[head, ...rows].map((r) => r[k].length));
    const line = (r: Row, verdict: string) =>
      `${r.name.padEnd(w('name'))}  ${r.ours.padStart(w('ours'))}  ${r.comparator.padEnd(w('comparator'))}  ${r.ratio.padStart(w('ratio'))}  ${r.target.padEnd(w('target'))}  ${verdict}`;
    console.log(line(head, ''));
    for (const r of rows) console.log(line(r, r.met === null ? '' : r.met ? 'met' : 'MISSED'));
    const met = rows.filter((r) => r.met === true).length;
    const missed = rows.filter((r) => r.met === false).length;
    console.log(`targets: ${met} met, ${missed} missed`);
  } finally {
    agent.destroy();
    if (child && child.exitCode === null) {
      child.send({ type: 'stop' });
      await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill();
    }
    await rm(dir, { recursive: true, force: true });
  }
}

if (args[0] === '--serve') {
  serve(args[1]!).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
