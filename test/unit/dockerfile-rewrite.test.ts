// Unit tests for agent/docker/dockerfile-parse.ts, dockerfile-base-images.ts and dockerfile-rewrite.ts: the instruction splitter, baseImageRefs
// and golden outputs of rewriteForInputs (byte-exact, including newline styles and files
// without a trailing newline), plus its E_INVALID rejections.
import { describe, expect, it } from 'vitest';
import { baseImageRefs } from '../../shared/dockerfile/base-images.js';
import { splitDockerfile } from '../../shared/dockerfile/parse.js';
import { rewriteForInputs, type DockerfileInput } from '../../agent/docker/dockerfile-rewrite.js';
import { coerceError, isKilnError } from '../../shared/index.js';

const HEX = 'a'.repeat(64);
const IMAGE = `kiln-cas/${HEX}:latest`;
const INJECT = `FROM --platform=$BUILDPLATFORM ${IMAGE}`;

function input(over: Partial<DockerfileInput> = {}): DockerfileInput {
  return { name: 'tool', image: IMAGE, mount: null, env: {}, ...over };
}

function expectInvalid(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(isKilnError(caught, 'E_INVALID'), String(caught)).toBe(true);
  expect(coerceError(caught).message).toMatch(message);
}

describe('splitDockerfile', () => {
  it('joins continuation lines across comments and blank lines and keeps the raw text', () => {
    const df = 'FROM a\n\n# note\nRUN --mount=type=cache,target=/c \\\n  # inner comment\n\n  echo hi \\\n  && echo there\nCMD ["x"]';
    const { instructions, escape, newline } = splitDockerfile(df);
    expect(escape).toBe('\\');
    expect(newline).toBe('\n');
    expect(instructions.map((i) => [i.keyword, i.startLine, i.endLine])).toEqual([
      ['FROM', 1, 1],
      ['RUN', 4, 8],
      ['CMD', 9, 9],
    ]);
    const run = instructions[1]!;
    expect(run.flags).toEqual(['--mount=type=cache,target=/c']);
    expect(run.args).toBe('echo hi   && echo there');
    expect(run.raw).toBe('RUN --mount=type=cache,target=/c \\\n  # inner comment\n\n  echo hi \\\n  && echo there\n');
    expect(instructions.map((i) => i.raw).join('')).toBe(df.replace('\n\n# note\n', '\n'));
  });

  it('honours the escape directive and stops looking for directives after the first other line', () => {
    const df = '# escape=`\n# syntax=ignored-after-escape\nFROM a\nRUN echo a `\n  b \\\n# escape=\\\n';
    const parsed = splitDockerfile(df);
    expect(parsed.escape).toBe('`');
    expect(parsed.directives).toEqual({ escape: '`', syntax: 'ignored-after-escape' });
    expect(parsed.instructions.map((i) => [i.keyword, i.args])).toEqual([
      ['FROM', 'a'],
      ['RUN', 'echo a   b \\'],
    ]);
    expect(splitDockerfile('FROM a\n# escape=`\nRUN x \\\n y').escape).toBe('\\');
    expect(splitDockerfile('\n# escape=`\nFROM a').escape).toBe('\\');
  });

  it('upper-cases keywords, strips flag quotes like BuildKit and keeps CRLF and BOM', () => {
    const df = '\uFEFFfrom --platform="$BUILDPLATFORM" a AS b\r\nrun --mount=type=bind,from=x,\\"target=/a,b\\" ls\r\n';
    const parsed = splitDockerfile(df);
    expect(parsed.bom).toBe(true);
    expect(parsed.newline).toBe('\r\n');
    expect(parsed.instructions[0]).toMatchObject({ keyword: 'FROM', flags: ['--platform=$BUILDPLATFORM'], args: 'a AS b', raw: '\uFEFFfrom --platform="$BUILDPLATFORM" a AS b\r\n' });
    expect(parsed.instructions[1]).toMatchObject({ keyword: 'RUN', flags: ['--mount=type=bind,from=x,"target=/a,b"'], args: 'ls' });
  });

  it('rejects a second escape directive and an invalid escape token', () => {
    expectInvalid(() => splitDockerfile('# escape=`\n# escape=\\\nFROM a'), /only one escape parser directive/);
    expectInvalid(() => splitDockerfile('# escape=x\nFROM a'), /invalid escape token 'x'/);
  });
});

