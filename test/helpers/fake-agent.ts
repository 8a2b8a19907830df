/**
 * A scripted agent for HTTP API tests: it connects to a real coordinator over the real
 * WebSocket protocol (frames through the shared codec, so both ends validate them), says
 * hello with a label that only test nodes ask for, heartbeats, and answers every
 * assignment at once without Docker: accept, started, one log chunk, then `finished`.
 * A node whose name starts with `fail` fails (exit code 1, a failed step, an error); any
 * other succeeds, and its declared outputs are uploaded to the coordinator's CAS (with the
 * agent token) and reported, so the build has artifacts, logs and provenance. This gives
 * API tests builds in every state (success, failed) and a connected agent, cheaply.
 */
import { readFile } from 'node:fs/promises';
import { WebSocket } from 'ws';
import { AGENT_SOCKET_PATH, MAX_FRAME_BYTES, PROTOCOL_VERSION, apiPath, coerceError, decodeFrame, encodeFrame, sha256, type AssignPayload, type Payload, type ToCoordinatorType } from '../../shared/index.js';
import { waitFor, type CoordinatorHandle } from './cluster.js';

export interface FakeAgentOptions {
  coordinator: CoordinatorHandle;
  name: string;
  /** Labels in the hello (nodes select the agent with them); default `{fake: "yes"}`. */
  labels?: Record<string, string>;
  platform?: string;
  maxJobs?: number;
}

export class FakeAgent {
  private ws: WebSocket | null = null;
  private nextId = 0;
  private heartbeat: NodeJS.Timeout | null = null;
  private readonly seqs = new Map<string, number>();
  /** Attempts finished, by node name (what the test may wait for). */
  readonly finished: Array<{ build: string; node: string; status: 'success' | 'failed' }> = [];
  readonly errors: string[] = [];
  welcomed = false;

  private constructor(private readonly o: FakeAgentOptions, private readonly agentToken: string) {}

  static async start(o: FakeAgentOptions): Promise<FakeAgent> {
    const token = (await readFile(o.coordinator.agentTokenFile, 'utf8')).trim();
    const a = new FakeAgent(o, token);
    await a.connect();
    return a;
  }

  private send<T extends ToCoordinatorType>(type: T, payload: Payload<T>): void {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.ws.send(encodeFrame(type, ++this.nextId, payload, PROTOCOL_VERSION));
  }

  private async connect(): Promise<void> {
    const url = `${this.o.coordinator.url.replace(/^http/, 'ws')}${AGENT_SOCKET_PATH}`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.agentToken}` }, maxPayload: MAX_FRAME_BYTES });
    this.ws = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return;
      const d = decodeFrame(data, 'agent');
      if (!d.ok) {
        this.errors.push(d.error);
        return;
      }
      const f = d.frame;
      if (f.type === 'welcome') {
        this.welcomed = true;
        const every = Math.max(200, Math.floor(f.payload.heartbeat_interval_ms / 2));
        this.heartbeat = setInterval(() => this.send('heartbeat', { running: [], load: { load1: 0.5, cpus: 2, mem_used_mib: 512, mem_total_mib: 4096, disk_free_mib: 10_000 }, gpus: [], health: { accepting: true, problem: null } }), every);
        this.heartbeat.unref();
        this.send('heartbeat', { running: [], load: { load1: 0.5, cpus: 2, mem_used_mib: 512, mem_total_mib: 4096, disk_free_mib: 10_000 }, gpus: [], health: { accepting: true, problem: null } });
      } else if (f.type === 'assign') {
        void this.run(f.payload).catch((err: unknown) => this.errors.push(`run ${f.payload.attempt_id}: ${coerceError(err).message}`));
      } else if (f.type === 'proceed') {
        // nothing to do: the fake builds at once
      } else if (f.type === 'error') {
        this.errors.push(`${f.payload.code}: ${f.payload.message}`);
      }
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`agent upgrade refused: ${res.statusCode}`)));
    });
    this.send('hello', {
      protocol_versions: [PROTOCOL_VERSION],
      agent_version: 'fake-1',
      name: this.o.name,
      session: `fake-${process.pid}-${Date.now()}`,
      platforms: [{ platform: this.o.platform ?? `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`, emulated: false }],
      labels: this.o.labels ?? { fake: 'yes' },
      max_jobs: this.o.maxJobs ?? 4,
      executor: 'docker',
      docker: { version: '0.0.0-fake', api_version: '1.41', os: 'linux', arch: 'amd64', buildkit_version: null },
      gpus: [],
      running: [],
      health: { accepting: true, problem: null },
    });
    await waitFor(`fake agent ${this.o.name} to be welcomed`, () => this.welcomed || (this.errors.length > 0 ? Promise.reject(new Error(this.errors.join('; '))) : false), 30_000, 20);
  }

  private async upload(bytes: Buffer): Promise<string> {
    const digest = sha256(bytes);
    const res = await fetch(`${this.o.coordinator.url}${apiPath.casBlob(digest)}`, { method: 'PUT', body: bytes, headers: { authorization: `Bearer ${this.agentToken}`, 'content-type': 'application/x-tar' } });
    if (res.status !== 200 && res.status !== 201) throw new Error(`output upload: ${res.status} ${await res.text()}`);
    return digest;
  }

  private async run(a: AssignPayload): Promise<void> {
    const acceptedAt = Date.now();
    this.send('accept', { attempt_id: a.attempt_id });
    this.send('started', { attempt_id: a.attempt_id, at: Date.now() });
    const fail = a.node.startsWith('fail');
    const text = `#1 [internal] load build definition from Dockerfile\n#2 fake build of ${a.node} (attempt ${a.attempt})\n${fail ? '#3 ERROR: process "/bin/sh -c exit 1" did not complete successfully: exit code: 1\n' : '#3 DONE 0.0s\n'}`;
    const data = Buffer.from(text);
    const seq = this.seqs.get(a.attempt_id) ?? 0;
    this.seqs.set(a.attempt_id, seq + 1);
    this.send('log', { attempt_id: a.attempt_id, seq, offset: 0, data: new Uint8Array(data) });
    const outputs: Payload<'finished'>['outputs'] = [];
    if (!fail) {
      for (const o of a.outputs) {
        // a tiny tar-like blob is enough: the coordinator stores what the agent reports
        const bytes = Buffer.from(`artifact ${o.name} of ${a.build_id}/${a.node} at ${o.path}\n`);
        outputs.push({ name: o.name, digest: await this.upload(bytes), size: bytes.length, media_type: 'application/vnd.kiln.artifact.v1.tar' });
      }
    }
    const now = Date.now();
    this.send('finished', {
      attempt_id: a.attempt_id,
      status: fail ? 'failed' : 'success',
      exit_code: fail ? 1 : null,
      error: fail ? 'process "/bin/sh -c exit 1" did not complete successfully: exit code: 1' : null,
      failed_step: fail ? '[2/2] RUN exit 1' : null,
      infra: false,
      image_id: fail ? null : sha256(`image ${a.attempt_id}`),
      timings: { accepted_at: acceptedAt, started_at: acceptedAt, finished_at: now, fetch_ms: 0, build_ms: now - acceptedAt },
      log_bytes: data.length,
      outputs,
      base_images: [{ ref: 'kiln/busybox:1', digest: sha256('kiln/busybox:1') }],
      dockerfile_digest: a.dockerfile_inline ? sha256(a.dockerfile_inline) : null,
    });
    this.finished.push({ build: a.build_id, node: a.node, status: fail ? 'failed' : 'success' });
  }

  async stop(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(1000, 'test done');
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2000).unref();
    });
  }
}
