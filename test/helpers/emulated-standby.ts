/**
 * An emulated standby coordinator (issue 14) for the tests of agents and the CLI following
 * the leader: a real HTTP server and WebSocket endpoint on 127.0.0.1 port 0 that does what a
 * standby does to clients and nothing else. It accepts an agent's WebSocket and closes it at
 * once with NOT_LEADER (4016) and `leader <url>`, answers `GET /api/v1/cluster` with a view
 * naming that leader, and answers every other API request with the 503 problem+json
 * `E_NOT_LEADER` whose `leader` member names it (null while `leader` is null). It counts what
 * it was asked, so a test can see that a submission reached it once and went no further.
 * With `refuseUpgrade` it refuses the agent's WebSocket upgrade itself with that 503 problem
 * instead (the other way a standby may turn an agent away).
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { AGENT_SOCKET_PATH, CLOSE_CODES, apiPath, notLeaderReason } from '../../shared/index.js';

export interface EmulatedStandby {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** The leader it names (a test may change it); null: `leader unknown`. */
  leader: string | null;
  /** Agent sockets it accepted and closed. */
  readonly agentSockets: number;
  /** API requests it answered, as `METHOD path` in order. */
  readonly requests: readonly string[];
  close(): Promise<void>;
}

export async function startEmulatedStandby(leader: string | null, opts: { refuseUpgrade?: boolean } = {}): Promise<EmulatedStandby> {
  const requests: string[] = [];
  let agentSockets = 0;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    requests.push(`${req.method ?? 'GET'} ${path}`);
    // The request body is read (and dropped) before answering, as a real server does.
    req.resume();
    req.on('end', () => {
      if (req.method === 'GET' && path === apiPath.cluster()) {
        const now = new Date().toISOString();
        const coordinators = [{ url: standby.url, role: 'standby', last_seen: now }, ...(standby.leader ? [{ url: standby.leader, role: 'leader', last_seen: now }] : [])];
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ leader: standby.leader, epoch: 2, coordinators }));
        return;
      }
      res.writeHead(503, { 'content-type': 'application/problem+json' }).end(problem());
    });
  });
  const problem = () =>
    JSON.stringify({
      type: 'about:blank',
      title: 'Service Unavailable',
      status: 503,
      detail: `this coordinator is a standby; the leader is ${standby.leader ?? 'not known yet'}`,
      code: 'E_NOT_LEADER',
      leader: standby.leader,
    });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if ((req.url ?? '').split('?')[0] !== AGENT_SOCKET_PATH) {
      socket.destroy();
      return;
    }
    if (opts.refuseUpgrade) {
      agentSockets++;
      const body = problem();
      socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      agentSockets++;
      ws.on('error', () => {});
      ws.close(CLOSE_CODES.NOT_LEADER, notLeaderReason(standby.leader));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const standby = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    leader,
    get agentSockets() {
      return agentSockets;
    },
    requests,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return standby;
}
