/**
 * `kiln logs -f` against a coordinator that cannot be reached: the very first request
 * failing to connect ends the follow at once with the client's "cannot reach" error
 * (exit 2, like every other command), instead of resuming for minutes. Once anything
 * answered, or when the command reached the coordinator before (`submit --follow`), a
 * failure to connect is an interruption and is resumed. A 401 or 404 on the first request
 * keeps its own exit code. Real HTTP servers on port 0; "closed" is a port that was bound
 * and released.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ApiClient, UnreachableError } from '../../cli/api-client.js';
import { CliError } from '../../cli/exit-codes.js';
import { followBuildLogs } from '../../cli/follow.js';
import type { FollowEvent } from '../../shared/index.js';
import { coerceError } from '../../shared/index.js';

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; base: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
}

/** A URL nothing listens on: a port that was bound, then closed. */
async function closedPort(): Promise<string> {
  const { server, base } = await listen(() => {});
  await close(server);
  return base;
}

const clientFor = (base: string) => new ApiClient({ baseUrl: base, token: 't', tokenSource: 'test' });

describe('following a coordinator that cannot be reached', () => {
  it('throws the unreachable error (exit 2) on the first request, without resuming', async () => {
    const base = await closedPort();
    const reconnects: string[] = [];
    const err = await followBuildLogs(clientFor(base), { buildId: 'b-1', follow: true, onEvent: () => {}, onReconnect: (_n, why) => reconnects.push(why) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreachableError);
    expect((err as CliError).exitCode).toBe(2);
    expect(coerceError(err).message).toBe(`cannot reach the coordinator at ${base}: ECONNREFUSED`);
    expect(reconnects).toEqual([]);
  });

  it('resumes when the command reached the coordinator before (submit --follow)', async () => {
    const base = await closedPort();
    const ac = new AbortController();
    const reconnects: string[] = [];
    const state = await followBuildLogs(clientFor(base), {
      buildId: 'b-1',
      follow: true,
      reached: true,
      signal: ac.signal,
      onEvent: () => {},
      onReconnect: (n, why) => {
        reconnects.push(why);
        if (n === 2) ac.abort();
      },
    });
    expect(state).toBe('interrupted');
    expect(reconnects).toEqual([`cannot reach the coordinator at ${base}: ECONNREFUSED`, `cannot reach the coordinator at ${base}: ECONNREFUSED`]);
  });

  it('resumes after the first connection succeeded and the coordinator went away', async () => {
    const { server, base } = await listen((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`event: log\ndata: ${JSON.stringify({ node: 'a', text: 'one\n' })}\nid: a:4\n\n`);
      void close(server);
    });
    const ac = new AbortController();
    const events: FollowEvent[] = [];
    const reconnects: string[] = [];
    const state = await followBuildLogs(clientFor(base), {
      buildId: 'b-1',
      follow: true,
      signal: ac.signal,
      onEvent: (e) => events.push(e),
      onReconnect: (n, why) => {
        reconnects.push(why);
        if (n === 3) ac.abort();
      },
    });
    expect(state).toBe('interrupted');
    expect(events).toEqual([{ type: 'log', node: 'a', text: 'one\n' }]);
    // the stream ended early, then the port was closed: both resumed
    expect(reconnects[0]).toBe('the stream ended early');
    expect(reconnects.slice(1)).toEqual([`cannot reach the coordinator at ${base}: ECONNREFUSED`, `cannot reach the coordinator at ${base}: ECONNREFUSED`]);
  });

  it('keeps the codes of a coordinator that answers: 401 is 4, 404 is 2 with its message', async () => {
    const { server, base } = await listen((req, res) => {
      const status = req.headers.authorization === 'Bearer t' ? 404 : 401;
      res.writeHead(status, { 'content-type': 'application/problem+json' });
      res.end(JSON.stringify({ type: 'about:blank', title: 'x', status, code: status === 404 ? 'E_NOT_FOUND' : 'E_UNAUTHORIZED', detail: status === 404 ? 'build b-1 not found' : 'bad token' }));
    });
    try {
      const notFound = await followBuildLogs(clientFor(base), { buildId: 'b-1', follow: true, onEvent: () => {} }).catch((e: unknown) => e);
      expect(notFound).toBeInstanceOf(CliError);
      expect(notFound).not.toBeInstanceOf(UnreachableError);
      expect((notFound as CliError).exitCode).toBe(2);
      expect(coerceError(notFound).message).toBe('build b-1 not found');
      const refused = await followBuildLogs(new ApiClient({ baseUrl: base, token: 'wrong', tokenSource: 'test' }), { buildId: 'b-1', follow: true, onEvent: () => {} }).catch((e: unknown) => e);
      expect((refused as CliError).exitCode).toBe(4);
    } finally {
      await close(server);
    }
  });
});
