/**
 * A log stream that breaks the protocol (shared/log-events.ts) ends `kiln logs -f` with
 * one clear error naming what was wrong (exit 2), never a loop of reconnects or an event
 * passed on half-read: data that is not JSON, data of the wrong shape, an event id that
 * is not a byte offset (node stream) or a cursor (build stream). Runs against a real
 * HTTP server on port 0.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../cli/api-client.js';
import { CliError, EXIT } from '../../cli/exit-codes.js';
import { followBuildLogs } from '../../cli/follow.js';
import type { FollowEvent } from '../../shared/index.js';

describe('following a malformed log stream', () => {
  let server: Server;
  let base = '';
  let body = '';
  let requests = 0;

  beforeAll(async () => {
    server = createServer((_req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  const cases: Array<[string, string, string | undefined, RegExp]> = [
    ['data not JSON', 'event: log\ndata: {"node":\n\n', undefined, /sent a 'log' event whose data is not JSON/],
    ['a status of an unknown state', 'event: status\ndata: {"node":"a","state":"sleeping","attempt":1}\n\n', undefined, /sent a malformed 'status' event/],
    ['an end without a state', 'event: end\ndata: {}\n\n', undefined, /sent a malformed 'end' event/],
    ['a node stream id that is not an offset', 'event: log\ndata: {"node":"a","text":"x\\n"}\nid: 1.5\n\n', 'a', /event id '1.5' is not a byte offset/],
    ['a build stream id that is not a cursor', 'event: log\ndata: {"node":"a","text":"x\\n"}\nid: a:01\n\n', undefined, /event id 'a:01', not a log cursor/],
  ];

  for (const [what, sse, node, message] of cases) {
    it(`stops at once on ${what}`, async () => {
      body = sse;
      requests = 0;
      const events: FollowEvent[] = [];
      const client = new ApiClient({ baseUrl: base, token: 't', tokenSource: 'test' });
      const err = await followBuildLogs(client, { buildId: 'b-1', ...(node ? { node } : {}), follow: true, onEvent: (e) => events.push(e) }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).message).toMatch(message);
      expect((err as CliError).exitCode).toBe(EXIT.USAGE);
      expect(events).toEqual([]);
      expect(requests).toBe(1);
    });
  }
});
