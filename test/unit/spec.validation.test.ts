/**
 * The build spec: what a valid spec resolves to, and errors that name node and field for
 * everything a user gets wrong (in both the file form and the submitted form).
 */
import { describe, expect, it } from 'vitest';
import { findCycle, parseDuration, parseSpecText, validateSpec, type FieldError, type ValidateOptions } from '../../shared/index.js';

const file: ValidateOptions = { form: 'file', defaultPlatform: 'linux/amd64' };
const submitted: ValidateOptions = { form: 'submitted', defaultPlatform: 'linux/s390x' };

function errors(raw: unknown, opts = file): FieldError[] {
  const r = validateSpec(raw, opts);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}

describe('build spec', () => {
  it('resolves defaults', () => {
    const r = validateSpec(
      { nodes: { a: { context: './app' }, b: { dockerfile_inline: 'FROM x', needs: ['a', 'a'], timeout: '1h30m', build_args: { N: 3, B: true } } } },
      file,
    );
    expect(r.ok).toBe(false); // needs listed twice
    const ok = validateSpec({ name: 'x', nodes: { a: { context: './app' }, b: { dockerfile_inline: 'FROM x', needs: ['a'], timeout: '1h30m', build_args: { N: 3, B: true } } } }, file);
    if (!ok.ok) throw new Error(JSON.stringify(ok.errors));
    const [a, b] = ok.value.nodes;
    expect(a).toMatchObject({ platform: 'linux/amd64', dockerfile: 'Dockerfile', dockerfile_inline: null, needs: [], timeout_ms: 3_600_000 });
    expect(b).toMatchObject({ dockerfile: null, timeout_ms: 5_400_000, build_args: { N: '3', B: 'true' }, needs: ['a'] });
  });

  it.each([
    [{ nodes: { a: { dockerfile_inline: 'F', colour: 'red' } } }, 'nodes.a.colour', "node 'a': field 'colour': unknown field"],
    [{ nodes: { a: { dockerfile_inline: 'F', needs: ['zz'] } } }, 'nodes.a.needs', "node 'a': field 'needs': unknown node 'zz'"],
    [{ nodes: { a: { dockerfile_inline: 'F', needs: ['a'] } } }, 'nodes.a.needs', "node 'a': field 'needs': node cannot need itself"],
    [{ nodes: { a: { dockerfile_inline: 'F', platform: 'windows/amd64' } } }, 'nodes.a.platform', "node 'a': field 'platform': invalid platform 'windows/amd64'"],
    [{ nodes: { a: { dockerfile_inline: 'F', platform: 'amd64' } } }, 'nodes.a.platform', "node 'a': field 'platform': invalid platform 'amd64'"],
    [{ nodes: { a: { dockerfile_inline: 'F', dockerfile: 'D' } } }, 'nodes.a.dockerfile', 'not both'],
    [{ nodes: { a: {} } }, 'nodes.a.context', 'a context (with a Dockerfile in it) or dockerfile_inline'],
    [{ nodes: { a: { context: '.', dockerfile: '../Dockerfile' } } }, 'nodes.a.dockerfile', 'relative path inside the context'],
    [{ nodes: { a: { dockerfile_inline: 'F', timeout: '20x' } } }, 'nodes.a.timeout', "invalid duration '20x'"],
    [{ nodes: { 'bad name!': { dockerfile_inline: 'F' } } }, 'nodes.bad name!', 'invalid node name'],
    [{ nodes: {} }, 'nodes', 'at least one node'],
    [{ nodes: { a: { dockerfile_inline: 'F' } }, extra: 1 }, 'extra', 'unknown field'],
    [{ nodes: { a: { dockerfile_inline: 'F', build_args: { 'bad-arg': 'x' } } } }, 'nodes.a.build_args', "invalid build arg name 'bad-arg'"],
    [{ nodes: { a: { dockerfile_inline: 'F', outputs: { o: 'out' } } } }, 'nodes.a.outputs.o', 'must be an absolute path'],
    [{ nodes: { a: { dockerfile_inline: 'F', outputs: { o: '/a/../b' } } } }, 'nodes.a.outputs.o', 'normalised absolute path'],
    [{ nodes: { a: { dockerfile_inline: 'F', outputs: { 'o.x': '/o' } } } }, 'nodes.a.outputs.o.x', 'invalid output name'],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { r: { from: 'zz.o' } } } } }, 'nodes.a.inputs.r.from', "unknown node 'zz'"],
    [{ nodes: { u: { dockerfile_inline: 'F' }, a: { dockerfile_inline: 'F', inputs: { r: { from: 'u.o' } } } } }, 'nodes.a.inputs.r.from', "node 'u' has no output 'o' (it declares no outputs)"],
    [{ nodes: { a: { dockerfile_inline: 'F', outputs: { o: '/o' }, inputs: { r: { from: 'a.o' } } } } }, 'nodes.a.inputs.r.from', 'cannot use its own output'],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { r: { from: 'noDot' } } } } }, 'nodes.a.inputs.r.from', 'must be <node>.<output>'],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { r: {} } } } }, 'nodes.a.inputs.r', 'exactly one of from'],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { r: { digest: 'sha256:abc' } } } } }, 'nodes.a.inputs.r.digest', 'must be sha256:'],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { Runtime: { digest: `sha256:${'a'.repeat(64)}` } } } } }, 'nodes.a.inputs.Runtime', 'stage name'],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { r: { digest: `sha256:${'a'.repeat(64)}`, mount: '/a b' } } } } }, 'nodes.a.inputs.r.mount', 'whitespace'],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { r: { digest: `sha256:${'a'.repeat(64)}`, env: { 'A-B': 'x' } } } } } }, 'nodes.a.inputs.r.env', "invalid variable name 'A-B'"],
    [{ nodes: { a: { dockerfile_inline: 'F', inputs: { r: { digest: `sha256:${'a'.repeat(64)}`, colour: 1 } } } } }, 'nodes.a.inputs.r.colour', 'unknown field'],
  ])('rejects %j naming %s', (raw, path, message) => {
    const errs = errors(raw);
    expect(errs.find((e) => e.path === path && e.message.includes(message)), JSON.stringify(errs)).toBeDefined();
  });

  it('resolves inputs and outputs, and makes an input\'s upstream node a need', () => {
    const r = validateSpec(
      {
        nodes: {
          runtime: { dockerfile_inline: 'F', outputs: { runtime: '/opt/python/' } },
          wheel: { dockerfile_inline: 'F', inputs: { runtime: { from: 'runtime.runtime', mount: '/opt/python', env: { PATH: '/opt/python/bin:$PATH' } }, pin: { digest: `sha256:${'b'.repeat(64)}` } } },
        },
      },
      file,
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const [runtime, wheel] = r.value.nodes;
    expect(runtime!.outputs).toEqual([{ name: 'runtime', path: '/opt/python' }]);
    expect(wheel!.needs).toEqual(['runtime']);
    expect(wheel!.reuse).toBe(true);
    expect(wheel!.inputs).toEqual([
      { name: 'runtime', from: { node: 'runtime', output: 'runtime' }, digest: null, mount: '/opt/python', env: { PATH: '/opt/python/bin:$PATH' } },
      { name: 'pin', from: null, digest: `sha256:${'b'.repeat(64)}`, mount: null, env: {} },
    ]);
  });

  it('reports a cycle made through inputs', () => {
    const errs = errors({ nodes: { a: { dockerfile_inline: 'F', outputs: { o: '/o' }, inputs: { x: { from: 'b.o' } } }, b: { dockerfile_inline: 'F', outputs: { o: '/o' }, inputs: { x: { from: 'a.o' } } } } });
    expect(errs[0]!.message).toMatch(/dependency cycle/);
  });

  it('reports a cycle with its path', () => {
    const errs = errors({ nodes: { a: { dockerfile_inline: 'F', needs: ['c'] }, b: { dockerfile_inline: 'F', needs: ['a'] }, c: { dockerfile_inline: 'F', needs: ['b'] } } });
    expect(errs[0]!.message).toMatch(/dependency cycle: a -> c -> b -> a/);
  });

  it('requires digests for contexts in the submitted form, and uses the coordinator default platform', () => {
    expect(errors({ nodes: { a: { context: './app' } } }, submitted)[0]).toMatchObject({ path: 'nodes.a.context' });
    const ok = validateSpec({ nodes: { a: { context: `sha256:${'a'.repeat(64)}` } } }, submitted);
    expect(ok.ok && ok.value.nodes[0]!.platform).toBe('linux/s390x');
  });

  it('handles a 10,000-node chain and finds a cycle through all of it', () => {
    const nodes: Record<string, { dockerfile_inline: string; needs?: string[] }> = {};
    for (let i = 0; i < 10_000; i++) nodes[`n${i}`] = { dockerfile_inline: 'F', ...(i > 0 ? { needs: [`n${i - 1}`] } : {}) };
    expect(validateSpec({ nodes }, file).ok).toBe(true);
    nodes.n0!.needs = ['n9999'];
    const cycle = findCycle(Object.entries(nodes).map(([name, n]) => ({ name, needs: n.needs ?? [] })));
    expect(cycle).toHaveLength(10_001);
  });

  it('parses YAML and JSON text, refusing duplicate names and invalid syntax', () => {
    expect(parseSpecText('nodes:\n  a: {dockerfile_inline: F}\n  a: {dockerfile_inline: G}\n')).toEqual({ ok: false, errors: [{ path: 'nodes.a', message: "duplicate node name 'a'" }] });
    expect(parseSpecText('{"nodes":{"a":{"dockerfile_inline":"F"},"a":{}}}')).toEqual({ ok: false, errors: [{ path: 'nodes.a', message: "duplicate node name 'a'" }] });
    const dupField = parseSpecText('{"nodes":{"a":{"needs":[],"needs":["b"]}}}');
    expect(dupField.ok === false && dupField.errors[0]!.message).toBe("node 'a': field 'needs': duplicate key 'needs'");
    expect(parseSpecText('nodes: [a').ok).toBe(false);
    expect(parseSpecText('- a\n- b\n')).toMatchObject({ ok: false, errors: [{ message: 'spec must be a mapping with `nodes`' }] });
    expect(parseSpecText('{"nodes":{"a\\"b":{"x":"}{"}}}')).toMatchObject({ ok: true });
  });

  it('parses durations', () => {
    expect(parseDuration('90')).toBe(90_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('1h x')).toBeNull();
    expect(parseDuration('')).toBeNull();
  });
});

