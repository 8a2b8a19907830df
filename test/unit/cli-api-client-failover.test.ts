/**
 * The CLI's client with a list of coordinators (issue 14), over real sockets on port 0: a
 * request that could not be sent moves to the next coordinator; a standby's 503 E_NOT_LEADER
 * sends it to the leader it names when that is listed (a write lands once), to the next one
 * otherwise; an answer lost after a write was sent is not asked again anywhere, a read is;
 * later requests go to the coordinator that answered last; one URL fails as it always did.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient, UnreachableError } from '../../cli/api-client.js';
import { coerceError } from '../../shared/index.js';
import { freePort } from '../helpers/cluster.js';
import { startEmulatedStandby, type EmulatedStandby } from '../helpers/emulated-standby.js';

interface Recorder {
  url: string;
  seen: string[];
  server: Server;
}

async function serve(handle: (req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<Recorder> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push(`${req.method} ${req.url} ${body}`.trim());
      handle(req, body, res);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server };
}

describe('the CLI client with several coordinators', () => {
  let leader: Recorder;
  let lossy: Recorder;
  let standby: EmulatedStandby;
  let unlisted: EmulatedStandby;
  let dead: string;
  beforeAll(async () => {
    leader = await serve((req, _body, res) => res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' }).end('{"ok":true}'));
    // Reads the whole request, then drops the connection: the answer is lost after the request was sent.
    lossy = await serve((req) => req.socket.destroy());
    standby = await startEmulatedStandby(`${leader.url}/`);
    unlisted = await startEmulatedStandby('http://127.0.0.1:1');
    dead = `http://127.0.0.1:${await freePort()}`;
  });
  afterAll(async () => {
    for (const s of [leader.server, lossy.server]) {
      s.closeAllConnections();
      s.close();
    }
    await standby.close();
    await unlisted.close();
  });
  const client = (...urls: string[]) => new ApiClient({ baseUrl: urls[0]!, baseUrls: urls, token: 't', tokenSource: 'test' });
  const post = (c: ApiClient, body: string) => c.raw('/api/v1/builds', { method: 'POST', headers: { 'content-type': 'application/json' }, body });

  it('one URL fails exactly as before lists', async () => {
    const err = await new ApiClient({ baseUrl: dead, token: 't', tokenSource: 'test' }).raw('/api/v1/builds').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreachableError);
    expect(coerceError(err).message).toBe(`cannot reach the coordinator at ${dead}: ECONNREFUSED`);
    const single = await client(standby.url).raw('/api/v1/builds', { method: 'POST', body: '{}' });
    expect(single.status).toBe(503); // a single standby's refusal is the answer
  });

  it('moves past a coordinator it cannot connect to, for a write too, and stays on the one that answered', async () => {
    const c = client(dead, leader.url);
    const before = leader.seen.length;
    const res = await post(c, '{"n":1}');
    expect(res.status).toBe(201);
    expect(leader.seen.slice(before)).toEqual(['POST /api/v1/builds {"n":1}']);
    expect(c.baseUrl).toBe(leader.url);
    expect(c.url('/x')).toBe(`${leader.url}/x`);
    // A port fetch refuses to use at all (9: "bad port") is skipped the same way.
    expect((await post(client('http://127.0.0.1:9', leader.url), '{"n":0}')).status).toBe(201);
    expect(leader.seen.at(-1)).toBe('POST /api/v1/builds {"n":0}');
  });

  it('follows a standby to the leader it names: the write is refused there once and lands once', async () => {
    const c = client(standby.url, dead, leader.url);
    const before = leader.seen.length;
    const asked = standby.requests.length;
    expect((await post(c, '{"n":2}')).status).toBe(201);
    expect(leader.seen.slice(before)).toEqual(['POST /api/v1/builds {"n":2}']);
    expect(standby.requests.slice(asked)).toEqual(['POST /api/v1/builds']); // the dead one was skipped: the leader was named
    // The next request goes straight to the leader.
    expect((await c.raw('/api/v1/builds')).status).toBe(200);
    expect(standby.requests.length).toBe(asked + 1);
  });

  it('does not follow a leader the list does not name; with nowhere else to go the refusal is the error', async () => {
    const c = client(unlisted.url, leader.url);
    const before = leader.seen.length;
    expect((await post(c, '{"n":3}')).status).toBe(201); // the next of the list, not 127.0.0.1:1
    expect(leader.seen.length).toBe(before + 1);
    const alone = client(unlisted.url, dead);
    const res = await post(alone, '{"n":4}');
    expect(res.status).toBe(503);
    const err = await alone.failure(res);
    expect(err.message).toBe('this coordinator is a standby; the leader is http://127.0.0.1:1 (the leader is http://127.0.0.1:1, which is not in the coordinator list (--coordinator or KILN_COORDINATOR); add it)');
  });

  it('never sends a write again after its answer was lost; asks again for a read', async () => {
    const c = client(lossy.url, leader.url);
    const before = leader.seen.length;
    const err = await post(c, '{"n":5}').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreachableError);
    expect(coerceError(err).message).toMatch(new RegExp(`^cannot reach the coordinator at ${lossy.url}: .* after the POST request was sent; it was not sent again to another coordinator`));
    expect(lossy.seen).toEqual(['POST /api/v1/builds {"n":5}']);
    expect(leader.seen.length).toBe(before); // the submission exists at most once
    const read = await c.raw('/api/v1/builds/b-1');
    expect(read.status).toBe(200);
    expect(leader.seen.at(-1)).toBe('GET /api/v1/builds/b-1');
    expect(lossy.seen.at(-1)).toBe('GET /api/v1/builds/b-1');
  });

  it('names every coordinator when none can be reached', async () => {
    const other = `http://127.0.0.1:${await freePort()}`;
    const err = await client(dead, other).raw('/api/v1/builds').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreachableError);
    expect(coerceError(err).message).toBe(`cannot reach any coordinator of the list (${dead}: ECONNREFUSED; ${other}: ECONNREFUSED)`);
  });

  it('downloads from any coordinator of the list with the token, and from nowhere else', () => {
    const c = client(standby.url, leader.url);
    expect(c.ownPath(`${leader.url}/api/v1/cas/sha256:ab`)).toBe('/api/v1/cas/sha256:ab');
    expect(c.ownPath(`${standby.url}/api/v1/cas/sha256:ab`)).toBe('/api/v1/cas/sha256:ab');
    expect(c.ownPath('https://s3.example/bucket/x')).toBeNull();
    expect(c.ownPath(`${leader.url}0/api`)).toBeNull(); // another port that starts with the same digits
  });
});
