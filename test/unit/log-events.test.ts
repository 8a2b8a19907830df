/**
 * The log streams' SSE events (shared/log-events.ts): what the coordinator writes
 * (`sseFieldsOf`) the CLI reads back (`parseLogStreamEvent`) to the same event; malformed
 * data is an error naming the event, never a silently wrong event; a node stream's `id:`
 * (the byte offset) reads back to the offset written.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BUILD_STATES,
  LogCursorId,
  LogOffsetId,
  NODE_STATES,
  formatCursor,
  formatOffsetId,
  parseLogStreamEvent,
  parseOffsetId,
  sseFieldsOf,
  type FollowEvent,
} from '../../shared/index.js';

const event: fc.Arbitrary<FollowEvent> = fc.oneof(
  fc.record({ type: fc.constant('log' as const), node: fc.string(), text: fc.string() }),
  fc.record({ type: fc.constant('status' as const), node: fc.string(), state: fc.constantFrom(...NODE_STATES), attempt: fc.nat() }),
  fc.record({ type: fc.constant('end' as const), state: fc.constantFrom(...NODE_STATES, ...BUILD_STATES) }),
);

describe('log stream events', () => {
  it('reads back what the coordinator writes, keys in the documented order', () => {
    fc.assert(
      fc.property(event, (e) => {
        const f = sseFieldsOf(e, e.type === 'log' ? '12' : undefined);
        expect(f.event).toBe(e.type);
        expect('id' in f).toBe(e.type === 'log');
        const back = parseLogStreamEvent(f.event, f.data);
        expect(back).toEqual({ ok: true, event: e });
        if (back?.ok) expect(JSON.stringify(back.event)).toBe(JSON.stringify(e));
      }),
    );
    expect(sseFieldsOf({ type: 'status', node: 'a', state: 'running', attempt: 1 }).data).toBe('{"node":"a","state":"running","attempt":1}');
  });

  it('refuses malformed data with the event named, and ignores other event names', () => {
    expect(parseLogStreamEvent('log', '{"node": ')).toEqual({ ok: false, error: "a 'log' event whose data is not JSON" });
    const bad = parseLogStreamEvent('status', '{"node":"a","state":"sleeping","attempt":1}');
    expect(bad?.ok).toBe(false);
    expect(bad && !bad.ok && bad.error).toMatch(/^a malformed 'status' event \(/);
    expect(parseLogStreamEvent('end', '{}')?.ok).toBe(false);
    expect(parseLogStreamEvent('log', '{"node":"a","text":1}')?.ok).toBe(false);
    expect(parseLogStreamEvent('message', 'whatever')).toBeNull();
    expect(parseLogStreamEvent('toString', '{}')).toBeNull();
    // extra fields are dropped, not passed on
    expect(parseLogStreamEvent('log', '{"node":"a","text":"x","extra":1}')).toEqual({ ok: true, event: { type: 'log', node: 'a', text: 'x' } });
  });

  it('reads a node stream id back to its offset and refuses anything else', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 999_999_999_999_999 }), (n) => {
        const id = formatOffsetId(n);
        expect(parseOffsetId(id)).toBe(n);
        expect(LogOffsetId.safeParse(id).success).toBe(true);
      }),
    );
    for (const bad of ['', '-1', '01', '1.5', '1e3', ' 1', '9'.repeat(16), 'a:1']) {
      expect(typeof parseOffsetId(bad), bad).toBe('string');
      expect(LogOffsetId.safeParse(bad).success, bad).toBe(false);
    }
  });

  it('takes as a build stream id what the cursor writes', () => {
    const nodes = Array.from({ length: 2000 }, (_, i) => `node-${i}`);
    const offsets = new Map(nodes.map((n, i) => [n, i * 7]));
    for (const cursor of [formatCursor(offsets), formatCursor(offsets, { nodes, complete: new Set(nodes.slice(0, 1500)) }), '']) {
      expect(LogCursorId.safeParse(cursor).success).toBe(cursor.length <= 8192);
    }
    expect(LogCursorId.safeParse('a:01').success).toBe(false);
  });
});
