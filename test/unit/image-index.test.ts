/**
 * Pieces of the index assembly that need no registry: the `WWW-Authenticate` challenge
 * parser (Basic and Bearer, quoted values with commas), the registry base URL (plain HTTP
 * only for loopback hosts, Docker Hub's API host), and the push refusal classifier (the
 * registry refusing vs failing).
 */
import { describe, expect, it } from 'vitest';
import { parseChallenge, registryBase } from '../../agent/docker/image-index.js';
import { isRegistryRefusal } from '../../agent/docker/image-push.js';

describe('index assembly helpers', () => {
  it('parses Basic and Bearer challenges', () => {
    expect(parseChallenge('Basic realm="kiln-test"')).toEqual({ scheme: 'basic', params: new Map([['realm', 'kiln-test']]) });
    const b = parseChallenge('Bearer realm="http://127.0.0.1:9/token",service="kiln-registry",scope="repository:a/b:pull,push"');
    expect(b?.scheme).toBe('bearer');
    expect(b?.params.get('scope')).toBe('repository:a/b:pull,push');
    expect(b?.params.get('service')).toBe('kiln-registry');
    expect(parseChallenge('')).toBeNull();
  });

  it('speaks plain HTTP only to loopback registries', () => {
    expect(registryBase('127.0.0.1:5000')).toBe('http://127.0.0.1:5000');
    expect(registryBase('localhost:5000')).toBe('http://localhost:5000');
    expect(registryBase('[::1]:5000')).toBe('http://[::1]:5000');
    expect(registryBase('ghcr.io')).toBe('https://ghcr.io');
    expect(registryBase('docker.io')).toBe('https://registry-1.docker.io');
  });

  it('tells a refusal (fail now) from a failure (retry)', () => {
    expect(isRegistryRefusal('unauthorized: authentication required')).toBe(true);
    expect(isRegistryRefusal('denied: requested access to the resource is denied')).toBe(true);
    expect(isRegistryRefusal('no basic auth credentials')).toBe(true);
    expect(isRegistryRefusal('Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused')).toBe(false);
    expect(isRegistryRefusal('received unexpected HTTP status: 500 Internal Server Error')).toBe(false);
    expect(isRegistryRefusal('net/http: request canceled (Client.Timeout exceeded while awaiting headers)')).toBe(false);
  });
});
