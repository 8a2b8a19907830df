/**
 * F6: network blips shorter than lost_after between an agent and the coordinator, made by
 * an in-process TCP proxy (test/helpers/tcp-proxy.ts) the agent connects through. During
 * one build that prints numbered lines: first every connection is reset (RST) and new ones
 * are refused until the agent has tried again, then the link is blackholed (nothing
 * forwarded, sockets kept) for a moment. The attempt carries on on the same agent (one
 * attempt, no re-run) and the stored log holds each line exactly once, in order, with as
 * many bytes as the agent produced.
 */
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { agentInfo, getBuild, inline, kiln, nodeLog, nodeOf, numberedLines, submitSpec, useCluster, waitFor, waitForAgent, waitForBuild } from '../helpers/cluster.js';

describe('the TCP proxy the blip tests rely on', () => {
  it('forwards, resets every connection, refuses, blackholes without losing bytes, and heals', async () => {
    const echo = createServer((s) => s.on('error', () => {}).pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const proxy = await startTcpProxy({ port: (echo.address() as AddressInfo).port });
    const connect = async () => {
      const s = createConnection({ host: '127.0.0.1', port: proxy.port });
      const got = { text: '', error: null as NodeJS.ErrnoException | null, closed: false };
      s.on('data', (d: Buffer) => (got.text += d.toString()));
      s.on('error', (e) => (got.error = e));
      s.on('close', () => (got.closed = true));
      await new Promise<void>((r) => s.once('connect', () => r()));
      return { s, got };
    };
    try {
      const a = await connect();
      a.s.write('one');
      await waitFor('the echo', () => a.got.text === 'one', 5000, 10);
      proxy.blackhole();
      a.s.write('two');
      await new Promise((r) => setTimeout(r, 300));
      expect(a.got.text).toBe('one'); // held, not delivered
      proxy.heal();
      await waitFor('the held bytes after heal', () => a.got.text === 'onetwo', 5000, 10);
      proxy.cut();
      await waitFor('the reset', () => a.got.closed, 5000, 10);
      expect(a.got.error?.code).toBe('ECONNRESET');
      proxy.refuse();
      const b = createConnection({ host: '127.0.0.1', port: proxy.port });
      const refused = await new Promise<NodeJS.ErrnoException | null>((r) => {
        b.on('error', (e) => r(e));
        b.on('close', () => r(null));
      });
      expect(refused?.code).toBe('ECONNRESET');
      proxy.heal();
      const d = await connect();
      d.s.write('three');
      await waitFor('the echo after heal', () => d.got.text === 'three', 5000, 10);
      expect(proxy.open).toBe(1);
      (d.s as Socket).destroy();
    } finally {
      await proxy.close();
      echo.close();
    }
  });
});

describe('network blips shorter than lost_after (F6)', () => {
  const c = useCluster('f-blip', { coordinatorArgs: ['--heartbeat-interval', '400ms', '--lost-after', '4s'] });
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await startTcpProxy({ port: c.coord.port });
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it('keeps the attempt on its agent and stores the log without gaps or duplicates', async () => {
    await c.agent({ name: 'flaky', url: proxy.url, maxJobs: 1 });
    const marker = `n${Date.now()}`;
    const lines = 40;
    const id = await submitSpec(c.coord, {
      nodes: { talk: inline(`FROM kiln/busybox:1\nRUN for i in $(seq 1 ${lines}); do echo "line $i ${marker}"; sleep 0.2; done`, { no_cache: true }) },
    });
    const seen = async () => numberedLines(await nodeLog(c.coord, id, 'talk'), 'line ', ` ${marker}`);
    const reached = (n: number) => waitFor(`line ${n} to reach the coordinator`, async () => (await seen()).includes(n));

    // 1. RST on every connection; new ones refused until the agent has tried to come back.
    await reached(5);
    const before = proxy.accepted;
    proxy.cut();
    proxy.refuse();
    await waitFor('the coordinator to see the agent disconnected', async () => (await agentInfo(c.coord, 'flaky'))?.state === 'disconnected');
    await waitFor('the agent to try to reconnect', () => proxy.accepted > before);
    proxy.heal();
    await waitForAgent(c.coord, 'flaky', 'connected');

    // 2. Blackhole: the sockets stay open but carry nothing, for well under lost_after.
    const atBlackhole = (await seen()).length;
    await reached(atBlackhole + 3);
    proxy.blackhole();
    await new Promise((r) => setTimeout(r, 1200));
    proxy.heal();

    const b = await waitForBuild(c.coord, id);
    expect(b.state).toBe('success');
    const talk = nodeOf(b, 'talk');
    expect(talk.attempts.map((a) => [a.number, a.agent, a.state])).toEqual([[1, 'flaky', 'success']]);
    expect(proxy.accepted).toBeGreaterThan(before + 1); // it really reconnected through the proxy

    const log = await nodeLog(c.coord, id, 'talk');
    expect(numberedLines(log, 'line ', ` ${marker}`)).toEqual(Array.from({ length: lines }, (_, i) => i + 1));
    // A first attempt's log is the agent's bytes only: as many as the agent reported writing.
    expect(Buffer.byteLength(log)).toBe(nodeOf(await getBuild(c.coord, id), 'talk').attempts[0]!.log_bytes);
    // `kiln logs` prints the same stored log.
    const cli = await kiln(['logs', id, 'talk'], c.coord.cliEnv);
    expect(cli.code).toBe(0);
    expect(numberedLines(cli.stdout, 'line ', ` ${marker}`)).toEqual(Array.from({ length: lines }, (_, i) => i + 1));
  });
});
