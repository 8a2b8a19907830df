/**
 * The per-agent circuit breaker with a fake clock: 3 infrastructure failures within 30 s
 * open it for 30 s, then exactly one trial attempt; the trial closes it again or reopens
 * it. Also through the registry, where an open breaker means no free slots.
 */
import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../coordinator/placement/circuit-breaker.js';
import { AgentRegistry } from '../../coordinator/placement/agent-registry.js';
import { FakeChannel, hello } from '../helpers/engine-harness.js';

describe('CircuitBreaker', () => {
  it('opens after 3 infrastructure failures within 30 s, not after 3 spread wider', () => {
    const b = new CircuitBreaker();
    expect(b.recordFailure(0)).toBe(false);
    expect(b.recordFailure(20_000)).toBe(false);
    // the first one is out of the window by now
    expect(b.recordFailure(31_000)).toBe(false);
    expect(b.view(31_000)).toMatchObject({ state: 'closed', recent_failures: 2 });
    expect(b.recordFailure(35_000)).toBe(true);
    expect(b.view(35_000)).toEqual({ state: 'open', until: 65_000, recent_failures: 3, trial: null });
    expect(b.admits(35_000)).toBe(0);
    // more failures while open do not extend it
    expect(b.recordFailure(40_000)).toBe(false);
    expect(b.view(40_000).until).toBe(65_000);
  });

  it('goes half-open after 30 s, admits exactly one trial, and closes when the trial ends healthy', () => {
    const b = new CircuitBreaker();
    for (const t of [0, 1, 2]) b.recordFailure(t);
    expect(b.admits(30_001)).toBe(0);
    expect(b.view(30_002).state).toBe('half_open'); // time-aware before any tick
    expect(b.state).toBe('open');
    expect(b.tick(30_002)).toBe(true);
    expect(b.tick(30_003)).toBe(false);
    expect(b.state).toBe('half_open');
    expect(b.admits(30_002)).toBe(1);
    b.onHold('trial-1', 30_010);
    expect(b.trial).toBe('trial-1');
    expect(b.admits(30_010)).toBe(0);
    // an attempt from before the breaker opened ending well is not the trial's verdict
    expect(b.recordSuccess(30_020, 'old-attempt')).toBe(false);
    expect(b.state).toBe('half_open');
    b.onRelease('trial-1');
    expect(b.recordSuccess(30_030, 'trial-1')).toBe(true);
    expect(b.view(30_030)).toEqual({ state: 'closed', until: null, recent_failures: 0, trial: null });
    expect(b.admits(30_030)).toBe(Infinity);
    // closed again: it takes 3 new failures to open
    b.recordFailure(30_040);
    b.recordFailure(30_050);
    expect(b.state).toBe('closed');
  });

  it('reopens for another 30 s when the trial fails for infrastructure reasons', () => {
    const b = new CircuitBreaker();
    for (const t of [0, 1, 2]) b.recordFailure(t);
    b.onHold('trial-1', 31_000); // ticks to half-open itself
    expect(b.trial).toBe('trial-1');
    b.onRelease('trial-1');
    expect(b.recordFailure(31_500)).toBe(true);
    expect(b.view(31_500)).toMatchObject({ state: 'open', until: 61_500, trial: null });
    expect(b.admits(61_499)).toBe(0);
    expect(b.admits(61_500)).toBe(1);
  });

  it('lets another trial start when the trial gave its slot back without a verdict', () => {
    const b = new CircuitBreaker();
    for (const t of [0, 1, 2]) b.recordFailure(t);
    b.tick(40_000);
    b.onHold('t1', 40_000);
    expect(b.admits(40_000)).toBe(0);
    b.onRelease('t1');
    expect(b.admits(40_001)).toBe(1);
  });

  it('rejects nonsensical options with a clear error', () => {
    expect(() => new CircuitBreaker({ threshold: 0, windowMs: 1, openMs: 1 })).toThrow(/threshold must be an integer >= 1/);
    expect(() => new CircuitBreaker({ threshold: 3, windowMs: 0, openMs: 1 })).toThrow(/window must be > 0/);
  });
});

describe('circuit breaker in the agent registry', () => {
  it('gives an agent with an open breaker no slots, then one trial slot, then all slots again', () => {
    const reg = new AgentRegistry();
    const { entry: a } = reg.connect(hello('a', { max_jobs: 4 }), new FakeChannel(), 0);
    reg.markWelcomed(a);
    const req = { platform: 'linux/amd64', labels: {}, labelsNot: {}, allowEmulation: false, gpus: null };
    expect(reg.freeSlots(a, 0)).toBe(4);
    for (const t of [1000, 2000, 3000]) reg.recordInfraFailure('a', t);
    expect(a.breaker.view(3000).state).toBe('open');
    expect(reg.freeSlots(a, 3000)).toBe(0);
    expect(reg.pick(req, 3000)).toBeNull();
    expect(reg.tick(20_000)).toBe(false);
    expect(reg.pick(req, 20_000)).toBeNull();
    expect(reg.tick(33_000)).toBe(true);
    expect(reg.freeSlots(a, 33_000)).toBe(1);
    expect(reg.pick(req, 33_000)?.agent).toBe(a);
    reg.hold(a, 'trial', [], 33_000);
    expect(reg.freeSlots(a, 33_000)).toBe(0);
    expect(reg.pick(req, 33_000)).toBeNull();
    reg.release('a', 'trial');
    reg.recordHealthy('a', 34_000);
    expect(a.breaker.view(34_000).state).toBe('closed');
    expect(reg.freeSlots(a, 34_000)).toBe(4);
    expect(reg.pick(req, 34_000)?.agent).toBe(a);
  });

  it('keeps the breaker across a reconnect of the same agent', () => {
    const reg = new AgentRegistry();
    reg.connect(hello('a'), new FakeChannel(), 0);
    for (const t of [1, 2, 3]) reg.recordInfraFailure('a', t);
    const { entry } = reg.connect(hello('a', { session: 'a-session-2' }), new FakeChannel(), 10);
    reg.markWelcomed(entry);
    expect(entry.breaker.view(10).state).toBe('open');
    expect(reg.freeSlots(entry, 10)).toBe(0);
  });
});
