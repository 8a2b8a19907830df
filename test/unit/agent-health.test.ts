/**
 * The agent's health monitor: free space below min_free_disk, a Docker Engine that does
 * not answer (refused, or hanging past the ping timeout) and is pinged with backoff until
 * it does, the ENOSPC rule (not accepting until min_free_disk plus what the failed write
 * wanted is free, unless that could never fit), and one change notice per change.
 * Disk space and the ping are given as functions, so each case sets exactly the
 * condition it tests.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { HealthMonitor } from '../../agent/health.js';
import { Backoff, type HealthPayload } from '../../shared/index.js';
import { waitFor } from '../helpers/cluster.js';

const MIB = 1024 * 1024;
const logger = pino({ level: 'silent' });

function monitor(o: { free?: () => number; total?: number; ping?: ((signal: AbortSignal) => Promise<unknown>) | null; minFree?: number; pingTimeoutMs?: number; statfsFails?: boolean }) {
  const changes: HealthPayload[] = [];
  const m = new HealthMonitor({
    workDir: '/work',
    minFreeBytes: o.minFree ?? 100 * MIB,
    space: async () => {
      if (o.statfsFails) throw Object.assign(new Error('EACCES: permission denied, statfs'), { code: 'EACCES' });
      return { free: (o.free ?? (() => 10_000 * MIB))(), total: o.total ?? 100_000 * MIB };
    },
    ping: o.ping === undefined ? async () => 'OK' : o.ping,
    backoff: new Backoff({ baseMs: 5, capMs: 20 }),
    checkIntervalMs: 60_000,
    ...(o.pingTimeoutMs !== undefined ? { pingTimeoutMs: o.pingTimeoutMs } : {}),
    logger,
  });
  m.onChange((h) => changes.push(h));
  return { m, changes };
}

describe('health monitor', () => {
  it('accepts with enough space and an engine that answers', async () => {
    const { m, changes } = monitor({});
    expect(await m.start()).toEqual({ accepting: true, problem: null });
    expect(m.diskFreeBytes()).toBe(10_000 * MIB);
    expect(changes).toEqual([]);
    m.stop();
  });

  it('stops accepting below min_free_disk and says where and how much; accepts again when space is back', async () => {
    let free = 50 * MIB;
    const { m, changes } = monitor({ free: () => free });
    expect(await m.start()).toEqual({ accepting: false, problem: 'only 50 MiB free in /work (min_free_disk is 100 MiB)' });
    free = 200 * MIB;
    expect((await m.check()).accepting).toBe(true);
    await m.check();
    expect(changes.map((c) => c.accepting)).toEqual([false, true]);
    m.stop();
  });

  it('an engine that refuses: not accepting with its error, pinged with backoff until it answers', async () => {
    let up = false;
    let pings = 0;
    const ping = async () => {
      pings++;
      if (!up) throw Object.assign(new Error('connect ENOENT /var/run/docker.sock'), { code: 'ENOENT', syscall: 'connect' });
      return 'OK';
    };
    const { m, changes } = monitor({ ping });
    expect(await m.start()).toEqual({ accepting: false, problem: 'Docker Engine unreachable: connect ENOENT /var/run/docker.sock' });
    await waitFor('a few retries', () => pings >= 4);
    up = true;
    await waitFor('the engine to be back', () => m.current().accepting);
    expect(changes.map((c) => c.accepting)).toEqual([false, true]);
    const after = pings;
    await new Promise((r) => setTimeout(r, 100));
    expect(pings).toBe(after); // no more backoff pings once it answers (the periodic check is 60 s away)
    m.stop();
  });

  it('an engine that hangs past the ping timeout is unreachable', async () => {
    const hang = (signal: AbortSignal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    const { m } = monitor({ ping: hang, pingTimeoutMs: 30 });
    expect(await m.start()).toEqual({ accepting: false, problem: 'Docker Engine unreachable: no answer to /_ping within 30 ms' });
    m.stop();
  });

  it('engineFailed pings at once; a healthy answer leaves the agent accepting', async () => {
    let pings = 0;
    let up = true;
    const { m } = monitor({
      ping: async () => {
        pings++;
        if (!up) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      },
    });
    await m.start();
    m.engineFailed('socket hang up');
    await waitFor('a ping', () => pings === 2);
    expect(m.current().accepting).toBe(true);
    up = false;
    m.engineFailed('socket hang up');
    await waitFor('the engine to be marked down', () => !m.current().accepting);
    expect(m.current().problem).toBe('Docker Engine unreachable: connect ECONNREFUSED');
    m.stop();
  });

  it('after ENOSPC: not accepting until min_free_disk plus what the write wanted is free', async () => {
    let free = 300 * MIB;
    const { m, changes } = monitor({ free: () => free });
    await m.start();
    m.diskFull('fetching sha256:ab (400 MiB) failed: no space left on device', 400 * MIB);
    expect(m.current().accepting).toBe(false); // at once, before any measurement
    const h = await m.check();
    expect(h).toEqual({ accepting: false, problem: 'disk full: fetching sha256:ab (400 MiB) failed: no space left on device (waiting for 500 MiB free in /work, 300 MiB now)' });
    free = 499 * MIB;
    expect((await m.check()).accepting).toBe(false);
    free = 500 * MIB;
    expect(await m.check()).toEqual({ accepting: true, problem: null });
    expect(changes.at(-1)).toEqual({ accepting: true, problem: null });
    m.stop();
  });

  it('after ENOSPC for a write that could never fit on the file system, min_free_disk is enough', async () => {
    const { m } = monitor({ free: () => 300 * MIB, total: 1000 * MIB });
    await m.start();
    m.diskFull('fetching a 5 GiB input failed', 5 * 1024 * MIB);
    expect(await m.check()).toEqual({ accepting: true, problem: null });
    m.stop();
  });

  it('both problems at once are both named', async () => {
    const { m } = monitor({ free: () => 10 * MIB, ping: async () => Promise.reject(new Error('connect ECONNREFUSED /run/docker.sock')) });
    expect((await m.start()).problem).toBe('Docker Engine unreachable: connect ECONNREFUSED /run/docker.sock; only 10 MiB free in /work (min_free_disk is 100 MiB)');
    m.stop();
  });

  it('unknown free space does not stop work', async () => {
    const { m } = monitor({ statfsFails: true });
    expect(await m.start()).toEqual({ accepting: true, problem: null });
    expect(m.diskFreeBytes()).toBeNull();
    m.stop();
  });

  it('without an engine (noop executor) only the disk counts', async () => {
    const { m } = monitor({ ping: null });
    expect(await m.start()).toEqual({ accepting: true, problem: null });
    m.stop();
  });
});
