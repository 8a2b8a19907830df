/**
 * Protocol frames: every message type survives encode/decode (bytes stay bytes), and
 * decodeFrame turns every kind of bad frame into an error naming the problem instead of
 * throwing.
 */
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION, type MessageType, type Payload } from '../../shared/index.js';

const attempt = 'a-01m87q8730000-abcdefgh';
const samples: { [K in MessageType]: Payload<K> } = {
  hello: {
    protocol_versions: [PROTOCOL_VERSION],
    agent_version: '0.1.0',
    name: 'h1',
    session: 'session-123',
    platforms: [{ platform: 'linux/amd64', emulated: false }],
    labels: { gpu: 'false' },
    max_jobs: 2,
    executor: 'docker',
    docker: { version: '20.10.24', api_version: '1.41', os: 'linux', arch: 'amd64', buildkit_version: null },
    gpus: [{ index: 0, model: 'A100', memory_mib: 40960, uuid: null }],
    running: [{ attempt_id: attempt, log_bytes: 10 }],
  },
  welcome: { protocol_version: 1, coordinator_version: '0.1.0', agent_name: 'h1', heartbeat_interval_ms: 10_000, lost_after_ms: 30_000, max_log_chunk_bytes: 65_536, cutoff_cancel_ms: 300_000, resume: [{ attempt_id: attempt, action: 'continue', log_offset: 10 }] },
  heartbeat: {
    running: [attempt],
    load: { load1: 0.5, cpus: 2, mem_used_mib: 1000, mem_total_mib: 24000, disk_free_mib: 5000 },
    gpus: [{ index: 0, memory_used_mib: 100, utilization_pct: 3 }],
    health: { accepting: false, problem: 'disk full' },
  },
  assign: {
    attempt_id: attempt,
    build_id: 'b-1',
    node: 'n',
    attempt: 1,
    platform: 'linux/s390x',
    context: null,
    dockerfile: null,
    dockerfile_inline: 'FROM x',
    build_args: { A: '1' },
    target: null,
    timeout_ms: 1000,
    image_tag: 'kiln-build/b-1:n',
    no_cache: false,
    inputs: [{ name: 'runtime', digest: 'sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', mount: '/opt/python', env: { PATH: '/opt/python/bin:$PATH' } }],
    outputs: [{ name: 'wheel', path: '/out' }],
    resolve: true,
    gpus: [0],
    test: { command: ['/bin/sh', '-c', 'nvidia-smi'], timeout_ms: 60_000, env: { CUDA_VISIBLE_DEVICES: '0' } },
  },
  resolved: { attempt_id: attempt, base_images: [{ ref: 'kiln/busybox:1', digest: 'sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb' }, { ref: 'missing:1', digest: null }], dockerfile_digest: 'sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb' },
  proceed: { attempt_id: attempt },
  accept: { attempt_id: attempt },
  reject: { attempt_id: attempt, reason: 'full' },
  started: { attempt_id: attempt, at: 123 },
  log: { attempt_id: attempt, seq: 3, offset: 100, data: Buffer.from([0, 1, 2, 255, 10]) },
  finished: {
    attempt_id: attempt,
    status: 'failed',
    exit_code: 3,
    error: 'exit code: 3',
    failed_step: '[2/2] RUN exit 3',
    infra: false,
    image_id: null,
    timings: { accepted_at: 1, started_at: 2, finished_at: 3, fetch_ms: 0, build_ms: 1 },
    log_bytes: 105,
    outputs: [{ name: 'wheel', digest: 'sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', size: 10, media_type: 'application/vnd.kiln.artifact.v1.tar' }],
    base_images: [],
    dockerfile_digest: null,
  },
  cancel: { attempt_id: attempt, reason: 'user' },
  ack: { ref: 9, attempt_id: attempt, log_offset: 105 },
  error: { code: 'E_PROTOCOL', message: 'bad' },
};

const toCoordinator = new Set(['hello', 'heartbeat', 'accept', 'reject', 'resolved', 'started', 'log', 'finished', 'ack', 'error']);
const toAgent = new Set(['welcome', 'assign', 'proceed', 'cancel', 'ack', 'error']);

describe('protocol codec', () => {
  it.each(Object.keys(samples) as MessageType[])('round-trips %s', (type) => {
    const side = toCoordinator.has(type) ? 'coordinator' : 'agent';
    const r = decodeFrame(encodeFrame(type, 7, samples[type] as never, 1), side);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.frame).toMatchObject({ v: 1, type, id: 7 });
    if (type === 'log') {
      const p = r.frame.payload as Payload<'log'>;
      expect(Buffer.from(p.data)).toEqual(Buffer.from([0, 1, 2, 255, 10]));
    } else {
      expect(r.frame.payload).toEqual(samples[type]);
    }
  });

  it('refuses frames travelling the wrong way', () => {
    for (const type of Object.keys(samples) as MessageType[]) {
      const buf = encodeFrame(type, 1, samples[type] as never, 1);
      if (!toCoordinator.has(type)) expect(decodeFrame(buf, 'coordinator')).toMatchObject({ ok: false, error: expect.stringContaining('may not be sent to the coordinator') });
      if (!toAgent.has(type)) expect(decodeFrame(buf, 'agent')).toMatchObject({ ok: false, error: expect.stringContaining('may not be sent to the agent') });
    }
  });

  it('names what is wrong with a bad frame, never throwing', () => {
    const packr = new Packr({ useRecords: false });
    expect(decodeFrame(Buffer.from([0x92, 0x01]), 'coordinator')).toMatchObject({ ok: false, error: expect.stringMatching(/not valid msgpack/) });
    expect(decodeFrame(packr.pack({ hello: 1 }), 'coordinator')).toMatchObject({ ok: false, error: expect.stringMatching(/invalid envelope/) });
    expect(decodeFrame(packr.pack({ v: 1, type: 'teleport', id: 1, payload: {} }), 'coordinator')).toMatchObject({ ok: false, error: "unknown message type 'teleport'", id: 1 });
    const bad = decodeFrame(packr.pack({ v: 1, type: 'log', id: 2, payload: { attempt_id: attempt, seq: -1, offset: 0, data: 'text' } }), 'coordinator');
    expect(bad).toMatchObject({ ok: false, id: 2 });
    expect(!bad.ok && bad.error).toMatch(/invalid log payload: payload\.seq/);
    expect(!bad.ok && bad.error).toMatch(/payload\.data: must be binary data/);
    const extra = decodeFrame(packr.pack({ v: 1, type: 'accept', id: 3, payload: { attempt_id: attempt, sneaky: true } }), 'coordinator');
    expect(!extra.ok && extra.error).toMatch(/sneaky/);
  });

  it('refuses to encode an invalid payload', () => {
    expect(() => encodeFrame('started', 1, { attempt_id: attempt, at: -5 } as never, 1)).toThrow(/refusing to send invalid started frame/);
  });

  it('keeps frames well under maxPayload for the largest log chunk', () => {
    const big = encodeFrame('log', 1, { ...samples.log, data: Buffer.alloc(64 * 1024, 1) }, 1);
    expect(big.length).toBeLessThan(MAX_FRAME_BYTES);
  });
});
