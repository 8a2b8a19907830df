/**
 * Which reads a standby answers from its own copy of the state (issue 14): builds, their logs
 * and artifacts, dead letters and CAS blobs, never a stream (an SSE follow needs the leader's
 * live events) and never a write; everything else is the leader's.
 */
import { describe, expect, it } from 'vitest';
import { servedByReplica } from '../../coordinator/http/standby-app.js';

const at = (path: string) => new URL(`http://c:1${path}`);

describe('servedByReplica', () => {
  it.each([
    ['GET', '/api/v1/builds', undefined, true],
    ['GET', '/api/v1/builds?state=running&limit=5', undefined, true],
    ['HEAD', '/api/v1/builds/b-1', undefined, true],
    ['GET', '/api/v1/builds/b-1/nodes/n/logs', 'text/plain', true],
    ['GET', '/api/v1/builds/b-1/nodes/n/logs?follow=false', undefined, true],
    ['GET', '/api/v1/builds/b-1/artifacts', undefined, true],
    ['GET', '/api/v1/dead-letter', undefined, true],
    ['GET', '/api/v1/cas/sha256:abc', undefined, true],
    // streams need the leader's live events
    ['GET', '/api/v1/builds/b-1/nodes/n/logs?follow=true', undefined, false],
    ['GET', '/api/v1/builds/b-1/logs?follow=1', undefined, false],
    ['GET', '/api/v1/builds/b-1/logs', 'text/event-stream', false],
    // the leader's alone: the fleet, the events stream, keys, the audit log
    ['GET', '/api/v1/agents', undefined, false],
    ['GET', '/api/v1/events', undefined, false],
    ['GET', '/api/v1/keys', undefined, false],
    ['GET', '/api/v1/buildsx', undefined, false],
    // never a write
    ['POST', '/api/v1/builds', undefined, false],
    ['DELETE', '/api/v1/builds/b-1/pin', undefined, false],
  ] as const)('%s %s (accept %s): %s', (method, path, accept, expected) => {
    expect(servedByReplica(method, at(path), accept)).toBe(expected);
  });
});
