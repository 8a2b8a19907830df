/**
 * `image:`, `platforms:` and `matrix:` in the build spec: expanded node names, the index
 * node of a multi-platform image, `needs`/`from` across expanded nodes, substitution of
 * matrix values, size limits and bad specs (errors name the node and field).
 */
import { describe, expect, it } from 'vitest';
import { validateSpec, type FieldError, type ResolvedNode, type ValidateOptions } from '../../shared/index.js';
import { MAX_EXPANSION } from '../../shared/spec/expand.js';

const opts: ValidateOptions = { form: 'file', defaultPlatform: 'linux/amd64' };
const F = 'FROM kiln/busybox:1\n';

function ok(nodes: Record<string, unknown>): Map<string, ResolvedNode> {
  const r = validateSpec({ nodes }, opts);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return new Map(r.value.nodes.map((n) => [n.name, n]));
}
function errors(nodes: Record<string, unknown>): FieldError[] {
  const r = validateSpec({ nodes }, opts);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}

describe('image refs on a node', () => {
  it('normalises one ref or a list, and never reuses a pushing node', () => {
    const n = ok({ a: { dockerfile_inline: F, image: '127.0.0.1:5000/team/app' }, b: { dockerfile_inline: F, image: ['r.io/x:1', 'r.io/x:latest'] }, c: { dockerfile_inline: F } });
    expect(n.get('a')).toMatchObject({ images: ['127.0.0.1:5000/team/app:latest'], reuse: false });
    expect(n.get('b')!.images).toEqual(['r.io/x:1', 'r.io/x:latest']);
    expect(n.get('c')!.images).toBeUndefined();
    expect(n.get('c')!.reuse).toBe(true);
  });

  it('an invalid reference is an error naming node and field', () => {
    const e = errors({ app: { dockerfile_inline: F, image: ['r.io/ok:1', 'r.io/Bad:1'] } });
    expect(e).toEqual([expect.objectContaining({ path: 'nodes.app.image.1', message: expect.stringContaining("node 'app': field 'image.1': invalid image reference 'r.io/Bad:1'") })]);
    expect(errors({ app: { dockerfile_inline: F, image: 'r.io/x:1', reuse: true } })[0]!.message).toContain('always builds');
    expect(errors({ app: { dockerfile_inline: F, image: ['r.io/x:1', 'r.io/x:1'] } })[0]!.message).toContain('listed twice');
  });
});

