/**
 * The agent's session (agent/agent-session.ts) without a socket, on manual timers: hello,
 * welcome and heartbeats; assignments accepted, run and reported, refused without a free
 * slot; log chunks and the result held until acked and resent after a reconnect from the
 * coordinator's offset; a silent connection dropped; drain resolving once everything
 * was acked.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { AgentSession, type AgentLink } from '../../agent/agent-session.js';
import type { Executor, RunIO, RunResult } from '../../agent/executors/executor.js';
import { decodeFrame, encodeFrame, PROTOCOL_VERSION, type AssignPayload, type Frame, type Payload, type ToAgentType } from '../../shared/index.js';
import { assignPayload } from '../helpers/fake-coordinator.js';
import { ManualTimers } from '../helpers/manual-timers.js';

const ok: RunResult = { status: 'success', exitCode: null, error: null, failedStep: null, infra: false, imageId: 'sha256:x', fetchMs: 1, buildMs: 2 };

function setup(maxJobs = 1) {
  const timers = new ManualTimers();
  const runs = new Map<string, { io: RunIO; done: (r: RunResult) => void }>();
  const executor: Pick<Executor, 'kind' | 'run'> = {
    kind: 'noop',
    run: (a, io) => new Promise((done) => runs.set(a.attempt_id, { io, done })),
  };
  const session = new AgentSession({
    session: 'session-1',
    name: 'unit',
    labels: {},
    maxJobs,
    platforms: [{ platform: 'linux/amd64', emulated: false }],
    executor,
    docker: null,
    gpus: [],
    logger: pino({ level: 'silent' }),
    now: () => timers.now,
    timers,
    random: () => 0.5,
  });
  let id = 0;
  const connect = () => {
    const sent: Frame[] = [];
    const link: AgentLink & { terminated: string[]; welcomes: number } = {
      terminated: [],
      welcomes: 0,
      send: (b) => {
        const d = decodeFrame(b, 'coordinator');
        if (!d.ok) throw new Error(d.error);
        sent.push(d.frame);
      },
      terminate: (why) => void link.terminated.push(why),
      welcomed: () => void link.welcomes++,
    };
    session.opened(link);
    const receive = <T extends ToAgentType>(type: T, payload: Payload<T>) => session.received(encodeFrame(type, ++id, payload, PROTOCOL_VERSION));
    const welcome = (resume: Payload<'welcome'>['resume'] = []) =>
      receive('welcome', { protocol_version: 1, coordinator_version: 't', agent_name: 'unit', heartbeat_interval_ms: 1000, lost_after_ms: 3000, max_log_chunk_bytes: 65536, cutoff_cancel_ms: 60_000, resume });
    const of = (type: string) => sent.filter((f) => f.type === type).map((f) => f.payload as Record<string, unknown>);
    return { sent, link, receive, welcome, of };
  };
  return { timers, runs, session, connect };
}

function assign(attempt_id: string): AssignPayload {
  return assignPayload({ attempt_id, timeout_ms: 60_000 });
}

const settle = () => new Promise((r) => setImmediate(r));

describe('agent session', () => {
  it('says hello, heartbeats from the welcome on, and drops a connection that goes silent', () => {
    const { timers, connect } = setup();
    const c = connect();
    expect(c.sent.map((f) => f.type)).toEqual(['hello']);
    expect(c.sent[0]!.payload).toMatchObject({ name: 'unit', session: 'session-1', running: [], max_jobs: 1 });
    timers.advance(5000);
    expect(c.of('heartbeat')).toHaveLength(0); // nothing but the hello before the welcome
    c.welcome();
    expect(c.link.welcomes).toBe(1);
    expect(c.of('heartbeat')).toHaveLength(1); // at once
    timers.advance(2000);
    expect(c.of('heartbeat')).toHaveLength(3);
    timers.advance(1000);
    expect(c.link.terminated).toHaveLength(0); // silent for exactly lost_after_ms
    timers.advance(1000);
    expect(c.link.terminated).toHaveLength(1); // silent for more than lost_after_ms
  });

  it('accepts, runs and reports an assignment, refuses one without a free slot, and keeps the result until acked', async () => {
    const { runs, session, connect } = setup(1);
    const c = connect();
    c.welcome();
    c.receive('assign', assign('a-1'));
    c.receive('assign', assign('a-2'));
    expect(c.of('accept')).toEqual([{ attempt_id: 'a-1' }]);
    expect(c.of('reject')).toEqual([{ attempt_id: 'a-2', reason: 'no free slot (1 jobs running)' }]);
    runs.get('a-1')!.io.log('hello\n');
    runs.get('a-1')!.done(ok);
    await settle();
    expect(c.of('log')[0]).toMatchObject({ attempt_id: 'a-1', offset: 0 });
    expect(c.of('finished')[0]).toMatchObject({ attempt_id: 'a-1', status: 'success', log_bytes: 6 });
    let drained = false;
    void session.drain().then(() => (drained = true));
    await settle();
    expect(drained).toBe(false);
    c.receive('ack', { ref: 1, attempt_id: 'a-1' });
    await settle();
    expect(drained).toBe(true);
    expect(session.jobs.size).toBe(0);
  });

  it('after a reconnect resends the log after the offset the coordinator has, and the unacked result', async () => {
    const { timers, runs, session, connect } = setup(1);
    const first = connect();
    first.welcome();
    first.receive('assign', assign('a-1'));
    runs.get('a-1')!.io.log('one\n');
    timers.advance(50);
    runs.get('a-1')!.io.log('two\n');
    runs.get('a-1')!.done(ok);
    await settle();
    session.closed();
    const second = connect();
    expect(second.sent[0]!.payload).toMatchObject({ running: [{ attempt_id: 'a-1', log_bytes: 8 }] });
    second.welcome([{ attempt_id: 'a-1', action: 'continue', log_offset: 4 }]);
    expect(second.of('log').map((l) => l.offset)).toEqual([4]);
    expect(second.of('finished')).toHaveLength(1);
  });
});
