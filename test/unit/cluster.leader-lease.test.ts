/**
 * The leader lease's logic (coordinator/cluster/leader-lease.ts) on a fake clock (ManualTimers)
 * with a scripted LeaseStore: when a leader steps down — at once when the row has moved on,
 * and after exactly one TTL since the *send* time of the last renewal that landed when the
 * database fails or does not answer at all — and that a standby polls, takes over, and gives a
 * lease won while stopping straight back. The SQL itself is tested on a real PostgreSQL in
 * test/integration/cluster.lease.test.ts.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ClusterViewT } from '../../shared/index.js';
import type { PgClient } from '../../coordinator/state/pg/pg-client.js';
import { LeaderLease, type LeaseRole } from '../../coordinator/cluster/leader-lease.js';
import type { LeaseRow, LeaseStore, LeaseToken } from '../../coordinator/cluster/lease-store.js';
import { ManualTimers } from '../helpers/manual-timers.js';

type Answer<T> = { kind: 'value'; value: T } | { kind: 'throw' } | { kind: 'hang' } | { kind: 'deferred'; resolve?: (v: T) => void; promise?: Promise<T> };

/** A store whose answers the test sets; records every call. */
class ScriptedStore implements LeaseStore {
  acquireAnswer: Answer<{ epoch: number | null; current: LeaseRow | null }> = { kind: 'value', value: { epoch: 1, current: null } };
  renewAnswer: Answer<boolean> = { kind: 'value', value: true };
  calls: string[] = [];
  released: LeaseToken[] = [];

  private answer<T>(a: Answer<T>): Promise<T> {
    switch (a.kind) {
      case 'value':
        return Promise.resolve(a.value);
      case 'throw':
        return Promise.reject(new Error('connection refused'));
      case 'hang':
        return new Promise<T>(() => {});
      case 'deferred':
        a.promise = new Promise<T>((r) => (a.resolve = r));
        return a.promise;
    }
  }
  acquire(): Promise<{ epoch: number | null; current: LeaseRow | null }> {
    this.calls.push('acquire');
    return this.answer(this.acquireAnswer);
  }
  renew(): Promise<boolean> {
    this.calls.push('renew');
    return this.answer(this.renewAnswer);
  }
  release(token: LeaseToken): Promise<void> {
    this.released.push(token);
    return Promise.resolve();
  }
  seen(): Promise<void> {
    return Promise.resolve();
  }
  forget(): Promise<void> {
    return Promise.resolve();
  }
  view(): Promise<ClusterViewT> {
    return Promise.resolve({ leader: null, epoch: 0, coordinators: [] });
  }
}

const TTL = 10_000;
const RENEW = 2_000;
const POLL = 1_000;

