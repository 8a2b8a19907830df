/**
 * Following a build from given log offsets (`kiln retry --follow` starts after what the
 * failed attempt already wrote): the first request's cursor carries them, and a resumed
 * stream continues from where the events left off, not from the starting offsets. Runs
 * against a real HTTP server on port 0 that serves SSE like the coordinator.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../cli/api-client.js';
import { followBuildLogs } from '../../cli/follow.js';
import type { FollowEvent } from '../../shared/index.js';

describe('following from offsets', () => {
  let server: Server;
  let base = '';
  const cursors: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      cursors.push(u.searchParams.get('cursor') ?? '');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (cursors.length === 1) {
        // one new line of the retried node, then the connection drops
        res.end(`event: log\ndata: ${JSON.stringify({ node: 'broken', text: 'second try\n' })}\nid: broken:131,ok:45\n\n`);
      } else {
        res.end(`event: end\ndata: ${JSON.stringify({ state: 'success' })}\n\n`);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it('starts at the given offsets and resumes after the last event', async () => {
    const client = new ApiClient({ baseUrl: base, token: 't', tokenSource: 'test' });
    const events: FollowEvent[] = [];
    const state = await followBuildLogs(client, {
      buildId: 'b-1',
      follow: true,
      from: new Map([
        ['broken', 120],
        ['ok', 45],
      ]),
      onEvent: (e) => events.push(e),
    });
    expect(state).toBe('success');
    expect(cursors).toEqual(['broken:120,ok:45', 'broken:131,ok:45']);
    expect(events).toEqual([
      { type: 'log', node: 'broken', text: 'second try\n' },
      { type: 'end', state: 'success' },
    ]);
  });
});
