/**
 * corkForTurn (shared/cork-per-turn.ts) on a real WebSocket over a real socket: the frames
 * one turn sends leave in one write to the socket, every frame arrives whole and in order,
 * and nothing stays corked after the turn (a frame sent alone in a later turn arrives
 * without another send to push it out). The control case shows the test can tell: without
 * the cork, ws writes each frame on its own.
 */
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { corkForTurn } from '../../shared/index.js';

interface Link {
  ws: WebSocket;
  socket: Duplex;
  /** Writes that reached the socket's implementation (one system call each, at most). */
  writes: () => number;
}

let wss: WebSocketServer;
let received: string[];

beforeEach(async () => {
  received = [];
  wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  wss.on('connection', (ws) => ws.on('message', (data: Buffer) => received.push(data.toString())));
  await once(wss, 'listening');
});

afterEach(async () => {
  for (const c of wss.clients) c.terminate();
  await new Promise((r) => wss.close(r));
});

async function connect(): Promise<Link> {
  const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`, { perMessageDeflate: false });
  // ws emits 'upgrade' and 'open' in one turn: both are awaited from the start.
  const upgraded = once(ws, 'upgrade') as Promise<[{ socket: Duplex }]>;
  await once(ws, 'open');
  const socket = (await upgraded)[0].socket;
  let writes = 0;
  // Count the calls that reach the socket's implementation (a corked stream hands all it
  // gathered to one _writev).
  const s = socket as unknown as { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
  const write = s._write.bind(socket);
  const writev = s._writev.bind(socket);
  s._write = (...a) => {
    writes++;
    write(...a);
  };
  s._writev = (...a) => {
    writes++;
    writev(...a);
  };
  return { ws, socket, writes: () => writes };
}

async function until(n: number): Promise<void> {
  while (received.length < n) await new Promise((r) => setTimeout(r, 5));
}

describe('corkForTurn', () => {
  it('sends the frames of one turn in one write, whole and in order', async () => {
    const link = await connect();
    for (let i = 0; i < 10; i++) {
      corkForTurn(link.socket);
      link.ws.send(`frame ${i}`);
    }
    await until(10);
    expect(link.writes()).toBe(1);
    expect(received).toEqual(Array.from({ length: 10 }, (_, i) => `frame ${i}`));
  });

  it('leaves nothing corked after the turn: a frame sent alone later arrives on its own', async () => {
    const link = await connect();
    corkForTurn(link.socket);
    link.ws.send('first');
    await until(1);
    await new Promise((r) => setImmediate(r));
    corkForTurn(link.socket);
    link.ws.send('second');
    await until(2);
    expect(received).toEqual(['first', 'second']);
    expect(link.writes()).toBe(2);
  });

  it('without it, each frame is a write of its own (the control)', async () => {
    const link = await connect();
    for (let i = 0; i < 10; i++) link.ws.send(`frame ${i}`);
    await until(10);
    expect(link.writes()).toBe(10);
  });
});
