/**
 * Refusals reach the audit log at a bounded rate per address and action (anyone can cause
 * them); mutations are all recorded; the next refusal recorded counts those left out.
 */
import { describe, expect, it } from 'vitest';
import { RefusalThrottle } from '../../coordinator/access/audit-throttle.js';

type Ev = Parameters<RefusalThrottle['record']>[0];

describe('audit refusal throttle', () => {
  it('records the first refusal per address and action in a window, counts the rest, and records every mutation', () => {
    const got: Ev[] = [];
    let t = 1_000;
    const th = new RefusalThrottle({ record: (e) => got.push(e) }, 10_000, () => t);
    for (let i = 0; i < 500; i++) th.record({ actor: 'anonymous', action: 'GET /api/v1/builds', outcome: 'refused', detail: '401 E_UNAUTHORIZED: no key', remote: '10.0.0.9' });
    th.record({ actor: 'anonymous', action: 'GET /api/v1/builds', outcome: 'refused', detail: '401 E_UNAUTHORIZED: no key', remote: '10.0.0.10' });
    th.record({ actor: 'anonymous', action: 'agent.connect', outcome: 'refused', detail: 'bad token', remote: '10.0.0.9' });
    for (let i = 0; i < 3; i++) th.record({ actor: 'key:k1', action: 'build.cancel', outcome: 'ok', target: `b-${i}`, remote: '10.0.0.9' });
    expect(got.map((e) => `${e.remote} ${e.action} ${e.outcome}`)).toEqual([
      '10.0.0.9 GET /api/v1/builds refused',
      '10.0.0.10 GET /api/v1/builds refused',
      '10.0.0.9 agent.connect refused',
      '10.0.0.9 build.cancel ok',
      '10.0.0.9 build.cancel ok',
      '10.0.0.9 build.cancel ok',
    ]);
    t += 10_000;
    th.record({ actor: 'anonymous', action: 'GET /api/v1/builds', outcome: 'refused', detail: '401 E_UNAUTHORIZED: no key', remote: '10.0.0.9' });
    expect(got.at(-1)!.detail).toBe('401 E_UNAUTHORIZED: no key (and 499 more like it from this address in the 10 s before, not recorded one by one)');
  });

  it('keeps a bounded number of windows', () => {
    let n = 0;
    const th = new RefusalThrottle({ record: () => n++ }, 10_000, () => 0);
    for (let i = 0; i < 25_000; i++) th.record({ actor: 'anonymous', action: 'x', outcome: 'refused', remote: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}` });
    expect(n).toBe(25_000);
    expect((th as unknown as { windows: Map<string, unknown> }).windows.size).toBeLessThanOrEqual(10_000);
  });
});
