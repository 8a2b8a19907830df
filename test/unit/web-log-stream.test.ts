/**
 * The dashboard's log stream (web/src/logs/log-stream.ts) against a scripted EventSource
 * that behaves as the browser's does (lastEventId kept across events without an id; its
 * own reconnects while CONNECTING; CLOSED when it gives up): text reaches the model once
 * and in order, a source the browser gave up on is reopened from the last offset, and an
 * `end` closes the source so no reconnect loop follows.
 */
import { describe, expect, it } from 'vitest';
import { followNodeLog, logDownloadUrl, logFollowUrl, type LogStreamState } from '../../web/src/logs/log-stream.js';
import { ScriptedSource } from '../helpers/scripted-event-source.js';

function harness() {
  const sources: ScriptedSource[] = [];
  const timers: Array<{ fn: () => void; ms: number; cleared: boolean }> = [];
  const text: string[] = [];
  const states: LogStreamState[] = [];
  const problems: string[] = [];
  const ends: string[] = [];
  const stream = followNodeLog({
    buildId: 'b-1',
    node: 'compile',
    onText: (t) => text.push(t),
    onState: (s) => states.push(s),
    onProblem: (p) => problems.push(p),
    onEnd: (e) => ends.push(e.state),
    open: (url) => {
      const s = new ScriptedSource(url);
      sources.push(s);
      return s;
    },
    setTimer: (fn, ms) => {
      const t = { fn, ms, cleared: false };
      timers.push(t);
      return t;
    },
    clearTimer: (h) => {
      (h as { cleared: boolean }).cleared = true;
    },
    backoffMs: [100, 400],
  });
  const last = () => sources[sources.length - 1]!;
  return { stream, sources, timers, text, states, problems, ends, last };
}

describe('log stream', () => {
  it('builds the follow and download URLs with encoded names', () => {
    expect(logFollowUrl('b-1', 'a b', null)).toBe('/api/v1/builds/b-1/nodes/a%20b/logs?follow=true');
    expect(logFollowUrl('b-1', 'n', 0)).toBe('/api/v1/builds/b-1/nodes/n/logs?follow=true');
    expect(logFollowUrl('b-1', 'n', 42)).toBe('/api/v1/builds/b-1/nodes/n/logs?follow=true&offset=42');
    expect(logDownloadUrl('b-1', 'n')).toBe('/api/v1/builds/b-1/nodes/n/logs?download=1');
  });

  it('hands text on in order, once, and goes live', () => {
    const h = harness();
    expect(h.last().url).toBe('/api/v1/builds/b-1/nodes/compile/logs?follow=true');
    h.last().open();
    h.last().emit('status', { node: 'compile', state: 'running', attempt: 1 });
    h.last().emit('log', { node: 'compile', text: 'one\n' }, '4');
    h.last().emit('log', { node: 'compile', text: 'two\n' }, '8');
    h.last().emit('log', { node: 'compile', text: 'two\n' }, '8'); // a duplicate never reaches the model
    expect(h.text).toEqual(['one\n', 'two\n']);
    expect(h.stream.offset).toBe(8);
    expect(h.states).toEqual(['live']);
  });

  it("lets the browser's own reconnect resume (Last-Event-ID) without opening another source", () => {
    const h = harness();
    h.last().open();
    h.last().emit('log', { node: 'compile', text: 'a\n' }, '2');
    h.last().drop(false);
    expect(h.stream.state).toBe('reconnecting');
    expect(h.sources).toHaveLength(1);
    expect(h.timers).toHaveLength(0);
    h.last().open();
    h.last().emit('log', { node: 'compile', text: 'b\n' }, '4');
    expect(h.text).toEqual(['a\n', 'b\n']);
    expect(h.states).toEqual(['live', 'reconnecting', 'live']);
  });

  it('reopens a source the browser gave up on from the last offset, backing off', () => {
    const h = harness();
    h.last().open();
    h.last().emit('log', { node: 'compile', text: 'abc\n' }, '4');
    h.last().drop(true);
    expect(h.last().closed).toBe(true);
    expect(h.timers.map((t) => t.ms)).toEqual([100]);
    h.timers[0]!.fn();
    expect(h.sources).toHaveLength(2);
    expect(h.last().url).toBe('/api/v1/builds/b-1/nodes/compile/logs?follow=true&offset=4');
    h.last().drop(true); // fails again before opening: the delay doubles, up to the cap
    h.timers[1]!.fn();
    h.last().drop(true);
    h.timers[2]!.fn();
    h.last().drop(true);
    expect(h.timers.map((t) => t.ms)).toEqual([100, 200, 400, 400]);
    h.timers[3]!.fn();
    h.last().open();
    h.last().emit('log', { node: 'compile', text: 'def\n' }, '8');
    expect(h.text).toEqual(['abc\n', 'def\n']);
    expect(h.stream.state).toBe('live');
  });

  it('closes on end, so the server closing the stream starts no reconnect loop; resume() reopens', () => {
    const h = harness();
    h.last().open();
    h.last().emit('log', { node: 'compile', text: 'done\n' }, '5');
    h.last().emit('status', { node: 'compile', state: 'success', attempt: 1 });
    h.last().emit('end', { state: 'success' });
    expect(h.last().closed).toBe(true);
    expect(h.ends).toEqual(['success']);
    expect(h.stream.state).toBe('ended');
    h.last().drop(false); // what the server's close would cause: ignored
    h.last().drop(true);
    expect(h.sources).toHaveLength(1);
    expect(h.timers).toHaveLength(0);
    h.stream.resume();
    expect(h.sources).toHaveLength(2);
    expect(h.last().url).toBe('/api/v1/builds/b-1/nodes/compile/logs?follow=true&offset=5');
    expect(h.stream.state).toBe('connecting');
  });

  it('skips malformed events with a message naming them', () => {
    const h = harness();
    h.last().open();
    h.last().emit('log', 'not json', '3');
    h.last().emit('log', { node: 'compile' }, '3');
    h.last().emit('log', { node: 'compile', text: 'x' }, 'abc');
    h.last().emit('unknown-event', { whatever: 1 });
    expect(h.text).toEqual([]);
    expect(h.problems).toEqual([
      "a 'log' event whose data is not JSON",
      expect.stringContaining("a malformed 'log' event"),
      expect.stringContaining("a 'log' event whose id is not a byte offset"),
    ]);
  });

  it('close() stops everything, a pending reopen included', () => {
    const h = harness();
    h.last().drop(true);
    expect(h.timers).toHaveLength(1);
    h.stream.close();
    expect(h.timers[0]!.cleared).toBe(true);
    expect(h.stream.state).toBe('ended');
  });
});