function setup(store = new ScriptedStore()) {
  const timers = new ManualTimers();
  const roles: Array<[LeaseRole, number, number]> = [];
  const lease = new LeaderLease({
    pg: {} as PgClient,
    url: 'http://10.0.0.1:8080',
    ttlMs: TTL,
    renewMs: RENEW,
    pollMs: POLL,
    logger: pino({ level: 'silent' }),
    now: () => timers.now,
    timers,
    store,
  });
  lease.on('role', (role, epoch) => roles.push([role, epoch, timers.now]));
  return { store, timers, lease, roles };
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

/** Advances the fake clock in steps of `step` ms, letting promises settle after each. */
async function advance(timers: ManualTimers, ms: number, step = 100): Promise<void> {
  for (let done = 0; done < ms; done += step) {
    timers.advance(Math.min(step, ms - done));
    await flush();
  }
}

describe('LeaderLease logic (fake clock, scripted store)', () => {
  it('leads after start() when the store grants the lease; renews every renewMs', async () => {
    const { store, timers, lease, roles } = setup();
    await lease.start();
    expect(lease.role).toBe('leader');
    expect(lease.token).toEqual({ epoch: 1, holder: lease.holder });
    expect(lease.leaderUrl).toBe('http://10.0.0.1:8080');
    expect(roles).toEqual([['leader', 1, 0]]);
    await advance(timers, 3 * RENEW);
    expect(store.calls.filter((c) => c === 'renew')).toHaveLength(3);
    expect(lease.role).toBe('leader');
    await lease.stop();
  });

  it('steps down at once when a renewal finds the row has moved on', async () => {
    const { store, timers, lease, roles } = setup();
    await lease.start();
    store.renewAnswer = { kind: 'value', value: false };
    await advance(timers, RENEW);
    expect(lease.role).toBe('standby');
    expect(lease.token).toBeNull();
    expect(roles.at(-1)).toEqual(['standby', 1, RENEW]);
    await lease.stop();
  });

  it('steps down exactly one TTL after the last landed renewal was sent, when the database fails', async () => {
    const { store, timers, lease, roles } = setup();
    await lease.start(); // the takeover was sent at t=0
    await advance(timers, RENEW); // renewal sent at 2000 lands
    store.renewAnswer = { kind: 'throw' };
    await advance(timers, TTL - 100); // just before 2000 + TTL
    expect(timers.now).toBe(RENEW + TTL - 100);
    expect(lease.role).toBe('leader');
    await advance(timers, 100);
    expect(lease.role).toBe('standby');
    expect(roles.at(-1)).toEqual(['standby', 1, RENEW + TTL]);
    await lease.stop();
  });

  it('steps down on time when renewals get no answer at all (the deadline does not wait for them)', async () => {
    const { store, timers, lease, roles } = setup();
    await lease.start();
    store.renewAnswer = { kind: 'hang' };
    await advance(timers, TTL - 100);
    expect(lease.role).toBe('leader');
    await advance(timers, 100);
    expect(lease.role).toBe('standby');
    expect(roles.at(-1)).toEqual(['standby', 1, TTL]);
    // and the standby keeps polling although the hung renewal never settles
    store.acquireAnswer = { kind: 'value', value: { epoch: null, current: { epoch: 2, holder: 'other', url: 'http://10.0.0.2:8080', live: true } } };
    const before = store.calls.filter((c) => c === 'acquire').length;
    await advance(timers, TTL + 3 * POLL);
    expect(store.calls.filter((c) => c === 'acquire').length).toBeGreaterThan(before + 2);
    expect(lease.leaderUrl).toBe('http://10.0.0.2:8080');
    await lease.stop();
  });

  it('measures from when the renewal was sent, not when its answer came', async () => {
    const { store, timers, lease } = setup();
    await lease.start();
    const slow: Answer<boolean> = { kind: 'deferred' };
    store.renewAnswer = slow;
    await advance(timers, RENEW); // renewal sent at t=2000, no answer yet
    await advance(timers, 3000); // answered at t=5000: landed
    slow.resolve!(true);
    await flush();
    store.renewAnswer = { kind: 'hang' };
    await advance(timers, RENEW + TTL - 5000 - 100); // just before 2000 + TTL
    expect(lease.role).toBe('leader');
    await advance(timers, 100); // 2000 + TTL: down, though the answer came at 5000
    expect(lease.role).toBe('standby');
    // stop() waits at most one TTL for the request on its way (here one that never answers)
    const stopping = lease.stop();
    await advance(timers, TTL);
    await stopping;
  });

  it('a standby polls every pollMs and leads when the lease is granted', async () => {
    const store = new ScriptedStore();
    store.acquireAnswer = { kind: 'value', value: { epoch: null, current: { epoch: 4, holder: 'other', url: 'http://10.0.0.2:8080', live: true } } };
    const { timers, lease, roles } = setup(store);
    await lease.start();
    expect(lease.role).toBe('standby');
    expect(lease.leaderUrl).toBe('http://10.0.0.2:8080');
    await advance(timers, 3 * POLL);
    expect(store.calls.filter((c) => c === 'acquire')).toHaveLength(4);
    store.acquireAnswer = { kind: 'value', value: { epoch: 5, current: null } };
    await advance(timers, POLL);
    expect(lease.role).toBe('leader');
    expect(lease.token?.epoch).toBe(5);
    expect(roles).toEqual([['leader', 5, 4 * POLL]]);
    await lease.stop();
    expect(store.released).toEqual([{ epoch: 5, holder: lease.holder }]);
  });

  it('an expired lease row names no leader', async () => {
    const store = new ScriptedStore();
    store.acquireAnswer = { kind: 'value', value: { epoch: null, current: { epoch: 4, holder: 'other', url: 'http://10.0.0.2:8080', live: false } } };
    const { lease } = setup(store);
    await lease.start();
    expect(lease.leaderUrl).toBeNull();
    await lease.stop();
  });

  it('a lease won while stopping is given straight back', async () => {
    const store = new ScriptedStore();
    store.acquireAnswer = { kind: 'value', value: { epoch: null, current: null } };
    const { timers, lease } = setup(store);
    await lease.start();
    const pending: Answer<{ epoch: number | null; current: LeaseRow | null }> = { kind: 'deferred' };
    store.acquireAnswer = pending;
    await advance(timers, POLL); // a poll on its way
    const stopping = lease.stop();
    pending.resolve!({ epoch: 7, current: null });
    await stopping;
    await flush();
    expect(lease.role).toBe('standby');
    expect(store.released).toEqual([{ epoch: 7, holder: lease.holder }]);
  });
});
