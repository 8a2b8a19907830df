/**
 * Benchmark child process for connections.ts: the server side, run with --expose-gc so
 * its memory can be read after a full GC.
 *
 *   mode "kiln": a real coordinator (startCoordinator: HTTP API, agent hub, engine, lowdb
 *                state with persistence on, in a temp data dir), silent logger.
 *   mode "bare": the comparator, a bare `ws` WebSocketServer (noServer on a node:http
 *                server, perMessageDeflate off, the coordinator's maxPayload) that answers
 *                the first frame of a connection with a pre-encoded welcome and every later
 *                frame with a pre-encoded ack of the coordinator's ack size; it decodes
 *                nothing.
 *
 * IPC: parent -> {type:'start', mode, intervalMs, dataDir} -> {type:'ready', url, token, ackBytes?, welcomeBytes?}
 *      parent -> {type:'mem'}   -> {type:'mem', connections, rss, heapUsed, heapTotal, external, arrayBuffers}
 *      parent -> {type:'window-start'} -> {type:'window-started'}
 *      parent -> {type:'window-end'}   -> {type:'window', wallMs, cpuUs, userUs, systemUs, lag: {p50, p99, max} (ms beyond the sampling period), frames}
 *      parent -> {type:'stop'}  (stops the server, exits)
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { WebSocketServer, type WebSocket } from 'ws';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/coordinator.js';
import { AGENT_SOCKET_PATH, coerceError, KILN_VERSION, MAX_FRAME_BYTES, MAX_LOG_CHUNK_BYTES, createLogger, encodeFrame } from '../../shared/index.js';

interface StartMsg {
  type: 'start';
  mode: 'kiln' | 'bare';
  intervalMs: number;
  dataDir: string;
}

/** monitorEventLoopDelay's sampling timer; its histogram holds whole timer periods, so this much is subtracted. */
const LAG_RESOLUTION_MS = 10;
const gc = (globalThis as { gc?: () => void }).gc;

let coord: RunningCoordinator | null = null;
let bare: { server: Server; wss: WebSocketServer; sockets: Set<WebSocket> } | null = null;
/** Frames received by the bare server (the kiln side counts acks in the load generator). */
let bareFrames = 0;
let window: { cpu: NodeJS.CpuUsage; t0: number; frames: number; lag: IntervalHistogram } | null = null;

function connections(): number {
  if (coord) return coord.engine.agents.connected().length;
  return bare?.sockets.size ?? 0;
}

async function startKiln(m: StartMsg): Promise<void> {
  const config = loadCoordinatorConfig(
    { dataDir: m.dataDir, listen: '127.0.0.1:0', heartbeatInterval: `${m.intervalMs}ms`, logLevel: 'silent', logFormat: 'json' },
    { env: {}, arch: process.arch, isTTY: false },
  );
  coord = await startCoordinator(config, createLogger({ name: 'bench', level: 'silent', format: 'json' }));
  process.send!({ type: 'ready', url: `${coord.url.replace('http', 'ws')}${AGENT_SOCKET_PATH}`, token: coord.tokens.agentToken });
}

async function startBare(m: StartMsg): Promise<void> {
  const welcome = encodeFrame(
    'welcome',
    1,
    {
      protocol_version: 1,
      coordinator_version: KILN_VERSION,
      agent_name: 'idle-00000',
      heartbeat_interval_ms: m.intervalMs,
      lost_after_ms: 3 * m.intervalMs,
      max_log_chunk_bytes: MAX_LOG_CHUNK_BYTES,
      cutoff_cancel_ms: 300_000,
      resume: [],
    },
    1,
  );
  const ack = encodeFrame('ack', 2, { ref: 2 }, 1);
  const server = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false });
  const sockets = new Set<WebSocket>();
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      let first = true;
      ws.on('message', () => {
        bareFrames++;
        if (first) {
          first = false;
          ws.send(welcome);
        } else ws.send(ack);
      });
      ws.on('close', () => sockets.delete(ws));
      ws.on('error', () => {});
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  bare = { server, wss, sockets };
  const port = (server.address() as AddressInfo).port;
  process.send!({ type: 'ready', url: `ws://127.0.0.1:${port}${AGENT_SOCKET_PATH}`, token: 'unused', ackBytes: ack.length, welcomeBytes: welcome.length });
}

async function mem(): Promise<void> {
  if (!gc) throw new Error('run this child with --expose-gc');
  // Full GCs until RSS stops falling (V8 hands freed pages back lazily).
  let u = process.memoryUsage();
  for (let i = 0; i < 10; i++) {
    gc();
    await delay(200);
    const next = process.memoryUsage();
    const settled = Math.abs(next.rss - u.rss) < 256 * 1024;
    u = next;
    if (settled && i >= 2) break;
  }
  process.send!({ type: 'mem', connections: connections(), rss: u.rss, heapUsed: u.heapUsed, heapTotal: u.heapTotal, external: u.external, arrayBuffers: u.arrayBuffers });
}

function windowStart(): void {
  const lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  lag.enable();
  window = { cpu: process.cpuUsage(), t0: performance.now(), frames: bareFrames, lag };
  process.send!({ type: 'window-started' });
}

function windowEnd(): void {
  if (!window) throw new Error('window-end without window-start');
  const cpu = process.cpuUsage(window.cpu);
  const wallMs = performance.now() - window.t0;
  window.lag.disable();
  const ms = (ns: number) => Math.max(0, ns / 1e6 - LAG_RESOLUTION_MS);
  process.send!({
    type: 'window',
    wallMs,
    cpuUs: cpu.user + cpu.system,
    userUs: cpu.user,
    systemUs: cpu.system,
    lag: { p50: ms(window.lag.percentile(50)), p99: ms(window.lag.percentile(99)), max: ms(window.lag.max) },
    frames: bareFrames - window.frames,
  });
  window = null;
}

async function stop(): Promise<void> {
  if (coord) await Promise.race([coord.stop(), delay(10_000)]);
  if (bare) {
    for (const ws of bare.sockets) ws.terminate();
    bare.server.close();
  }
  process.exit(0);
}

process.on('message', (m: { type: string }) => {
  const run = (fn: () => Promise<void> | void) =>
    Promise.resolve()
      .then(fn)
      .catch((err: unknown) => {
        process.stderr.write(`connections-server: ${coerceError(err).stack ?? String(err)}\n`);
        process.exit(1);
      });
  if (m.type === 'start') {
    const s = m as StartMsg;
    void run(() => (s.mode === 'kiln' ? startKiln(s) : startBare(s)));
  } else if (m.type === 'mem') void run(mem);
  else if (m.type === 'window-start') void run(windowStart);
  else if (m.type === 'window-end') void run(windowEnd);
  else if (m.type === 'stop') void run(stop);
});
process.on('disconnect', () => process.exit(0));
