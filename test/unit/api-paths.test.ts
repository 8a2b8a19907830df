/**
 * The route table (shared/api-paths.ts): each route's template is the wire path the
 * coordinator serves (pinned here literally, so a change to the table is a deliberate
 * change of the API), and `apiPath` fills it with encoded parameters.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AGENT_CONTROL_ACTIONS, AGENT_CONTROL_ROUTES, API_PREFIX, API_ROUTES, apiPath, encodePathSegment, withQuery } from '../../shared/index.js';

describe('API route paths', () => {
  it('keeps the wire paths of every route', () => {
    expect(Object.fromEntries(Object.entries(API_ROUTES).map(([name, r]) => [name, r.template]))).toEqual({
      builds: '/api/v1/builds',
      build: '/api/v1/builds/{id}',
      buildCancel: '/api/v1/builds/{id}/cancel',
      buildLogs: '/api/v1/builds/{id}/logs',
      buildArtifacts: '/api/v1/builds/{id}/artifacts',
      buildImages: '/api/v1/builds/{id}/images',
      buildPin: '/api/v1/builds/{id}/pin',
      buildError: '/api/v1/builds/{id}/error',
      nodeLogs: '/api/v1/builds/{id}/nodes/{node}/logs',
      nodeRetry: '/api/v1/builds/{id}/nodes/{node}/retry',
      agents: '/api/v1/agents',
      agent: '/api/v1/agents/{name}',
      agentPause: '/api/v1/agents/{name}/pause',
      agentResume: '/api/v1/agents/{name}/resume',
      agentDrain: '/api/v1/agents/{name}/drain',
      agentEnrol: '/api/v1/agent-enrolment',
      agentRevoke: '/api/v1/agents/{name}/revoke',
      agentRotate: '/api/v1/agents/{name}/rotate',
      agentCredential: '/api/v1/agent-credential',
      tokens: '/api/v1/tokens',
      token: '/api/v1/tokens/{id}',
      pools: '/api/v1/pools',
      events: '/api/v1/events',
      deadLetter: '/api/v1/dead-letter',
      gc: '/api/v1/gc',
      secrets: '/api/v1/secrets',
      secret: '/api/v1/secrets/{name}',
      casBlob: '/api/v1/cas/{digest}',
      casFindMissing: '/api/v1/cas/find-missing',
      cluster: '/api/v1/cluster',
      keys: '/api/v1/keys',
      key: '/api/v1/keys/{id}',
      audit: '/api/v1/audit',
      session: '/api/v1/session',
      webhooks: '/api/v1/webhooks',
      webhookDeliveries: '/api/v1/webhooks/{id}/deliveries',
    });
    for (const r of Object.values(API_ROUTES)) expect(r.template.startsWith(`${API_PREFIX}/`)).toBe(true);
    for (const a of AGENT_CONTROL_ACTIONS) expect(AGENT_CONTROL_ROUTES[a].template).toBe(`/api/v1/agents/{name}/${a}`);
  });

  it('fills parameters in order, encoded, with ":" kept (digests read as they always did)', () => {
    expect(apiPath.builds()).toBe('/api/v1/builds');
    expect(apiPath.build('b-01kbx2f3q4000-7d2k9x4m')).toBe('/api/v1/builds/b-01kbx2f3q4000-7d2k9x4m');
    expect(apiPath.nodeLogs('b-1', 'compile')).toBe('/api/v1/builds/b-1/nodes/compile/logs');
    expect(apiPath.casBlob(`sha256:${'a'.repeat(64)}`)).toBe(`/api/v1/cas/sha256:${'a'.repeat(64)}`);
    expect(apiPath.nodeRetry('a/b', 'c?d#e%')).toBe('/api/v1/builds/a%2Fb/nodes/c%3Fd%23e%25/retry');
    expect(AGENT_CONTROL_ROUTES.drain.path('builder 1')).toBe('/api/v1/agents/builder%201/drain');
    expect(API_ROUTES.nodeLogs.rawPath('b-1', '%2E%2E')).toBe('/api/v1/builds/b-1/nodes/%2E%2E/logs');
  });

  it('gives every parameter back whole: one segment, decoding to what was given', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string(), (id, node) => {
        const segs = apiPath.nodeLogs(id, node).split('/');
        expect(segs).toHaveLength(8);
        expect(segs[4]).toBe(encodePathSegment(id));
        expect(decodeURIComponent(segs[4]!)).toBe(id);
        expect(decodeURIComponent(segs[6]!)).toBe(node);
      }),
    );
  });

  it('adds query strings in order, leaving out absent values', () => {
    expect(withQuery(apiPath.builds(), { limit: 2, cursor: undefined })).toBe('/api/v1/builds?limit=2');
    expect(withQuery(apiPath.buildLogs('b-1'), { follow: true, cursor: '' })).toBe('/api/v1/builds/b-1/logs?follow=true&cursor=');
    expect(withQuery(apiPath.buildLogs('b-1'), { follow: false, cursor: '~AQ~a:1,b c' })).toBe('/api/v1/builds/b-1/logs?follow=false&cursor=~AQ~a%3A1%2Cb%20c');
    expect(withQuery(apiPath.agents(), {})).toBe('/api/v1/agents');
  });
});
