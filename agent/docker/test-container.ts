/**
 * A node's test phase: after a successful build, its `test.command` runs in a container
 * of the built image (network none, the node's env, the node's GPUs attached through the
 * Engine API's device requests), its stdout and stderr go into the node's log, and its
 * exit code decides the node. The container is attached before it starts (no output is
 * lost), killed on timeout or abort, and removed whatever happens.
 *
 * `testContainerSpec` is the create request as data (pure, unit-tested); `runTest` runs
 * it. Engine errors are thrown as they come (the executor tells a broken engine from a
 * refused request); a command that cannot start (the engine answers 4xx) is the test's
 * failure, reported as `not_started`.
 */
import { Writable } from 'node:stream';
import type Docker from 'dockerode';
import { coerceError, formatDuration, sleep } from '../../shared/core.js';

export interface TestSpec {
  command: readonly string[];
  timeout_ms: number;
  env: Readonly<Record<string, string>>;
}

export interface TestContainerInput {
  imageId: string;
  test: TestSpec;
  /** nvidia-smi indexes given to the attempt; none: no device request. */
  gpus: readonly number[];
  attemptId: string;
}

/** The POST /containers/create body for a node's test. */
export function testContainerSpec(i: TestContainerInput): Docker.ContainerCreateOptions {
  const hostConfig: Docker.HostConfig = { NetworkMode: 'none', AutoRemove: false };
  if (i.gpus.length > 0) hostConfig.DeviceRequests = [{ Driver: 'nvidia', DeviceIDs: i.gpus.map(String), Capabilities: [['gpu']] }];
  return {
    Image: i.imageId,
    // The command is the whole argv: an ENTRYPOINT in the image does not wrap it.
    Entrypoint: [],
    Cmd: [...i.test.command],
    Env: Object.keys(i.test.env)
      .sort()
      .map((k) => `${k}=${i.test.env[k]}`),
    NetworkDisabled: true,
    Tty: false,
    OpenStdin: false,
    AttachStdin: false,
    AttachStdout: true,
    AttachStderr: true,
    Labels: { 'kiln.attempt': i.attemptId, 'kiln.role': 'test' },
    HostConfig: hostConfig,
  };
}

/** argv as a shell would need it typed, for the log header. */
export function shellQuote(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export type TestOutcome =
  | { kind: 'exited'; exitCode: number }
  | { kind: 'timeout' }
  | { kind: 'aborted' }
  /** The engine refused to start the command (not found, not executable): the test's fault. */
  | { kind: 'not_started'; error: string };

export interface RunTestOptions {
  log: (chunk: string | Uint8Array) => void;
  signal: AbortSignal;
  /** How long to wait for the rest of the output after the container exited. @default 5000 */
  drainMs?: number;
}

export async function runTest(docker: Docker, input: TestContainerInput, o: RunTestOptions): Promise<TestOutcome> {
  const { test, gpus } = input;
  o.log(`[kiln] test: ${shellQuote(test.command)}${gpus.length ? ` (GPUs ${gpus.join(', ')})` : ''}\n`);
  if (o.signal.aborted) return { kind: 'aborted' };
  const container = await docker.createContainer(testContainerSpec(input));
  try {
    const stream = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
    const outputDone = new Promise<void>((resolve) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', () => resolve());
    });
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        o.log(chunk);
        cb();
      },
    });
    container.modem.demuxStream(stream, sink, sink);
    try {
      await container.start();
    } catch (err) {
      const status = (err as { statusCode?: number }).statusCode;
      if (typeof status === 'number' && status >= 400 && status < 500) {
        const message = ((err as { json?: { message?: string } }).json?.message ?? coerceError(err).message).trim();
        o.log(`[kiln] test could not start: ${message}\n`);
        return { kind: 'not_started', error: message };
      }
      throw err;
    }

    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stopped = new Promise<TestOutcome>((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'timeout' }), test.timeout_ms);
      onAbort = () => resolve({ kind: 'aborted' });
      o.signal.addEventListener('abort', onAbort, { once: true });
    });
    const exited = (container.wait() as Promise<{ StatusCode: number }>).then((r): TestOutcome => ({ kind: 'exited', exitCode: r.StatusCode }));
    let outcome: TestOutcome;
    try {
      outcome = await Promise.race([exited, stopped]);
    } finally {
      clearTimeout(timer);
      if (onAbort) o.signal.removeEventListener('abort', onAbort);
    }
    if (outcome.kind !== 'exited') {
      exited.catch(() => {});
      await container.kill().catch(() => {});
    }
    await Promise.race([outputDone, sleep(o.drainMs ?? 5_000)]);
    if (outcome.kind === 'exited') o.log(`[kiln] test exited with code ${outcome.exitCode}\n`);
    else if (outcome.kind === 'timeout') o.log(`[kiln] test timed out after ${formatDuration(test.timeout_ms)}; killed\n`);
    return outcome;
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
}
