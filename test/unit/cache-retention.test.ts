/**
 * Layer-cache retention, the pure parts (coordinator/builds/cache-retention.ts): which
 * versioned tags go (all but the newest N per base, only versioned ones), and how a cache
 * repository maps to a registry URL (HTTP only for loopback hosts).
 */
import { describe, expect, it } from 'vitest';
import { registryEndpoint, tagsToDrop } from '../../coordinator/builds/cache-retention.js';
import { versionedTag } from '../../coordinator/builds/layer-cache-refs.js';

describe('layer cache retention', () => {
  it('drops all but the newest N versions per base, never a moving tag or a foreign tag', () => {
    const v = (base: string, at: number) => versionedTag(base, at);
    const tags = [v('a', 3), 'a', v('a', 1), v('a', 2), v('a', 40), v('b', 5), 'b', 'latest', 'x.tnotbase36!'];
    expect(tagsToDrop(tags, 2)).toEqual([v('a', 1), v('a', 2)]);
    expect(tagsToDrop(tags, 1)).toEqual([v('a', 1), v('a', 2), v('a', 3)]);
    expect(tagsToDrop(tags, 0).sort()).toEqual([v('a', 1), v('a', 2), v('a', 3), v('a', 40), v('b', 5)].sort());
    expect(tagsToDrop(tags, 5)).toEqual([]);
    // versions sort by time: 9 base-36 digits, zero-padded
    expect(v('a', 35) < v('a', 36)).toBe(true);
    expect(v('a', 1_700_000_000_000) < v('a', 1_800_000_000_000)).toBe(true);
  });

  it('speaks HTTP to loopback registries and HTTPS to the others', () => {
    expect(registryEndpoint('127.0.0.1:5000/kiln-cache')).toEqual({ base: 'http://127.0.0.1:5000', name: 'kiln-cache' });
    expect(registryEndpoint('localhost/a/b')).toEqual({ base: 'http://localhost', name: 'a/b' });
    expect(registryEndpoint('registry.example.com/team/cache')).toEqual({ base: 'https://registry.example.com', name: 'team/cache' });
  });
});
