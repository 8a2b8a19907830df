/**
 * An attempt record with every field set, each to a value no other field has (the journal
 * format tests: tuples, patches).
 */
import { assignedAttempt, type AttemptRecord } from '../../coordinator/state/records.js';

/** An attempt with every field set to a value no other field has. */
export function fullAttempt(): AttemptRecord {
  const a = assignedAttempt({ id: 'a-1', number: 2, agent: 'agent-"1"', session: 's-1', assigned_at: 3, log_header: 'h\n\u2028é', inputs: { constructor: 'sha256:in' }, spec_digest: 'sha256:spec', gpus: [4, 5], emulated: true });
  return Object.assign(a, {
    state: 'failed',
    accepted_at: 6,
    started_at: 7,
    finished_at: 8,
    exit_code: 9,
    error: 'boom',
    failed_step: 'RUN x',
    infra: true,
    image_id: 'sha256:img',
    log_bytes: 10,
    reason: 'because',
    fetch_ms: 11,
    build_ms: 12,
    key: 'sha256:key',
    base_images: [{ ref: 'debian', digest: 'sha256:base' }],
    dockerfile_digest: 'sha256:df',
    outputs: [{ name: 'o', digest: 'sha256:out', size: 13 }],
    provenance: 'sha256:prov',
    reused_from: { build_id: 'b-0', node: 'n', attempt_id: 'a-0', attempt_number: 1 },
    test_exit_code: 14,
    images: [{ ref: '127.0.0.1:5000/a:1', digest: 'sha256:pushed', platform: 'linux/amd64', size: 15, media_type: 'application/vnd.docker.distribution.manifest.v2+json' }],
    cache: { hit: 16, miss: 17, push: 'pushed' },
  } as Partial<AttemptRecord>);
}

