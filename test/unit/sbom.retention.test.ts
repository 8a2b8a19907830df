/**
 * Retention keeps image SBOMs: the blobs a build refers to (`buildDigests`) include the
 * SBOM digest of every image its attempts pushed, so a sweep never deletes an SBOM that a
 * live build's images route, build view or provenance still names.
 */
import { describe, expect, it } from 'vitest';
import { buildDigests } from '../../coordinator/cas/retention.js';
import { assignedAttempt } from '../../coordinator/state/records.js';
import { buildRecord } from '../helpers/build-record.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;

describe('retention and SBOMs', () => {
  it('counts the SBOMs of pushed images among a build’s blobs (not a null one)', () => {
    const b = buildRecord('b-1', 2);
    const attempt = (n: number) => assignedAttempt({ id: `a-${n}`, number: 1, agent: 'x', session: 's', assigned_at: 1, log_header: '', inputs: {}, spec_digest: null });
    const a0 = attempt(0);
    a0.provenance = d('1');
    a0.images = [
      { ref: 'r/a:1', digest: d('2'), platform: 'linux/amd64', size: 1, media_type: 'm', sbom: d('3') },
      { ref: 'r/a:2', digest: d('2'), platform: 'linux/amd64', size: 1, media_type: 'm', sbom: d('3') },
    ];
    const a1 = attempt(1);
    a1.images = [{ ref: 'r/b:1', digest: d('4'), platform: 'linux/amd64', size: 1, media_type: 'm', sbom: null }];
    b.nodes[0]!.attempts.push(a0);
    b.nodes[1]!.attempts.push(a1);
    expect([...buildDigests(b)].sort()).toEqual([d('1'), d('3')]);
  });
});
