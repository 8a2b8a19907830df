/**
 * BuildProgressDecoder.flushPartials(): a line printed without its newline (a prompt,
 * progress dots) is shown when the caller asks, without a newline; the rest of the line
 * follows on the same line, or the line is closed first when other output comes in between
 * or the rest rewrites it with `\r`. The log's bytes never repeat a line's text.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { BuildProgressDecoder, type BuildEvent } from '../../agent/docker/buildkit-progress.js';

const StatusResponse = protobuf
  .loadSync(fileURLToPath(new URL('../../agent/docker/buildkit-status.proto', import.meta.url)))
  .lookupType('moby.buildkit.v1.StatusResponse');

function ts(ms: number): { seconds: number; nanos: number } {
  const base = 1_795_000_000_000 + ms;
  return { seconds: Math.floor(base / 1000), nanos: Math.round((base % 1000) * 1e6) };
}

function trace(status: Record<string, unknown>): BuildEvent {
  return { id: 'moby.buildkit.trace', aux: Buffer.from(StatusResponse.encode(StatusResponse.fromObject(status)).finish()).toString('base64') };
}

function log(vertex: string, msg: string | Buffer, at: number): BuildEvent {
  return trace({ logs: [{ vertex, stream: 1, msg: typeof msg === 'string' ? Buffer.from(msg) : msg, timestamp: ts(at) }] });
}

const A = 'sha256:aaaa';
const B = 'sha256:bbbb';
const startA = trace({ vertexes: [{ digest: A, name: 'RUN a', started: ts(0) }] });
const startB = trace({ vertexes: [{ digest: B, name: 'RUN b', started: ts(0) }] });

describe('BuildProgressDecoder partial lines', () => {
  it('shows a prompt without its newline and continues the line with the answer', () => {
    const d = new BuildProgressDecoder();
    let out = d.push(startA);
    out += d.push(log(A, 'Password: ', 100));
    expect(d.hasPartial()).toBe(true);
    expect(out).toBe('#1 RUN a\n');
    const shown = d.flushPartials();
    expect(shown).toBe('#1 0.100 Password: ');
    expect(d.hasPartial()).toBe(false);
    expect(d.flushPartials()).toBe('');
    const rest = d.push(log(A, 'ok\nnext line\n', 5000));
    expect(rest).toBe('ok\n#1 5.000 next line\n');
    expect(out + shown + rest + d.end()).toBe('#1 RUN a\n#1 0.100 Password: ok\n#1 5.000 next line\n');
  });

  it('progress dots come out as they are printed, on one line', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA);
    all += d.push(log(A, 'waiting', 100));
    const parts = [d.flushPartials()];
    for (let i = 1; i <= 3; i++) {
      all += d.push(log(A, '.', 100 + i * 200));
      parts.push(d.flushPartials());
    }
    expect(parts).toEqual(['#1 0.100 waiting', '.', '.', '.']);
    all += parts.join('');
    all += d.push(log(A, ' done\n', 1000));
    all += d.push(trace({ vertexes: [{ digest: A, name: 'RUN a', started: ts(0), completed: ts(1100) }] }));
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 waiting... done\n#1 DONE 1.1s\n');
  });

  it('closes the open line before another vertex prints, and the rest starts a new line', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA) + d.push(startB);
    all += d.push(log(A, 'half', 100));
    all += d.flushPartials();
    all += d.push(log(B, 'from b\n', 200));
    all += d.push(log(A, ' rest\n', 300));
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 ...\n\n#2 RUN b\n#2 ...\n\n#1 RUN a\n#1 0.100 half\n#1 ...\n\n#2 RUN b\n#2 0.200 from b\n#2 ...\n\n#1 RUN a\n#1 0.300  rest\n');
  });

  it('continues the line when the newline comes in the same event as the vertex completion', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA);
    all += d.push(log(A, 'Continue? ', 100));
    all += d.flushPartials();
    all += d.push(trace({ vertexes: [{ digest: A, name: 'RUN a', started: ts(0), completed: ts(900) }], logs: [{ vertex: A, stream: 1, msg: Buffer.from('y\n'), timestamp: ts(800) }] }));
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 Continue? y\n#1 DONE 0.9s\n');
  });

  it('a vertex that completes with its line still open ends the line', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA);
    all += d.push(log(A, 'no newline', 100));
    all += d.flushPartials();
    all += d.push(log(A, ' ever', 200));
    all += d.push(trace({ vertexes: [{ digest: A, name: 'RUN a', started: ts(0), completed: ts(300) }] }));
    expect(all).toBe('#1 RUN a\n#1 0.100 no newline ever\n#1 DONE 0.3s\n');
    expect(d.end()).toBe('');
  });

  it('end() closes an open line', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA) + d.push(log(A, 'cut', 100)) + d.flushPartials();
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 cut\n');
    expect(d.end()).toBe('');
  });

  it('a \\r rewrite of a shown line starts a new line with the final state', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA);
    all += d.push(log(A, '10%\r', 100));
    const shown = d.flushPartials();
    expect(shown).toBe('#1 0.100 10%');
    all += shown;
    all += d.push(log(A, '50%\r', 200));
    all += d.flushPartials();
    all += d.push(log(A, '100%\n', 300));
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 10%\n#1 0.200 50%\n#1 0.300 100%\n');
  });

  it('a \\r\\n split after a shown line is a line end, not a rewrite', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA) + d.push(log(A, 'crlf\r', 100)) + d.flushPartials();
    all += d.push(log(A, '\nnext\r\n', 200));
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 crlf\n#1 0.200 next\n');
  });

  it('keeps a UTF-8 character split across events whole when a partial is shown in between', () => {
    const d = new BuildProgressDecoder();
    const bytes = Buffer.from('grüße\n');
    let all = d.push(startA) + d.push(log(A, bytes.subarray(0, 3), 100));
    all += d.flushPartials();
    all += d.push(log(A, bytes.subarray(3), 200));
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 grüße\n');
  });

  it('closes an open line before pass-through text', () => {
    const d = new BuildProgressDecoder();
    let all = d.push(startA) + d.push(log(A, 'prompt> ', 100)) + d.flushPartials();
    all += d.push({ stream: 'Successfully built\n' });
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 prompt> \n\nSuccessfully built\n');
  });

  it('flushPartials(heldSince) shows only lines held since then or longer', () => {
    let now = 1000;
    const d = new BuildProgressDecoder({ now: () => now });
    let all = d.push(startA) + d.push(startB);
    all += d.push(log(A, 'old', 100));
    now = 1090;
    all += d.push(log(B, 'new', 190));
    now = 1100;
    const first = d.flushPartials(now - 100);
    expect(first).toContain('old');
    expect(first).not.toContain('new');
    expect(d.hasPartial()).toBe(true);
    now = 1190;
    const second = d.flushPartials(now - 100);
    expect(second).toContain('#2 0.190 new');
    all += first + second + d.end();
    expect(all.match(/old/g)).toHaveLength(1);
    expect(all.match(/new/g)).toHaveLength(1);
    expect(all.endsWith('new\n')).toBe(true);
  });
});
