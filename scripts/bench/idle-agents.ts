/**
 * Benchmark child process for connections.ts: the load generator. Opens many idle agent
 * connections over real WebSockets, each speaking the agent's side of the protocol: a real
 * `hello` (distinct name, noop executor), then — once a `welcome` arrived — a `heartbeat`
 * frame (running: [], load, health, as an issue-5 agent sends) every
 * `heartbeat_interval_ms` of that welcome, jittered ±10 % like agent/agent.ts. The first
 * heartbeat of each connection comes at a random point of the first interval, as in a
 * fleet whose agents connected at different times. The same client code drives the kiln
 * coordinator and the bare `ws` comparator, so both receive byte-identical frames.
 *
 * Runs in its own process so the coordinator's CPU and memory are not shared with it.
 *
 * IPC: parent -> {type:'open', url, token, count, prefix, concurrency, sources}
 *               -> {type:'opened', welcomed, failed, ms, firstError, welcomeBytes}
 *      parent -> {type:'stats'} -> {type:'stats', open, sent, acked, closed, heartbeatBytes, ackBytes, lastCloses}
 *      parent -> {type:'stop'}  (closes every socket, exits)
 */
import WebSocket from 'ws';
import { KILN_VERSION, MAX_FRAME_BYTES, PROTOCOL_VERSIONS, decodeFrame, encodeFrame, jitter, randomToken, type Payload } from '../../shared/index.js';

interface OpenMsg {
  type: 'open';
  url: string;
  token: string;
  count: number;
  prefix: string;
  /** Handshakes (open -> welcome) in flight at once. */
  concurrency: number;
  /** Local addresses to connect from, round robin (127.0.0.x; widens the ephemeral port space). */
  sources: string[];
}

interface Conn {
  ws: WebSocket;
  nextId: number;
  timer: NodeJS.Timeout | null;
  welcomed: boolean;
}

const conns: Conn[] = [];
const stats = { sent: 0, acked: 0, closed: 0, heartbeatBytes: 0, ackBytes: 0, welcomeBytes: 0 };
const closeReasons: string[] = [];
let opened = 0;

const HEARTBEAT_BODY: Payload<'heartbeat'> = {
  running: [],
  load: { load1: 0.42, cpus: 2, mem_used_mib: 3120, mem_total_mib: 24_000, disk_free_mib: 181_000 },
  health: { accepting: true, problem: null },
};

function helloFrame(name: string): Buffer {
  return encodeFrame(
    'hello',
    1,
    {
      protocol_versions: [...PROTOCOL_VERSIONS],
      agent_version: KILN_VERSION,
      name,
      session: randomToken(12),
      platforms: [{ platform: 'linux/amd64', emulated: false }],
      labels: {},
      max_jobs: 1,
      executor: 'noop',
      docker: null,
      gpus: [],
      running: [],
      health: { accepting: true, problem: null },
    },
    PROTOCOL_VERSIONS[PROTOCOL_VERSIONS.length - 1]!,
  );
}

function heartbeat(c: Conn, version: number): void {
  if (c.ws.readyState !== WebSocket.OPEN) return;
  const frame = encodeFrame('heartbeat', ++c.nextId, HEARTBEAT_BODY, version);
  stats.heartbeatBytes = frame.length;
  c.ws.send(frame);
  stats.sent++;
}

/** Opens one connection; resolves true once its welcome arrived, false when it failed first. */
function openOne(m: OpenMsg, index: number): Promise<{ ok: boolean; error?: string }> {
  return new Promise((resolve) => {
    const localAddress = m.sources.length > 0 ? m.sources[index % m.sources.length] : undefined;
    const ws = new WebSocket(m.url, {
      headers: { authorization: `Bearer ${m.token}` },
      maxPayload: MAX_FRAME_BYTES,
      perMessageDeflate: false,
      handshakeTimeout: 60_000,
      ...(localAddress ? { localAddress } : {}),
    });
    const c: Conn = { ws, nextId: 1, timer: null, welcomed: false };
    let settled = false;
    const settle = (r: { ok: boolean; error?: string }) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    ws.on('open', () => ws.send(helloFrame(`${m.prefix}-${String(index).padStart(5, '0')}`)));
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      if (!isBinary) return;
      const d = decodeFrame(buf, 'agent');
      if (!d.ok) {
        settle({ ok: false, error: `invalid frame from the server: ${d.error}` });
        return;
      }
      if (!c.welcomed) {
        if (d.frame.type !== 'welcome') {
          settle({ ok: false, error: `expected welcome, got ${d.frame.type}: ${JSON.stringify(d.frame.payload)}` });
          return;
        }
        c.welcomed = true;
        stats.welcomeBytes = buf.length;
        const version = d.frame.payload.protocol_version;
        const interval = d.frame.payload.heartbeat_interval_ms;
        const tick = () => {
          heartbeat(c, version);
          c.timer = setTimeout(tick, jitter(interval, 0.1));
        };
        c.timer = setTimeout(tick, Math.floor(Math.random() * interval));
        conns.push(c);
        opened++;
        settle({ ok: true });
        return;
      }
      if (d.frame.type === 'ack') {
        stats.acked++;
        stats.ackBytes = buf.length;
      }
    });
    ws.on('close', (code, reason) => {
      if (c.timer) clearTimeout(c.timer);
      if (c.welcomed) {
        stats.closed++;
        opened--;
        if (closeReasons.length < 5) closeReasons.push(`${code} ${reason.toString()}`);
      }
      settle({ ok: false, error: `closed before welcome: ${code} ${reason.toString()}` });
    });
    ws.on('error', (err) => settle({ ok: false, error: err.message }));
  });
}

let nextIndex = 0;

async function open(m: OpenMsg): Promise<void> {
  const t0 = performance.now();
  let welcomed = 0;
  let failed = 0;
  let firstError: string | null = null;
  const end = nextIndex + m.count;
  const worker = async () => {
    while (nextIndex < end) {
      const r = await openOne(m, nextIndex++);
      if (r.ok) welcomed++;
      else {
        failed++;
        firstError ??= r.error ?? 'unknown error';
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, m.concurrency) }, worker));
  process.send!({ type: 'opened', welcomed, failed, ms: performance.now() - t0, firstError, welcomeBytes: stats.welcomeBytes });
}

process.on('message', (m: { type: string }) => {
  if (m.type === 'open') void open(m as OpenMsg);
  else if (m.type === 'stats') process.send!({ type: 'stats', open: opened, ...stats, lastCloses: closeReasons });
  else if (m.type === 'stop') {
    for (const c of conns) {
      if (c.timer) clearTimeout(c.timer);
      c.ws.terminate();
    }
    setTimeout(() => process.exit(0), 100);
  }
});
process.on('disconnect', () => process.exit(0));
