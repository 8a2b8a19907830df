/**
 * The noop executor's opt-in log (KILN_NOOP_LOG, test data for the dashboard): the setting
 * is parsed with limits and refused by name; N lines are written in order with their write
 * time, ANSI colours and the marker error line at N/2; the paced form spreads them out; a
 * cancel stops it and ends the run `cancelled`.
 */
import { describe, expect, it } from 'vitest';
import { MAX_NOOP_LOG_LINES, NoopExecutor, noopLogLine, noopOptionsFromEnv } from '../../agent/executors/noop-executor.js';
import type { RunIO } from '../../agent/executors/executor.js';
import type { AssignPayload } from '../../shared/core.js';

function io(signal: AbortSignal): { io: RunIO; text: () => string; chunks: number[] } {
  let text = '';
  const chunks: number[] = [];
  const dec = new TextDecoder();
  return {
    io: {
      log: (t) => {
        const s = typeof t === 'string' ? t : dec.decode(t);
        text += s;
        chunks.push(Date.now());
      },
      started: () => {},
      resolved: async () => {},
      testStarting: () => {},
      signal,
      agentName: 'a1',
      emulated: false,
    },
    text: () => text,
    chunks,
  };
}

const job = { node: 'n1', build_id: 'b-1', attempt_id: 'a-1', attempt: 1 } as unknown as AssignPayload;

describe('noop executor log (KILN_NOOP_LOG)', () => {
  it('parses N and N/RATE, and refuses anything else naming the setting', () => {
    expect(noopOptionsFromEnv({ KILN_NOOP_LOG: '200000' }).log).toEqual({ lines: 200_000, perSecond: null });
    expect(noopOptionsFromEnv({ KILN_NOOP_LOG: '50/100' }).log).toEqual({ lines: 50, perSecond: 100 });
    expect(noopOptionsFromEnv({}).log).toBeUndefined();
    for (const bad of ['x', '-1', '10/0', '1/2/3', String(MAX_NOOP_LOG_LINES + 1), '1e3']) {
      expect(() => noopOptionsFromEnv({ KILN_NOOP_LOG: bad })).toThrow(/KILN_NOOP_LOG must be N or N\/RATE/);
    }
  });

  it('writes N numbered lines in order, with their write time, colours and the marker error line at N/2', async () => {
    const ctl = new AbortController();
    const o = io(ctl.signal);
    const before = Date.now();
    const r = await new NoopExecutor('x64', { log: { lines: 5000, perSecond: null } }).run(job, o.io);
    expect(r.status).toBe('success');
    const lines = o.text().split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(5000);
    lines.forEach((l, i) => expect(l).toContain(` ${i + 1}/5000 t=`));
    expect(lines[2499]).toBe('\x1b[31mERROR: noop marker line 2500/5000 t=' + /t=(\d+)/.exec(lines[2499]!)![1] + '\x1b[0m');
    expect(lines[0]).toMatch(/^noop \x1b\[36mn1\x1b\[0m line 1\/5000 t=\d+ \x1b\[32mok\x1b\[0m$/);
    const t = Number(/t=(\d+)/.exec(lines[0]!)![1]);
    expect(t).toBeGreaterThanOrEqual(before);
    // Chunks of about 64 KiB, not one write per line.
    expect(o.chunks.length).toBeLessThan(20);
    expect(noopLogLine('n', 5, 9, 1)).not.toContain('ERROR');
  });

  it('paces N/RATE over time, and a cancel stops the log and ends the run cancelled', async () => {
    const ctl = new AbortController();
    const o = io(ctl.signal);
    const paced = await new NoopExecutor('x64', { log: { lines: 30, perSecond: 300 } }).run(job, o.io);
    expect(paced.status).toBe('success');
    expect(o.text().split('\n').filter(Boolean)).toHaveLength(30);
    // 30 lines at 300/s: more than one write, spread over time (the last after the first).
    expect(o.chunks.length).toBeGreaterThan(1);
    expect(o.chunks.at(-1)!).toBeGreaterThan(o.chunks[0]!);

    const stop = new AbortController();
    const s = io(stop.signal);
    const run = new NoopExecutor('x64', { log: { lines: 1_000_000, perSecond: 100 } }).run(job, s.io);
    setTimeout(() => stop.abort({ kind: 'cancel', message: 'cancelled by test' }), 50);
    const r = await run;
    expect(r.status).toBe('cancelled');
    expect(s.text().split('\n').filter(Boolean).length).toBeLessThan(1_000_000);
  });
});
