/**
 * BuildProgressDecoder with a per-vertex stream filter (build secrets, agent/log-redactor.ts):
 * a value a step prints in pieces, while another step prints in between and the partial
 * line is shown early, still comes out redacted; a held start of a value is given back
 * when the step completes; steps without the value are unchanged.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { BuildProgressDecoder, type BuildEvent } from '../../agent/docker/buildkit-progress.js';
import { LogRedactor } from '../../agent/log-redactor.js';

const StatusResponse = protobuf
  .loadSync(fileURLToPath(new URL('../../agent/docker/buildkit-status.proto', import.meta.url)))
  .lookupType('moby.buildkit.v1.StatusResponse');

function ts(ms: number): { seconds: number; nanos: number } {
  const base = 1_795_000_000_000 + ms;
  return { seconds: Math.floor(base / 1000), nanos: Math.round((base % 1000) * 1e6) };
}
const trace = (status: Record<string, unknown>): BuildEvent => ({ id: 'moby.buildkit.trace', aux: Buffer.from(StatusResponse.encode(StatusResponse.fromObject(status)).finish()).toString('base64') });
const log = (vertex: string, msg: string, at: number) => trace({ logs: [{ vertex, stream: 1, msg: Buffer.from(msg), timestamp: ts(at) }] });

const A = 'sha256:aaaa';
const B = 'sha256:bbbb';
const VALUE = 'tok-5e1f9c2a';

describe('BuildProgressDecoder with a secrets filter', () => {
  it('redacts a value printed in pieces while another step prints in between', () => {
    const d = new BuildProgressDecoder({ filter: () => new LogRedactor([{ name: 'tok', value: VALUE }]) });
    let all = d.push(trace({ vertexes: [{ digest: A, name: 'RUN a', started: ts(0) }] })) + d.push(trace({ vertexes: [{ digest: B, name: 'RUN b', started: ts(0) }] }));
    all += d.push(log(A, 'key=tok-5e', 100));
    all += d.flushPartials();
    all += d.push(log(B, 'from b\n', 200));
    all += d.flushPartials();
    all += d.push(log(A, '1f9c', 300));
    all += d.flushPartials();
    all += d.push(log(A, '2a end\n', 400));
    all += d.end();
    expect(all).not.toContain('5e1f');
    expect(all).not.toContain('tok-5e');
    expect(all).toContain('[secret:tok] end\n'); // the line was shown early and closed by b's output: the rest on a new line
    expect(all).toContain('#2 0.200 from b\n');
  });

  it('gives back a held start of a value when the step completes', () => {
    const d = new BuildProgressDecoder({ filter: () => new LogRedactor([{ name: 'tok', value: VALUE }]) });
    let all = d.push(trace({ vertexes: [{ digest: A, name: 'RUN a', started: ts(0) }] }));
    all += d.push(log(A, 'ends with tok-', 100));
    expect(d.flushPartials()).toBe('#1 0.100 ends with ');
    all += '#1 0.100 ends with ';
    all += d.push(trace({ vertexes: [{ digest: A, name: 'RUN a', started: ts(0), completed: ts(500) }] }));
    all += d.end();
    expect(all).toBe('#1 RUN a\n#1 0.100 ends with tok-\n#1 DONE 0.5s\n');
  });
});
