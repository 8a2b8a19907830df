/**
 * Layer-cache retention, the pure parts (coordinator/builds/cache-retention.ts): which
 * versioned tags go (all but the newest N per base, only versioned ones), and how a cache
 * repository maps to a registry URL (HTTP only for loopback hosts).
 */
import { describe, expect, it } from 'vitest';
import { pruneCacheTags, registryEndpoint, tagsToDrop } from '../../coordinator/builds/cache-retention.js';
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

  it('refuses what a hostile registry answers: a tag list that is not strings, an endless chain of pages, a page too big', async () => {
    const answer = (body: string, headers: Record<string, string> = {}) => (async () => new Response(body, { status: 200, headers })) as typeof fetch;
    await expect(pruneCacheTags('127.0.0.1:5000/c', 1, answer(JSON.stringify({ tags: [1, { a: 2 }] })))).rejects.toThrow('not a list of strings');
    const endless = answer(JSON.stringify({ tags: [] }), { link: '</v2/c/tags/list?last=x&n=1000>; rel="next"' });
    await expect(pruneCacheTags('127.0.0.1:5000/c', 1, endless)).rejects.toThrow('more than 100 pages');
    await expect(pruneCacheTags('127.0.0.1:5000/c', 1, answer(JSON.stringify({ tags: ['a'.repeat(5 * 1024 * 1024)] })))).rejects.toThrow('more than 4194304 bytes');
  });
});
