/**
 * `parseSse`, the SSE reader of `kiln logs -f`: messages split anywhere across chunks (in
 * the middle of a line, of a `\r\n`, of a UTF-8 character), many messages in one chunk,
 * comments, multi-line data and ids come out exactly as sent.
 */
import { describe, expect, it } from 'vitest';
import { parseSse } from '../../cli/follow.js';

function body(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const chunk of chunks) c.enqueue(chunk);
      c.close();
    },
  });
}

async function all(chunks: Uint8Array[]): Promise<{ event: string; data: string; id: string | null }[]> {
  const out = [];
  for await (const m of parseSse(body(chunks))) out.push(m);
  return out;
}

describe('parseSse', () => {
  const messages = Array.from({ length: 200 }, (_, i) => ({ event: i % 3 === 0 ? 'status' : 'log', data: `{"node":"n${i % 7}","text":"line ${i} é\\n"}`, id: i % 3 === 0 ? null : `n${i % 7}:${i}` }));
  const text =
    ': keep-alive\r\n\r\n' +
    messages.map((m) => `event: ${m.event}\r\ndata: ${m.data}\r\n${m.id !== null ? `id: ${m.id}\r\n` : ''}\r\n`).join('') +
    'data: first\ndata: second\n\n';
  const bytes = Buffer.from(text);
  const expected = [...messages, { event: 'message', data: 'first\nsecond', id: null }];

  it('reads many messages from one chunk', async () => {
    expect(await all([bytes])).toEqual(expected);
  });

  it('reads messages split anywhere across chunks', async () => {
    for (const size of [1, 2, 3, 7, 64, 1000]) {
      const chunks: Uint8Array[] = [];
      for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
      expect(await all(chunks)).toEqual(expected);
    }
  });
});
