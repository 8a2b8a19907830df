/**
 * Image references: what parses (and how it is normalised) and what is refused with a
 * message saying why, after the distribution `reference` grammar the Docker Engine uses.
 */
import { describe, expect, it } from 'vitest';
import { formatImageRef, parseImageRef, pushRefProblem } from '../../shared/spec/image-ref.js';

describe('image references', () => {
  it.each([
    ['127.0.0.1:5000/team/app:1.2', { domain: '127.0.0.1:5000', path: 'team/app', tag: '1.2', digest: null }],
    ['127.0.0.1:5000/app', { domain: '127.0.0.1:5000', path: 'app', tag: null, digest: null }],
    ['localhost/app:latest', { domain: 'localhost', path: 'app', tag: 'latest', digest: null }],
    ['busybox', { domain: 'docker.io', path: 'library/busybox', tag: null, digest: null }],
    ['team/app:v1_2.3-rc', { domain: 'docker.io', path: 'team/app', tag: 'v1_2.3-rc', digest: null }],
    ['ghcr.io/a-b/c__d/e.f:x', { domain: 'ghcr.io', path: 'a-b/c__d/e.f', tag: 'x', digest: null }],
    ['[::1]:5000/app:1', { domain: '[::1]:5000', path: 'app', tag: '1', digest: null }],
    [`reg.io/app@sha256:${'a'.repeat(64)}`, { domain: 'reg.io', path: 'app', tag: null, digest: `sha256:${'a'.repeat(64)}` }],
  ])('parses %s', (input, want) => {
    const r = parseImageRef(input);
    expect(r).toEqual({ ok: true, ref: want });
  });

  it.each([
    ['', 'empty'],
    ['Reg.io/Team/app', 'lower case'],
    ['reg.io/app:-bad', "invalid tag '-bad'"],
    ['reg.io/app:' + 'x'.repeat(129), 'invalid tag'],
    ['reg.io//app', 'empty path component'],
    ['reg.io/app/', 'empty path component'],
    ['reg.io:99999/app', 'invalid port'],
    ['re_g.io:5000/app', 'invalid registry host'],
    ['reg.io/a..b', "invalid repository path component 'a..b'"],
    ['reg.io/app@sha256:zz', 'invalid digest'],
    ['reg.io/app name', 'whitespace'],
    [':tag', 'no repository name'],
    ['r.io/' + 'a'.repeat(300), 'longer than 255'],
  ])('refuses %j', (input, message) => {
    const r = parseImageRef(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problem).toContain(message);
  });

  it('push references default the tag to latest and refuse digests', () => {
    expect(pushRefProblem('127.0.0.1:5000/app')).toMatchObject({ ref: '127.0.0.1:5000/app:latest' });
    expect(pushRefProblem('busybox:1')).toMatchObject({ ref: 'docker.io/library/busybox:1' });
    const d = pushRefProblem(`reg.io/app@sha256:${'b'.repeat(64)}`);
    expect('problem' in d && d.problem).toContain('an image is pushed to a tag');
    expect(formatImageRef({ domain: 'r.io', path: 'a/b', tag: 't', digest: null })).toBe('r.io/a/b:t');
  });
});
