/**
 * `--json` is JSON Lines: the list commands print one compact object per item and line,
 * and nothing else on stdout; a page with more behind it says how to get the next one on
 * stderr. Runs the commands against a real HTTP server on port 0 that answers like the
 * coordinator (the dead-letter list is hard to fill on a real one; the real coordinator
 * is used in test/integration/cli.json-lines.test.ts).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildSummaryT, DeadLetterViewT } from '../../shared/index.js';
import { ApiClient } from '../../cli/api-client.js';
import { buildsCommand, type CliIO } from '../../cli/commands.js';
import { deadLetterCommand } from '../../cli/fleet-commands.js';
import { apiPath } from '../../shared/index.js';

function captureIO(): CliIO & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    stdout: { write: (t) => void out.push(t), isTTY: false },
    stderr: { write: (t) => void err.push(t), isTTY: false },
    env: {},
    onInterrupt: () => () => {},
  };
}

/** Each line of `text` parsed; fails unless every line is one JSON object. */
function jsonLines(text: string): Array<Record<string, unknown>> {
  expect(text.endsWith('\n')).toBe(true);
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => {
      const v: unknown = JSON.parse(line);
      expect(v !== null && typeof v === 'object' && !Array.isArray(v), line).toBe(true);
      return v as Record<string, unknown>;
    });
}

const letters: DeadLetterViewT[] = ['one', 'two'].map((node, i) => ({
  build_id: `b-${i}`,
  build_name: 'dl',
  node,
  platform: 'linux/amd64',
  at: '2026-01-01T00:00:00.000Z',
  reason: 'attempts exhausted: 3 infrastructure failures (budget 3); last: agent lost',
  attempts: [{ id: `a-${i}`, number: 1, agent: 'x', state: 'lost', reason: 'agent lost', error: null }],
  retry_url: apiPath.nodeRetry(`b-${i}`, node),
}));

const builds: BuildSummaryT[] = [3, 2, 1].map((n) => ({
  id: `b-00${n}`,
  name: `build ${n}`,
  state: 'success',
  created_at: `2026-01-0${n}T00:00:00.000Z`,
  started_at: null,
  finished_at: null,
  node_counts: { success: 1 },
  pinned: false,
}));

describe('--json list output', () => {
  let server: Server;
  let client: ApiClient;
  const urls: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      urls.push(`${u.pathname}${u.search}`);
      res.writeHead(200, { 'content-type': 'application/json' });
      if (u.pathname === apiPath.deadLetter()) return res.end(JSON.stringify({ items: letters }));
      // builds: newest first, `cursor` = the last id sent
      const limit = Number(u.searchParams.get('limit'));
      const after = u.searchParams.get('cursor');
      const rest = after ? builds.filter((b) => b.id < after) : builds;
      const items = rest.slice(0, limit);
      res.end(JSON.stringify({ items, next_cursor: rest.length > limit ? items[items.length - 1]!.id : null }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    client = new ApiClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: 't', tokenSource: 'test' });
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it('kiln dlq --json prints one dead letter per line', async () => {
    const io = captureIO();
    expect(await deadLetterCommand(client, { json: true }, io)).toBe(0);
    expect(jsonLines(io.out.join(''))).toEqual(letters);
    expect(io.err).toEqual([]);
  });

  it('kiln builds --json prints one build per line and the next page on stderr', async () => {
    const io = captureIO();
    expect(await buildsCommand(client, { json: true, limit: 2 }, io)).toBe(0);
    expect(jsonLines(io.out.join(''))).toEqual(builds.slice(0, 2));
    expect(io.err.join('')).toBe('older builds: kiln builds --limit 2 --cursor b-002 --json\n');

    const next = captureIO();
    expect(await buildsCommand(client, { json: true, limit: 2, cursor: 'b-002' }, next)).toBe(0);
    expect(urls[urls.length - 1]).toBe(`${apiPath.builds()}?limit=2&cursor=b-002`);
    expect(jsonLines(next.out.join(''))).toEqual(builds.slice(2));
    expect(next.err).toEqual([]);
  });

  it('kiln builds (text) gives the same hint, without --json', async () => {
    const io = captureIO();
    expect(await buildsCommand(client, { json: false, limit: 1 }, io)).toBe(0);
    expect(io.out.join('')).toMatch(/^b-003 {2}success/);
    expect(io.err.join('')).toBe('older builds: kiln builds --limit 1 --cursor b-003\n');
  });
});