describe('baseImageRefs', () => {
  it('substitutes global ARG defaults, build-arg overrides and ${X:-y}', () => {
    const df = [
      'ARG REG=registry.example',
      'ARG BASE=${REG}/base:1',
      'ARG TAG',
      'ARG UNDECLARED_IN_ARGS="quoted value"',
      'FROM ${BASE} AS one',
      'FROM $REG/other:${TAG:-latest} AS two',
      'FROM ${REG}/plus${TAG:+-$TAG}',
      'ARG BASE=stage-local-ignored',
      'FROM ${BASE}',
      '',
    ].join('\n');
    expect(baseImageRefs(df, {})).toEqual([
      { ref: 'registry.example/base:1', platformFlag: null, line: 5, resolved: true },
      { ref: 'registry.example/other:latest', platformFlag: null, line: 6, resolved: true },
      { ref: 'registry.example/plus', platformFlag: null, line: 7, resolved: true },
    ]);
    expect(baseImageRefs(df, { REG: 'r.io', TAG: '2', NOT_DECLARED: 'x' })).toEqual([
      { ref: 'r.io/base:1', platformFlag: null, line: 5, resolved: true },
      { ref: 'r.io/other:2', platformFlag: null, line: 6, resolved: true },
      { ref: 'r.io/plus-2', platformFlag: null, line: 7, resolved: true },
    ]);
    expect(baseImageRefs(df, { BASE: 'direct:3' })[0]?.ref).toBe('direct:3');
  });

  it('keeps the --platform flag as written, skips scratch and earlier stages, dedupes by ref', () => {
    const df = [
      'FROM --platform=$BUILDPLATFORM golang:1.22 AS Build',
      'FROM build AS again',
      'FROM SCRATCH AS empty',
      'FROM scratch',
      'FROM AGAIN',
      'FROM golang:1.22',
      'FROM --platform=linux/arm64 alpine:3',
      'FROM later',
      'FROM busybox AS later',
    ].join('\n');
    expect(baseImageRefs(df, {})).toEqual([
      { ref: 'golang:1.22', platformFlag: '$BUILDPLATFORM', line: 1, resolved: true },
      { ref: 'alpine:3', platformFlag: 'linux/arm64', line: 7, resolved: true },
      { ref: 'later', platformFlag: null, line: 8, resolved: true },
      { ref: 'busybox', platformFlag: null, line: 9, resolved: true },
    ]);
  });

  it('leaves refs with unknown variables as written and marks them unresolved', () => {
    const df = 'ARG NODEFAULT\nFROM $NODEFAULT\nFROM ${MISSING}/x\nFROM img-${TARGETARCH}\nFROM ${TARGETARCH:-amd64}/y\nFROM base:${BAD:?x}\n';
    expect(baseImageRefs(df, {})).toEqual([
      { ref: '$NODEFAULT', platformFlag: null, line: 2, resolved: false },
      { ref: '${MISSING}/x', platformFlag: null, line: 3, resolved: false },
      { ref: 'img-${TARGETARCH}', platformFlag: null, line: 4, resolved: false },
      { ref: '${TARGETARCH:-amd64}/y', platformFlag: null, line: 5, resolved: false },
      { ref: 'base:${BAD:?x}', platformFlag: null, line: 6, resolved: false },
    ]);
    expect(baseImageRefs(df, { NODEFAULT: 'n:1' }, { TARGETARCH: 's390x' }).map((r) => [r.ref, r.resolved])).toEqual([
      ['n:1', true],
      ['${MISSING}/x', false],
      ['img-s390x', true],
      ['s390x/y', true],
      ['base:${BAD:?x}', false],
    ]);
  });

  it('uses the escape directive and quote removal when expanding', () => {
    const df = '# escape=`\nARG V="1.0"\nFROM "img:$V"\nFROM img:`$V\n';
    expect(baseImageRefs(df, {}).map((r) => r.ref)).toEqual(['img:1.0', 'img:$V']);
  });
});