describe('build spec: fleet requirements', () => {
  it('resolves labels (map and rules), emulation, GPUs, priority, retry and test', () => {
    const r = validateSpec(
      {
        priority: 5,
        nodes: {
          gpu: {
            dockerfile_inline: 'FROM x',
            labels: ['zone=eu', 'tier!=spot', 'tier!=preempt'],
            gpus: { count: 2, min_memory_mib: 16000, model: 'A100' },
            test: { command: 'nvidia-smi -L', timeout: '5m', env: { CUDA: '1' } },
            retry: false,
          },
          emu: { dockerfile_inline: 'FROM x', platform: 'linux/s390x', allow_emulation: true, labels: { pool: 'wheels' }, priority: -3, test: { command: ['/bin/true'] } },
        },
      },
      file,
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const [gpu, emu] = r.value.nodes;
    expect(gpu).toMatchObject({
      labels: { zone: 'eu' },
      labels_not: { tier: ['spot', 'preempt'] },
      gpus: { count: 2, min_memory_mib: 16000, model: 'A100' },
      test: { command: ['/bin/sh', '-c', 'nvidia-smi -L'], timeout_ms: 300_000, env: { CUDA: '1' } },
      retry: false,
      priority: 5,
      allow_emulation: false,
    });
    expect(emu).toMatchObject({ labels: { pool: 'wheels' }, labels_not: {}, allow_emulation: true, priority: -3, retry: true, gpus: null, test: { command: ['/bin/true'], timeout_ms: 3_600_000 } });
  });

  it.each([
    [{ labels: ['zone'] }, 'nodes.a.labels.0', "must be key=value or key!=value (got 'zone')"],
    [{ labels: ['zone=eu', 'zone!=eu'] }, 'nodes.a.labels', "label 'zone' is required to be 'eu' and not 'eu'"],
    [{ labels: ['zone=eu', 'zone=us'] }, 'nodes.a.labels.1', "required to be both 'eu' and 'us'"],
    [{ gpus: { count: 0 } }, 'nodes.a.gpus.count', ''],
    [{ gpus: { count: 1, vram: 3 } }, 'nodes.a.gpus.vram', 'unknown field'],
    [{ priority: 1.5 }, 'nodes.a.priority', ''],
    [{ test: { command: '' } }, 'nodes.a.test.command', ''],
    [{ test: { command: 'x', timeout: 'soon' } }, 'nodes.a.test.timeout', "invalid duration 'soon'"],
    [{ allow_emulation: 'yes' }, 'nodes.a.allow_emulation', ''],
  ])('rejects %j', (extra, path, message) => {
    const errs = errors({ nodes: { a: { dockerfile_inline: 'F', ...extra } } });
    const hit = errs.find((e) => e.path === path);
    expect(hit, JSON.stringify(errs)).toBeDefined();
    expect(hit!.message).toContain(message);
    expect(hit!.message).toMatch(/^node 'a': field /);
  });
});
