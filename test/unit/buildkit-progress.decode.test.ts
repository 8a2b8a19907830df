// Unit tests for agent/docker/buildkit-progress.ts: replays event streams captured from a real
// Docker Engine 20.10 + BuildKit (test/fixtures/buildkit/*.jsonl, made by
// scripts/capture-buildkit-fixtures.mjs) and synthetic StatusResponse events encoded with the
// same vendored proto. Elapsed times in the output come from the events' own timestamps (or
// the injected clock), never from the wall clock.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, it, expect } from 'vitest';
import { BuildProgressDecoder } from '../../agent/docker/buildkit-progress.js';
import type { BuildEvent, BuildOutcome } from '../../agent/docker/buildkit-progress.js';

const fixtureDir = new URL('../fixtures/buildkit/', import.meta.url);

interface Replay { text: string; outcome: BuildOutcome; pushes: string[] }

function replay(events: BuildEvent[], decoder = new BuildProgressDecoder()): Replay {
  const pushes = events.map((event) => decoder.push(event));
  pushes.push(decoder.end());
  return { text: pushes.join(''), outcome: decoder.outcome(), pushes };
}

function fixture(name: string): BuildEvent[] {
  return readFileSync(new URL(`${name}.jsonl`, fixtureDir), 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as BuildEvent);
}