describe('rewriteForInputs', () => {
  it('single stage: injects the stage, mount and ENV', () => {
    const df = 'FROM kiln/busybox:1\nRUN echo hi\nCMD ["sh"]\n';
    expect(rewriteForInputs(df, [input({ mount: '/opt/tool', env: { TOOL_HOME: '/opt/tool' } })])).toBe(
      `${INJECT} AS tool\n` +
        'FROM kiln/busybox:1\n' +
        'ENV TOOL_HOME="/opt/tool"\n' +
        'RUN --mount=type=bind,from=tool,target=/opt/tool echo hi\n' +
        'CMD ["sh"]\n',
    );
  });

  it('returns the Dockerfile unchanged without inputs, and untouched with inputs that add nothing', () => {
    const df = 'FROM a\r\nRUN x\r\n';
    expect(rewriteForInputs(df, [])).toBe(df);
    expect(rewriteForInputs(df, [input()])).toBe(`${INJECT} AS tool\r\nFROM a\r\nRUN x\r\n`);
  });

  it('multi-stage with COPY --from=build: every user stage gets ENV and every RUN the mount', () => {
    const df = [
      '# build stage',
      'FROM kiln/busybox:1 AS build',
      'RUN make',
      '',
      'FROM scratch',
      'COPY --from=build /out /out',
      'COPY --from=tool /bin/x /x',
      '',
    ].join('\n');
    const inputs = [
      input({ name: 'tool', mount: '/opt/tool', env: { A: '1' } }),
      input({ name: 'py.runtime', image: `kiln-cas/${'b'.repeat(64)}:latest`, mount: '/opt/python', env: { PATH: '/opt/python/bin:$PATH', B: '2' } }),
    ];
    expect(rewriteForInputs(df, inputs)).toBe(
      [
        '# build stage',
        `${INJECT} AS tool`,
        `FROM --platform=$BUILDPLATFORM kiln-cas/${'b'.repeat(64)}:latest AS py.runtime`,
        'FROM kiln/busybox:1 AS build',
        'ENV A="1"',
        'ENV PATH="/opt/python/bin:$PATH"',
        'ENV B="2"',
        'RUN --mount=type=bind,from=tool,target=/opt/tool --mount=type=bind,from=py.runtime,target=/opt/python make',
        '',
        'FROM scratch',
        'ENV A="1"',
        'ENV PATH="/opt/python/bin:$PATH"',
        'ENV B="2"',
        'COPY --from=build /out /out',
        'COPY --from=tool /bin/x /x',
        '',
      ].join('\n'),
    );
  });

  it('global ARG before FROM ${BASE}: directives and ARGs stay first', () => {
    const df = '# syntax-free file\nARG BASE=kiln/busybox:1\nARG X\nFROM ${BASE}\nRUN echo $X\n';
    expect(rewriteForInputs(df, [input({ mount: '/opt/tool' })])).toBe(
      '# syntax-free file\nARG BASE=kiln/busybox:1\nARG X\n' +
        `${INJECT} AS tool\n` +
        'FROM ${BASE}\n' +
        'RUN --mount=type=bind,from=tool,target=/opt/tool echo $X\n',
    );
  });

  it('# escape=` with backtick continuations, ENV quoted with the backtick', () => {
    const df = '# escape=`\n\nFROM mcr.example/windows `\n    AS base\nRUN dir c:\\ `\n    && echo done\n';
    const env = { WIN: 'C:\\tools\\bin', Q: 'say "hi" `now`' };
    expect(rewriteForInputs(df, [input({ mount: '/opt/tool', env })])).toBe(
      '# escape=`\n\n' +
        `${INJECT} AS tool\n` +
        'FROM mcr.example/windows `\n    AS base\n' +
        'ENV WIN="C:\\tools\\bin"\n' +
        'ENV Q="say `"hi`" ``now``"\n' +
        'RUN --mount=type=bind,from=tool,target=/opt/tool dir c:\\ `\n    && echo done\n',
    );
  });

  it('RUN with continuations and an existing --mount=type=cache keeps both, mount first', () => {
    const df = 'FROM a\nRUN --mount=type=cache,target=/root/.cache \\\n    # fetch\n    pip install x \\\n\n    && echo ok\n';
    expect(rewriteForInputs(df, [input({ name: 'runtime', mount: '/opt/python' })])).toBe(
      `${INJECT} AS runtime\n` +
        'FROM a\n' +
        'RUN --mount=type=bind,from=runtime,target=/opt/python --mount=type=cache,target=/root/.cache \\\n    # fetch\n    pip install x \\\n\n    && echo ok\n',
    );
  });

  it('leaves a RUN that already mounts the input unchanged (any case, quoted, other target)', () => {
    const df = [
      'FROM a',
      'run --mount=type=bind,from=tool,target=/elsewhere ls',
      'RUN --mount="type=bind,FROM=Tool" ls',
      '  RUN   --mount=type=cache,target=/c ls',
      'RUN ["ls", "-l"]',
      'ONBUILD RUN ls',
    ].join('\n');
    expect(rewriteForInputs(df, [input({ mount: '/opt/tool' })])).toBe(
      [
        `${INJECT} AS tool`,
        'FROM a',
        'run --mount=type=bind,from=tool,target=/elsewhere ls',
        'RUN --mount="type=bind,FROM=Tool" ls',
        '  RUN --mount=type=bind,from=tool,target=/opt/tool   --mount=type=cache,target=/c ls',
        'RUN --mount=type=bind,from=tool,target=/opt/tool ["ls", "-l"]',
        'ONBUILD RUN ls',
      ].join('\n'),
    );
  });

  it('env injection with $PATH after every FROM except those of earlier user stages; no trailing newline stays so', () => {
    const df = 'FROM a AS one\nRUN true\nFROM ONE AS two\nFROM tool\nFROM b';
    expect(rewriteForInputs(df, [input({ env: { PATH: '/opt/tool/bin:$PATH', E: 'back\\slash "q"' } })])).toBe(
      `${INJECT} AS tool\n` +
        'FROM a AS one\n' +
        'ENV PATH="/opt/tool/bin:$PATH"\n' +
        'ENV E="back\\\\slash \\"q\\""\n' +
        'RUN true\n' +
        'FROM ONE AS two\n' +
        'FROM tool\n' +
        'ENV PATH="/opt/tool/bin:$PATH"\n' +
        'ENV E="back\\\\slash \\"q\\""\n' +
        'FROM b\n' +
        'ENV PATH="/opt/tool/bin:$PATH"\n' +
        'ENV E="back\\\\slash \\"q\\""',
    );
    expect(rewriteForInputs('FROM a', [input()])).toBe(`${INJECT} AS tool\nFROM a`);
  });

  it('keeps CRLF line ends and the BOM, and is deterministic', () => {
    const df = '\uFEFFARG B=a\r\nFROM $B\r\nRUN x';
    const inputs = [input({ mount: '/m', env: { K: 'v' } })];
    const out = rewriteForInputs(df, inputs);
    expect(out).toBe(`\uFEFFARG B=a\r\n${INJECT} AS tool\r\nFROM $B\r\nENV K="v"\r\nRUN --mount=type=bind,from=tool,target=/m x`);
    expect(rewriteForInputs(df, inputs)).toBe(out);
  });

  it('rejects a stage named like an input, naming input and line', () => {
    expectInvalid(() => rewriteForInputs('FROM a\nRUN x\nFROM b AS Tool\n', [input()]), /input 'tool'.*line 3/);
  });

  it('rejects invalid input names, duplicates, images, env keys and values', () => {
    for (const name of ['Tool', '1tool', '-x', 'a b', '', 'x/y']) {
      expectInvalid(() => rewriteForInputs('FROM a', [input({ name })]), /not a valid stage name/);
    }
    expectInvalid(() => rewriteForInputs('FROM a', [input(), input()]), /used twice/);
    expectInvalid(() => rewriteForInputs('FROM a', [input({ image: 'kiln-cas/x:latest AS y' })]), /not a plain image reference/);
    expectInvalid(() => rewriteForInputs('FROM a', [input({ image: '$IMG' })]), /not a plain image reference/);
    for (const key of ['1A', 'A-B', 'A B', '']) {
      expectInvalid(() => rewriteForInputs('FROM a', [input({ env: { [key]: 'v' } })]), /not a valid variable name/);
    }
    expectInvalid(() => rewriteForInputs('FROM a', [input({ env: { A: 'x\ny' } })]), /line break/);
  });

  it('rejects mount paths that would need quoting, relative paths and /', () => {
    for (const mount of ['/a b', '/a,b', '/a"b', "/a'b", '/a\\b', '/$HOME', '/a\nb', 'opt/tool', '', '/', '//']) {
      expectInvalid(() => rewriteForInputs('FROM a\nRUN x', [input({ mount })]), /mount path/);
    }
    expect(rewriteForInputs('FROM a\nRUN x', [input({ mount: '/opt/py-3.12_x@1+a:b=c~d%e/' })])).toContain('target=/opt/py-3.12_x@1+a:b=c~d%e/ x');
  });

  it('rejects a Dockerfile without FROM and numeric COPY --from', () => {
    expectInvalid(() => rewriteForInputs('# nothing\n', [input()]), /no FROM/);
    expectInvalid(() => rewriteForInputs('FROM a\nFROM b\nCOPY --from=0 /x /x\n', [input()]), /line 3: COPY --from=0/);
  });
});
