/**
 * Agent enrolment with a list of coordinators (issue 14), over real sockets: a coordinator
 * that cannot be reached is skipped, a standby's 503 E_NOT_LEADER sends the enrolment to the
 * leader it names, and the one-use token is traded once; with one URL a standby's refusal
 * is retried there, as any 5xx always was.
 */
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrol } from '../../agent/enrol.js';
import { API_ROUTES } from '../../shared/index.js';
import { freePort } from '../helpers/cluster.js';
import { startEmulatedStandby, type EmulatedStandby } from '../helpers/emulated-standby.js';

const CREDENTIAL = `kiln_agent_${'A'.repeat(43)}`;

describe('agent enrolment with several coordinators', () => {
  let dir: string;
  let leader: Server;
  let leaderUrl: string;
  const trades: string[] = [];
  let standby: EmulatedStandby;
  let dead: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-enrol-list-'));
    leader = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        trades.push(`${req.method} ${req.url} ${body}`);
        res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ credential: CREDENTIAL, agent: 'e1' }));
      });
    });
    leader.listen(0, '127.0.0.1');
    await once(leader, 'listening');
    leaderUrl = `http://127.0.0.1:${(leader.address() as AddressInfo).port}`;
    standby = await startEmulatedStandby(`${leaderUrl}/`); // named with a trailing slash: matched by origin
    dead = `http://127.0.0.1:${await freePort()}`;
  });
  afterAll(async () => {
    leader.closeAllConnections();
    leader.close();
    await standby.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('skips a dead coordinator and follows a standby to the leader: the token is traded once', async () => {
    const credentialFile = join(dir, 'agent-credential');
    const logger = pino({ level: 'silent' });
    const got = await enrol({ httpUrl: [dead, standby.url, leaderUrl], enrolToken: 'kiln_enrol_x', tokenSource: 'test', name: 'e1', credentialFile, logger });
    expect(got).toBe(CREDENTIAL);
    expect((await readFile(credentialFile, 'utf8')).trim()).toBe(CREDENTIAL);
    expect(standby.requests).toEqual([`POST ${API_ROUTES.agentEnrol.path()}`]);
    expect(trades).toEqual([`POST ${API_ROUTES.agentEnrol.path()} {"name":"e1"}`]);
  });
});