/** The #N of the vertex whose header line starts with `#N <namePrefix>`. */
function vertexNumber(text: string, namePrefix: string): string {
  const line = text.split('\n').find((l) => /^#\d+ /.test(l) && l.slice(l.indexOf(' ') + 1).startsWith(namePrefix));
  if (!line) throw new Error(`no header for ${namePrefix} in:\n${text}`);
  return line.slice(1, line.indexOf(' '));
}

/** Replaces the recorded times so whole outputs can be compared after a re-capture. */
function withoutTimes(text: string): string {
  return text.replaceAll(/^(#\d+) \d+\.\d+ /gm, '$1 <t> ').replaceAll(/ DONE \d+\.\ds$/gm, ' DONE <t>s');
}

// --- synthetic events -------------------------------------------------------------------------

const StatusResponse = protobuf
  .loadSync(fileURLToPath(new URL('../../agent/docker/buildkit-status.proto', import.meta.url)))
  .lookupType('moby.buildkit.v1.StatusResponse');

interface Ts { seconds: number; nanos: number }
/** A protobuf Timestamp `ms` milliseconds after an arbitrary epoch. */
function ts(ms: number): Ts {
  const base = 1_795_000_000_000 + ms;
  return { seconds: Math.floor(base / 1000), nanos: Math.round((base % 1000) * 1e6) };
}

function trace(status: Record<string, unknown>): BuildEvent {
  const message = StatusResponse.fromObject(status);
  return { id: 'moby.buildkit.trace', aux: Buffer.from(StatusResponse.encode(message).finish()).toString('base64') };
}

function log(vertex: string, msg: string, at?: number): BuildEvent {
  return trace({ logs: [{ vertex, stream: 1, msg: Buffer.from(msg), ...(at === undefined ? {} : { timestamp: ts(at) }) }] });
}

const A = 'sha256:aaaa';
const B = 'sha256:bbbb';

// --- fixtures ---------------------------------------------------------------------------------

describe('BuildProgressDecoder on captured BuildKit streams', () => {
  it('every push returns whole lines only', () => {
    for (const name of ['success-fresh', 'success-cached', 'failure-exit3', 's390x']) {
      for (const chunk of replay(fixture(name)).pushes) {
        expect(chunk === '' || chunk.endsWith('\n'), `${name}: ${JSON.stringify(chunk)}`).toBe(true);
      }
    }
  });

  it('numbers vertices #1, #2, ... in order of first appearance', () => {
    const { text } = replay(fixture('success-fresh'));
    const firstSeen: number[] = [];
    for (const m of text.matchAll(/^#(\d+) /gm)) {
      const n = Number(m[1]);
      if (!firstSeen.includes(n)) firstSeen.push(n);
    }
    expect(firstSeen).toEqual(firstSeen.map((_, i) => i + 1));
    expect(text.startsWith('#1 [internal] load remote build context\n')).toBe(true);
  });

  it('fresh build: headers, RUN output once each and in order, DONE, image id', () => {
    const { text, outcome } = replay(fixture('success-fresh'));
    const from = vertexNumber(text, '[1/2] FROM docker.io/kiln/busybox:1');
    const run = vertexNumber(text, "[2/2] RUN printf 'one\\ntwo\\n'; echo three");
    expect(Number(run)).toBeGreaterThan(Number(from));
    const outputLines = text.split('\n').filter((l) => new RegExp(`^#${run} \\d+\\.\\d{3} `).test(l));
    expect(outputLines.map((l) => l.split(' ').slice(2).join(' '))).toEqual(['one', 'two', 'three']);
    expect(text).toMatch(new RegExp(`^#${run} DONE \\d+\\.\\ds$`, 'm'));
    expect(text).not.toMatch(new RegExp(`^#${run} CACHED$`, 'm'));
    expect(text).toMatch(/^#\d+ exporting to image$/m);
    expect(text).toMatch(/^#\d+ writing image sha256:[0-9a-f]{64} done$/m);
    expect(text).toContain('Successfully tagged kiln-fixture/two-step:latest\n');
    expect(text).not.toContain('ERROR');
    expect(outcome).toMatchObject({ error: null, exitCode: null, failedStep: null });
    expect(outcome.imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(outcome.totalSteps).toBe(6);
    expect(outcome.cachedSteps).toBe(1); // FROM of a local image is reported cached
  });

  it('exporting to image prints DONE only after its late "naming to" status', () => {
    const { text } = replay(fixture('success-fresh'));
    const n = vertexNumber(text, 'exporting to image');
    const block = text.split('\n').filter((l) => l.startsWith(`#${n} `));
    expect(block[0]).toBe(`#${n} exporting to image`);
    expect(block.at(-1)).toMatch(/ DONE \d+\.\ds$/);
    expect(block.filter((l) => l === `#${n} exporting to image`)).toHaveLength(1);
  });

  it('cached rebuild: CACHED marker on the RUN step and no RUN output', () => {
    const { text, outcome } = replay(fixture('success-cached'));
    const run = vertexNumber(text, "[2/2] RUN printf 'one\\ntwo\\n'; echo three");
    expect(text).toMatch(new RegExp(`^#${run} CACHED$`, 'm'));
    expect(text).not.toMatch(/^#\d+ \d+\.\d+ (one|two|three)$/m);
    expect(outcome.imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(outcome.cachedSteps).toBeGreaterThanOrEqual(1);
    expect(outcome.error).toBeNull();
  });

  it('failing RUN: output, vertex ERROR, final ERROR line and outcome', () => {
    const { text, outcome } = replay(fixture('failure-exit3'));
    const run = vertexNumber(text, '[2/2] RUN echo before; exit 3');
    const message = 'executor failed running [/bin/sh -c echo before; exit 3]: exit code: 3';
    expect(withoutTimes(text)).toBe([
      '#1 [internal] load remote build context',
      '#1 DONE <t>s',
      '',
      '#2 copy /context /',
      '#2 DONE <t>s',
      '',
      '#3 [internal] load metadata for docker.io/kiln/busybox:1',
      '#3 DONE <t>s',
      '',
      '#4 [1/2] FROM docker.io/kiln/busybox:1',
      '#4 CACHED',
      '',
      `#${run} [2/2] RUN echo before; exit 3`,
      `#${run} <t> before`,
      `#${run} ERROR: ${message}`,
      '',
      `ERROR: ${message}`,
      '',
    ].join('\n'));
    expect(outcome).toEqual({
      imageId: null,
      error: message,
      exitCode: 3,
      failedStep: '[2/2] RUN echo before; exit 3',
      cachedSteps: 1,
      totalSteps: 5,
    });
    expect(outcome.failedStep).toContain('exit 3');
  });

  it('s390x build: uname output and image id', () => {
    const { text, outcome } = replay(fixture('s390x'));
    const run = vertexNumber(text, '[2/2] RUN uname -m');
    expect(text).toMatch(new RegExp(`^#${run} \\d+\\.\\d{3} s390x$`, 'm'));
    expect(text).toContain('FROM docker.io/kiln/busybox:1-s390x');
    expect(outcome.imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(outcome.error).toBeNull();
  });
});

// --- synthetic ----------------------------------------------------------------------------------

describe('BuildProgressDecoder on synthetic events', () => {
  it('joins a log line split across events and emits it once, whole', () => {
    const d = new BuildProgressDecoder();
    const pushes = [
      d.push(trace({ vertexes: [{ digest: A, name: '[1/1] RUN x', started: ts(0) }] })),
      d.push(log(A, 'hel', 1500)),
      d.push(log(A, 'lo\nwor', 2000)),
      d.push(log(A, 'ld\n', 2500)),
    ];
    expect(pushes).toEqual(['#1 [1/1] RUN x\n', '', '#1 1.500 hello\n', '#1 2.000 world\n']);
    expect(d.end()).toBe('');
  });

  it('keeps a UTF-8 character split across log events intact', () => {
    const d = new BuildProgressDecoder();
    const bytes = Buffer.from('grüße\n');
    d.push(trace({ vertexes: [{ digest: A, name: 'RUN', started: ts(0) }] }));
    const first = d.push(trace({ logs: [{ vertex: A, timestamp: ts(10), msg: bytes.subarray(0, 3) }] }));
    const second = d.push(trace({ logs: [{ vertex: A, timestamp: ts(20), msg: bytes.subarray(3) }] }));
    expect(first + second).toBe('#1 0.010 grüße\n');
  });

  it('formats elapsed seconds with 3, 2 or 1 decimals', () => {
    const { text } = replay([
      trace({ vertexes: [{ digest: A, name: 'RUN', started: ts(0) }] }),
      log(A, 'a\n', 9_250),
      log(A, 'b\n', 12_500),
      log(A, 'c\n', 123_400),
    ]);
    expect(text).toBe('#1 RUN\n#1 9.250 a\n#1 12.50 b\n#1 123.4 c\n');
  });

  it('flushes a partial line in end()', () => {
    const d = new BuildProgressDecoder();
    expect(d.push(trace({ vertexes: [{ digest: A, name: 'RUN', started: ts(0) }] }))).toBe('#1 RUN\n');
    expect(d.push(log(A, 'no newline', 300))).toBe('');
    expect(d.end()).toBe('#1 0.300 no newline\n');
    expect(d.end()).toBe('');
  });

  it('flushes a partial line when its vertex completes, before DONE', () => {
    const { pushes } = replay([
      trace({ vertexes: [{ digest: A, name: 'RUN', started: ts(0) }] }),
      log(A, 'tail', 100),
      trace({ vertexes: [{ digest: A, name: 'RUN', started: ts(0), completed: ts(1_000) }] }),
    ]);
    expect(pushes[2]).toBe('#1 0.100 tail\n#1 DONE 1.0s\n');
    expect(pushes[3]).toBe('');
  });

  it('keeps the last segment of \\r progress rewrites and treats \\r\\n as a line end', () => {
    const { text } = replay([
      trace({ vertexes: [{ digest: A, name: 'RUN', started: ts(0) }] }),
      log(A, '10%\r50%\r', 100),
      log(A, '100%\n', 200),
      log(A, 'crlf\r', 300),
      log(A, '\nnext\r\n', 400),
    ]);
    expect(text).toBe('#1 RUN\n#1 0.100 100%\n#1 0.300 crlf\n#1 0.400 next\n');
  });

  it('does not throw on a malformed aux and keeps decoding afterwards', () => {
    const d = new BuildProgressDecoder();
    const bad: BuildEvent[] = [
      { id: 'moby.buildkit.trace', aux: 'not base64!!' },
      { id: 'moby.buildkit.trace', aux: Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).toString('base64') },
      { id: 'moby.buildkit.trace', aux: 42 },
      { id: 'moby.buildkit.trace', aux: { ID: 'x' } },
    ];
    for (const event of bad) {
      expect(d.push(event)).toMatch(/^\[kiln\] undecodable BuildKit progress event \(.+\)\n$/);
    }
    expect(d.push({ id: 'moby.buildkit.trace', aux: 'not base64!!' })).toBe(''); // same reason: counted
    expect(d.push(trace({ vertexes: [{ digest: A, name: 'RUN', started: ts(0) }] }))).toBe('#1 RUN\n');
    expect(d.end()).toMatch(/^\[kiln\] 1 more undecodable BuildKit progress events \(.+\)\n$/);
  });

  it('uses the injected clock when timestamps are absent', () => {
    let clock = 10_000;
    const d = new BuildProgressDecoder({ now: () => clock });
    const text = [
      d.push(trace({ vertexes: [{ digest: A, name: 'RUN' }] })),
      d.push(log(A, 'first\n')),
      (clock += 2_500, d.push(log(A, 'later\n'))),
      d.push(trace({ vertexes: [{ digest: B, name: 'COPY', cached: true }] })),
      d.end(),
    ].join('');
    expect(text).toBe('#1 RUN\n#1 0.000 first\n#1 2.500 later\n#1 ...\n\n#2 COPY\n#2 CACHED\n');
    expect(d.outcome()).toMatchObject({ cachedSteps: 1, totalSteps: 2 });
  });

  it('numbers only vertices that start, and marks interleaved output with "..."', () => {
    const { text } = replay([
      trace({ vertexes: [{ digest: 'sha256:never', name: 'never runs' }, { digest: A, name: 'A' }, { digest: B, name: 'B' }] }),
      trace({ vertexes: [{ digest: A, name: 'A', started: ts(0) }] }),
      trace({ vertexes: [{ digest: B, name: 'B', started: ts(100) }] }),
      log(A, 'from a\n', 200),
      trace({ vertexes: [{ digest: A, name: 'A', started: ts(0), completed: ts(300) }, { digest: B, name: 'B', started: ts(100), cached: true, completed: ts(300) }] }),
    ]);
    expect(text).toBe([
      '#1 A', '#1 ...', '', '#2 B', '#2 ...', '', '#1 A', '#1 0.200 from a', '#1 DONE 0.3s', '', '#2 B', '#2 CACHED', '',
    ].join('\n'));
  });

  it('does not repeat a completion when BuildKit re-runs a vertex with the same result', () => {
    const vertex = (started: number, completed: number, cached = false): BuildEvent =>
      trace({ vertexes: [{ digest: A, name: 'ctx', started: ts(started), completed: ts(completed), cached }] });
    const { pushes, outcome } = replay([vertex(0, 10), vertex(0, 10), vertex(20, 21), vertex(30, 31, true)]);
    expect(pushes).toEqual(['#1 ctx\n#1 DONE 0.0s\n', '', '', '\n#1 ctx\n#1 CACHED\n', '']);
    expect(outcome).toMatchObject({ cachedSteps: 1, totalSteps: 1 });
  });

  it('prints statuses once, when they complete, with sizes like BuildKit', () => {
    const status = (current: number, total: number, completed?: number): BuildEvent =>
      trace({ statuses: [{ ID: 'transferring context:', vertex: A, current, total, timestamp: ts(5), started: ts(0), ...(completed === undefined ? {} : { completed: ts(completed) }) }] });
    const { text } = replay([
      trace({ vertexes: [{ digest: A, name: '[internal] load build context', started: ts(0) }] }),
      status(1, 0),
      status(2, 0, 5),
      status(2, 0, 5),
      trace({ statuses: [{ ID: 'sending tarball', vertex: A, current: 1_500_000, total: 3_000_000, started: ts(0), completed: ts(1_200) }] }),
    ]);
    expect(text).toBe('#1 [internal] load build context\n#1 transferring context: 2B done\n#1 sending tarball 1.50MB / 3.00MB 1.2s done\n');
  });

  it('holds DONE back until a status that was still open completes (seen with "naming to")', () => {
    const naming = (completed?: number): BuildEvent =>
      trace({ statuses: [{ ID: 'naming to docker.io/x:latest', vertex: A, started: ts(10), timestamp: ts(10), ...(completed === undefined ? {} : { completed: ts(completed) }) }] });
    const { pushes } = replay([
      trace({ vertexes: [{ digest: A, name: 'exporting to image', started: ts(0) }] }),
      naming(),
      trace({ vertexes: [{ digest: A, name: 'exporting to image', started: ts(0), completed: ts(500) }] }),
      { id: 'moby.image.id', aux: { ID: 'sha256:1234' } },
      naming(20),
    ]);
    expect(pushes).toEqual(['#1 exporting to image\n', '', '', '', '#1 naming to docker.io/x:latest done\n#1 DONE 0.5s\n', '']);
  });

  it('reads the exit code from the newer engines\' error text and reports CANCELED', () => {
    const message = 'process "/bin/sh -c exit 3" did not complete successfully: exit code: 3';
    const { text, outcome } = replay([
      trace({ vertexes: [{ digest: A, name: '[2/2] RUN exit 3', started: ts(0), completed: ts(100), error: message }] }),
      trace({ vertexes: [{ digest: B, name: '[2/2] RUN other', started: ts(0), completed: ts(100), error: 'context canceled' }] }),
      { errorDetail: { message }, error: message },
    ]);
    expect(text).toBe(`#1 [2/2] RUN exit 3\n#1 ERROR: ${message}\n\n#2 [2/2] RUN other\n#2 CANCELED\n\nERROR: ${message}\n`);
    expect(outcome).toMatchObject({ error: message, exitCode: 3, failedStep: '[2/2] RUN exit 3', imageId: null });
  });

  it('takes error and exit code from a vertex when the stream ends without an error event', () => {
    const { outcome } = replay([
      trace({ vertexes: [{ digest: A, name: 'RUN false', started: ts(0), completed: ts(1), error: 'exit code: 1' }] }),
    ]);
    expect(outcome).toMatchObject({ error: 'exit code: 1', exitCode: 1, failedStep: 'RUN false' });
  });

  it('passes legacy stream text through as whole lines and records the image id', () => {
    const d = new BuildProgressDecoder();
    expect(d.push({ stream: 'Step 1/2 : FROM x\nStep 2' })).toBe('Step 1/2 : FROM x\n');
    expect(d.push({ stream: '/2 : RUN y\n' })).toBe('Step 2/2 : RUN y\n');
    expect(d.push({ id: 'moby.image.id', aux: { ID: 'sha256:1234' } })).toBe('');
    expect(d.push({ stream: 'no newline' })).toBe('');
    expect(d.end()).toBe('no newline\n');
    expect(d.outcome()).toMatchObject({ imageId: 'sha256:1234', error: null, totalSteps: 0 });
  });
});