describe('platforms', () => {
  const spec = {
    app: { platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'], allow_emulation: true, image: '127.0.0.1:5000/team/app:1.2', dockerfile_inline: F, outputs: { bin: '/out' } },
    use: { platforms: ['linux/arm64', 'linux/s390x'], inputs: { bin: { from: 'app.bin' } }, dockerfile_inline: F },
    after: { needs: ['app'], dockerfile_inline: F },
    one: { platform: 'linux/s390x', inputs: { bin: { from: 'app.bin' } }, dockerfile_inline: F },
  };

  it('fans out into one node per platform and an index node named like the node', () => {
    const n = ok(spec);
    expect([...n.keys()]).toEqual(['app.linux-amd64', 'app.linux-arm64', 'app.linux-s390x', 'app', 'use.linux-arm64', 'use.linux-s390x', 'after', 'one']);
    expect(n.get('app.linux-arm64')).toMatchObject({ platform: 'linux/arm64', allow_emulation: true, images: ['127.0.0.1:5000/team/app:1.2-linux-arm64'], origin: 'app', reuse: false });
    expect(n.get('app')).toMatchObject({
      images: ['127.0.0.1:5000/team/app:1.2'],
      index: [
        { node: 'app.linux-amd64', platform: 'linux/amd64' },
        { node: 'app.linux-arm64', platform: 'linux/arm64' },
        { node: 'app.linux-s390x', platform: 'linux/s390x' },
      ],
      needs: ['app.linux-amd64', 'app.linux-arm64', 'app.linux-s390x'],
      context: null,
      dockerfile_inline: null,
      reuse: false,
    });
    expect(n.get('app')!.origin).toBeUndefined();
  });

  it('needs: [app] waits for the index; from: app.bin takes the same platform', () => {
    const n = ok(spec);
    expect(n.get('after')!.needs).toEqual(['app']);
    expect(n.get('use.linux-s390x')!.inputs[0]!.from).toEqual({ node: 'app.linux-s390x', output: 'bin' });
    expect(n.get('use.linux-s390x')!.needs).toEqual(['app.linux-s390x']);
    expect(n.get('one')!.inputs[0]!.from).toEqual({ node: 'app.linux-s390x', output: 'bin' });
  });

  it('without image, needs: [app] waits for every platform node', () => {
    const n = ok({ app: { platforms: ['linux/amd64', 'linux/arm64'], dockerfile_inline: F }, after: { needs: ['app'], dockerfile_inline: F } });
    expect(n.has('app')).toBe(false);
    expect(n.get('after')!.needs).toEqual(['app.linux-amd64', 'app.linux-arm64']);
  });

  it('refuses what cannot be expanded, naming node and field', () => {
    const msg = (nodes: Record<string, unknown>) => errors(nodes).map((e) => e.message).join('\n');
    expect(msg({ a: { platforms: ['linux/amd64'], platform: 'linux/amd64', dockerfile_inline: F } })).toContain("node 'a': field 'platforms': give either platform or platforms");
    expect(msg({ a: { platforms: ['linux/amd64', 'linux/amd64'], dockerfile_inline: F } })).toContain('lists a platform twice');
    expect(msg({ a: { platforms: ['windows/amd64'], dockerfile_inline: F } })).toContain("invalid platform 'windows/amd64'");
    expect(msg({ a: { platforms: ['linux/amd64', 'linux/arm64'], dockerfile_inline: F, outputs: { o: '/o' } }, b: { dockerfile_inline: F, platform: 'linux/s390x', inputs: { o: { from: 'a.o' } } } })).toContain(
      "node 'b': field 'inputs.o.from': node 'a' expands to 2 nodes and none of them",
    );
    expect(msg({ a: { platforms: ['linux/amd64'], dockerfile_inline: F }, 'a.linux-amd64': { dockerfile_inline: F } })).toContain("expanded node name 'a.linux-amd64' is used twice");
  });
});

describe('matrix', () => {
  it('expands combinations (times platforms) with values substituted', () => {
    const n = ok({
      py: {
        matrix: { python: ['3.11', '3.12'], variant: ['slim', 'full'] },
        platforms: ['linux/amd64', 'linux/arm64'],
        build_args: { PY: '${{ matrix.python }}', V: 'v-${{matrix.variant}}' },
        labels: ['tier=${{ matrix.variant }}'],
        image: 'r.io/py:${{ matrix.python }}-${{ matrix.variant }}',
        outputs: { 'whl-${{ matrix.variant }}': '/out' },
        dockerfile_inline: F,
      },
      test: { matrix: { python: ['3.12'] }, platforms: ['linux/arm64'], inputs: { w: { from: 'py.whl-full' } }, dockerfile_inline: F },
    });
    const names = [...n.keys()];
    expect(names.filter((x) => x.startsWith('py'))).toEqual([
      'py.3.11-slim.linux-amd64', 'py.3.11-slim.linux-arm64', 'py.3.11-slim',
      'py.3.11-full.linux-amd64', 'py.3.11-full.linux-arm64', 'py.3.11-full',
      'py.3.12-slim.linux-amd64', 'py.3.12-slim.linux-arm64', 'py.3.12-slim',
      'py.3.12-full.linux-amd64', 'py.3.12-full.linux-arm64', 'py.3.12-full',
    ]);
    const one = n.get('py.3.12-slim.linux-arm64')!;
    // platform nodes get the TARGET* args (the Engine's BuildKit leaves them empty before FROM)
    expect(one.build_args).toEqual({ TARGETPLATFORM: 'linux/arm64', TARGETOS: 'linux', TARGETARCH: 'arm64', PY: '3.12', V: 'v-slim' });
    expect(one.labels).toEqual({ tier: 'slim' });
    expect(one.outputs).toEqual([{ name: 'whl-slim', path: '/out' }]);
    expect(one.images).toEqual(['r.io/py:3.12-slim-linux-arm64']);
    expect({ ...one.matrix }).toEqual({ python: '3.12', variant: 'slim' });
    expect(n.get('py.3.12-slim')!.images).toEqual(['r.io/py:3.12-slim']);
    // from: picks the node with the same platform and python value (variant only the producer has: one output name fits)
    expect(n.get('test.3.12.linux-arm64')!.inputs[0]!.from).toEqual({ node: 'py.3.12-full.linux-arm64', output: 'whl-full' });
  });

  it('limits the expansion and refuses unknown axes, with the node named', () => {
    const big = Array.from({ length: 17 }, (_, i) => `v${i}`);
    const e = errors({ wide: { matrix: { a: big, b: big }, dockerfile_inline: F } });
    expect(e[0]!.message).toBe(`node 'wide': field 'matrix': expands to 289 nodes (at most ${MAX_EXPANSION} per node)`);
    expect(errors({ m: { matrix: { a: ['1'] }, build_args: { X: '${{ matrix.b }}' }, dockerfile_inline: F } })[0]!.message).toContain("node 'm': field 'build_args.X': ${{ matrix.b }} names no axis");
    expect(errors({ m: { matrix: { 'bad-axis': ['1'] }, dockerfile_inline: F } })[0]!.message).toContain('invalid axis name');
    expect(errors({ m: { matrix: { a: ['1', '1'] }, dockerfile_inline: F } })[0]!.message).toContain('lists a value twice');
    expect(errors({ m: { matrix: { a: ['x'.repeat(70)] }, dockerfile_inline: F } })[0]!.message).toContain('is invalid');
  });
});

describe('expansion errors', () => {
  it('reports a problem of the spec node once, not once per expanded node', () => {
    const e = errors({ m: { matrix: { a: ['1', '2'] }, platforms: ['linux/amd64', 'linux/arm64'], build_args: { X: '${{ matrix.nope }}' }, dockerfile_inline: F } });
    expect(e.filter((x) => x.message.includes('matrix.nope'))).toHaveLength(1);
  });
});

describe('image refs across nodes', () => {
  it('refuses two nodes pushing to one ref', () => {
    const e = errors({ m: { matrix: { a: ['1', '2'] }, image: 'r.io/app:same', dockerfile_inline: F } });
    expect(e).toEqual([{ path: 'nodes.m.2.image', message: "node 'm.2': field 'image': 'r.io/app:same' is pushed by node 'm.1' too; give each node its own tag (e.g. with ${{ matrix.<axis> }})" }]);
    expect(errors({ a: { image: 'r.io/x:1', dockerfile_inline: F }, b: { image: 'r.io/x:1', dockerfile_inline: F } })[0]!.message).toContain("is pushed by node 'a' too");
  });
});
