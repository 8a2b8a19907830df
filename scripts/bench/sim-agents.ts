/**
 * Benchmark child process: many simulated agents over real WebSockets, driven by the
 * parent through IPC (child_process.fork).
 *
 *   mode "kiln": N real `Agent`s (agent/agent.ts) with a no-op executor that records, for
 *                every assignment, when it arrived (ms, shared high-resolution clock).
 *   mode "echo": N bare `ws` clients that answer every message with a reply of the size
 *                of a `finished` frame: the comparator harness.
 *
 * Messages: parent -> {type:'start', ...} / {type:'report'} / {type:'stop'};
 *           child  -> {type:'ready'} / {type:'report', recv} .
 */
import { pino } from 'pino';
import WebSocket from 'ws';
import { Agent } from '../../agent/agent.js';
import type { Executor, RunIO, RunResult } from '../../agent/executors/executor.js';
import type { AssignPayload } from '../../shared/index.js';
import { coerceError } from '../../shared/index.js';
import { now } from './bench-util.js';

interface StartMsg {
  type: 'start';
  mode: 'kiln' | 'echo';
  url: string;
  token: string;
  count: number;
  /** echo mode: bytes of each reply */
  replyBytes?: number;
  namePrefix?: string;
}

const recv: Array<[string, number]> = [];

class RecordingNoop implements Executor {
  readonly kind = 'noop' as const;
  async info() {
    return { nativePlatform: 'linux/amd64', docker: null };
  }
  async run(job: AssignPayload, io: RunIO): Promise<RunResult> {
    recv.push([`${job.build_id}/${job.node}`, now()]);
    io.started();
    return { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId: null, fetchMs: 0, buildMs: 0 };
  }
}

const agents: Agent[] = [];
const sockets: WebSocket[] = [];

async function start(m: StartMsg): Promise<void> {
  if (m.mode === 'kiln') {
    const logger = pino({ level: 'silent' });
    for (let i = 0; i < m.count; i++) {
      const a = new Agent({
        url: m.url,
        token: m.token,
        name: `${m.namePrefix ?? 'sim'}-${i}`,
        labels: {},
        maxJobs: 1,
        extraPlatforms: [],
        executor: new RecordingNoop(),
        gpus: [],
        logger,
      });
      agents.push(a);
      void a.run().catch((err: unknown) => process.stderr.write(`agent ${i}: ${coerceError(err).message}\n`));
    }
  } else {
    const reply = Buffer.alloc(m.replyBytes ?? 200, 7);
    await Promise.all(
      Array.from({ length: m.count }, () => {
        return new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(m.url, { perMessageDeflate: false });
          ws.on('open', () => resolve());
          ws.on('error', reject);
          ws.on('message', () => ws.send(reply));
          sockets.push(ws);
        });
      }),
    );
  }
  process.send!({ type: 'ready' });
}

process.on('message', (m: { type: string } & Partial<StartMsg>) => {
  if (m.type === 'start') void start(m as StartMsg);
  else if (m.type === 'report') {
    process.send!({ type: 'report', recv: recv.splice(0) });
  } else if (m.type === 'stop') {
    for (const a of agents) void a.stop();
    for (const s of sockets) s.close();
    setTimeout(() => process.exit(0), 200);
  }
});
