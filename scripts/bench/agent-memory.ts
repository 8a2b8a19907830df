/**
 * Memory of an idle agent (issue 10): a real `kiln agent` process (dist/cli/main.js, the
 * docker executor against the local Docker Engine unless --executor noop) connected to a
 * real `kiln coordinator` process, against a comparator measured in the same run: a bare
 * `node -e` process holding one `ws` connection (to a bare ws server in this process) and
 * sending a ping at the agent's heartbeat interval, i.e. the least a Node agent can be.
 *
 * Steps: start the coordinator (temp data dir, port 0) and read its URL and agent token;
 * start the agent and the comparator at once; wait until the agent logs "connected to
 * coordinator" and the comparator's socket is open; then sample VmRSS (/proc/PID/status)
 * of both every --every-ms for --samples samples. Reports, per process, the first sample,
 * the median and the maximum of the samples after the first --settle-ms (V8 shrinks its
 * heap some seconds after start-up, so the early samples are higher), and VmHWM (the
 * peak); the medians of RssAnon (heaps: V8's and malloc's) and RssFile (mapped files,
 * mostly the node binary's pages: shared with every node process, but counted in RSS);
 * the agent's median minus the comparator's; and the target (<= 60 MiB).
 *
 *   node dist/scripts/bench/agent-memory.js [--executor docker|noop] [--samples 30]
 *        [--every-ms 1000] [--settle-ms 10000] [--kiln path/to/dist/cli/main.js]
 *
 * --kiln runs another build of kiln (e.g. an older checkout's, for a before/after figure).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocketServer } from 'ws';
import { fmt, machineLine, median } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} needs a number, got '${args[i + 1] ?? ''}'`);
  return v;
};
const strArg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? (args[i + 1] ?? dflt) : dflt;
};
const EXECUTOR = strArg('executor', 'docker');
const SAMPLES = Math.max(1, Math.floor(arg('samples', 30)));
const EVERY_MS = arg('every-ms', 1000);
const SETTLE_MS = arg('settle-ms', 10_000);
const HEARTBEAT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 60_000;
const TARGET_MIB = 60;

/** dist/scripts/bench -> the repository (node_modules) and dist/cli/main.js. */
const DIST = join(import.meta.dirname, '..', '..');
const ROOT = join(DIST, '..');
const KILN = strArg('kiln', join(DIST, 'cli', 'main.js'));

function status(pid: number): { rss: number; hwm: number; anon: number; file: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024, anon: kib('RssAnon') / 1024, file: kib('RssFile') / 1024 };
}

/** Resolves with the first line of the child's output that matches; rejects if it exits first or after the timeout. */
function waitForLine(child: ChildProcess, re: RegExp, what: string): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${what}: nothing after ${CONNECT_TIMEOUT_MS} ms; output so far:\n${seen.slice(-2000)}`)), CONNECT_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      seen += chunk.toString('utf8');
      const m = re.exec(seen);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what}: exited with ${code}; output:\n${seen.slice(-2000)}`));
    });
  });
}

/** The comparator: one ws connection, a ping per heartbeat interval, nothing else. */
const COMPARATOR = `
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1]);
ws.on('open', () => { console.log('open'); setInterval(() => ws.ping(), ${HEARTBEAT_MS}); });
ws.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

interface Series {
  pid: number;
  samples: number[];
  anon: number[];
  file: number[];
  hwm: number;
}

function report(name: string, s: Series, skip: number): string {
  const settled = s.samples.slice(skip);
  return (
    `${name.padEnd(38)} first ${fmt(s.samples[0]!)} MiB, median ${fmt(median(settled))} MiB, max ${fmt(Math.max(...settled))} MiB (after ${SETTLE_MS / 1000} s), peak (VmHWM) ${fmt(s.hwm)} MiB; ` +
    `median anon ${fmt(median(s.anon.slice(skip)))} MiB + file ${fmt(median(s.file.slice(skip)))} MiB`
  );
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-agent-mem-'));
  const children: ChildProcess[] = [];
  const bare = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  try {
    await new Promise<void>((resolve) => bare.once('listening', () => resolve()));
    const barePort = (bare.address() as { port: number }).port;

    const env = { ...process.env, KILN_LOG_FORMAT: 'json' };
    const coordinator = spawn(process.execPath, [KILN, 'coordinator', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--heartbeat-interval', `${HEARTBEAT_MS / 1000}s`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(coordinator);
    const url = (await waitForLine(coordinator, /listening on (http:\/\/[0-9.:]+)/, 'coordinator'))[1]!;
    const tokenFile = join(dir, 'data', 'tokens', 'agent');
    await readFile(tokenFile);

    const agent = spawn(
      process.execPath,
      [KILN, 'agent', '--coordinator', url, '--token-file', tokenFile, '--name', 'mem-1', '--work-dir', join(dir, 'agent'), '--executor', EXECUTOR, '--log-level', 'info'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(agent);
    const comparator = spawn(process.execPath, ['-e', COMPARATOR, `ws://127.0.0.1:${barePort}`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(comparator);
    await Promise.all([waitForLine(agent, /connected to coordinator/, 'agent'), waitForLine(comparator, /^open$/m, 'comparator')]);

    const series: Series[] = [agent, comparator].map((c) => ({ pid: c.pid!, samples: [], anon: [], file: [], hwm: 0 }));
    for (let i = 0; i < SAMPLES; i++) {
      if (i > 0) await sleep(EVERY_MS);
      for (const s of series) {
        const st = status(s.pid);
        s.samples.push(st.rss);
        s.anon.push(st.anon);
        s.file.push(st.file);
        s.hwm = st.hwm;
      }
    }
    const skip = Math.min(SAMPLES - 1, Math.floor(SETTLE_MS / Math.max(1, EVERY_MS)));
    const [a, c] = series as [Series, Series];
    const aSettled = a.samples.slice(skip);
    const cSettled = c.samples.slice(skip);

    console.log(`\n## idle agent memory (issue 10): a connected, idle kiln agent vs a bare node process holding one ws connection`);
    console.log(`# ${machineLine()}; ${KILN}; executor ${EXECUTOR}; ${SAMPLES} samples of VmRSS every ${EVERY_MS} ms from the connection on`);
    console.log(report(`kiln agent (${EXECUTOR} executor)`, a, skip));
    console.log(report('comparator: node -e, one ws connection', c, skip));
    const diff = median(aSettled) - median(cSettled);
    console.log(`agent - comparator (medians): ${fmt(diff)} MiB; ratio ${fmt(median(aSettled) / median(cSettled), 2)}`);
    console.log(`target (issue 10) idle agent <= ${TARGET_MIB} MiB RSS: median ${fmt(median(aSettled))} MiB, max ${fmt(Math.max(...aSettled))} MiB -> ${Math.max(...aSettled) <= TARGET_MIB ? 'met' : median(aSettled) <= TARGET_MIB ? 'met (median; max above)' : 'NOT met'}`);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    bare.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);
