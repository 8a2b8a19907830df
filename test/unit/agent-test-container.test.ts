/**
 * The create request for a node's test container, as data: the built image, the command
 * as the whole argv (the image's ENTRYPOINT cleared), the test's env in a stable order,
 * no network, not auto-removed (the agent removes it after reading the exit code), and
 * the attempt's GPUs as one nvidia device request by index; none without GPUs.
 */
import { describe, expect, it } from 'vitest';
import { shellQuote, testContainerSpec } from '../../agent/docker/test-container.js';

describe('test container spec', () => {
  const base = { imageId: 'sha256:' + 'a'.repeat(64), attemptId: 'att-1', test: { command: ['/bin/sh', '-c', 'pytest -q'], timeout_ms: 60_000, env: { B: '2', A: 'x=y' } } };

  it('runs the command in the built image without network, keeps the container for its exit code', () => {
    expect(testContainerSpec({ ...base, gpus: [] })).toEqual({
      Image: base.imageId,
      Entrypoint: [],
      Cmd: ['/bin/sh', '-c', 'pytest -q'],
      Env: ['A=x=y', 'B=2'],
      NetworkDisabled: true,
      Tty: false,
      OpenStdin: false,
      AttachStdin: false,
      AttachStdout: true,
      AttachStderr: true,
      Labels: { 'kiln.attempt': 'att-1', 'kiln.role': 'test' },
      HostConfig: { NetworkMode: 'none', AutoRemove: false },
    });
  });

  it('asks for exactly the assigned GPUs by nvidia-smi index', () => {
    const spec = testContainerSpec({ ...base, gpus: [2, 0] });
    expect(spec.HostConfig).toEqual({ NetworkMode: 'none', AutoRemove: false, DeviceRequests: [{ Driver: 'nvidia', DeviceIDs: ['2', '0'], Capabilities: [['gpu']] }] });
  });

  it('does not share the caller’s arrays', () => {
    const command = ['true'];
    const spec = testContainerSpec({ ...base, test: { ...base.test, command }, gpus: [] });
    command.push('x');
    expect(spec.Cmd).toEqual(['true']);
  });

  it('quotes the command for the log header as a shell would need it', () => {
    expect(shellQuote(['/bin/sh', '-c', "echo 'hi' && exit 3"])).toBe(`/bin/sh -c 'echo '\\''hi'\\'' && exit 3'`);
    expect(shellQuote(['pytest', '-k', 'a b', '--x=1'])).toBe("pytest -k 'a b' --x=1");
  });
});
