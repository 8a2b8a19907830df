/**
 * The layer-cache settings of the coordinator (`cache.registry`, `cache.mode`): every layer
 * (file, environment, flag) with the one precedence rule, validation of the repository
 * naming the setting, and no cache at all without a registry.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cacheRepositoryProblem, loadCoordinatorConfig } from '../../coordinator/config.js';

describe('coordinator config: layer cache', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-cache-cfg-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, ...env }, arch: 'x64', isTTY: false });

  it('has no layer cache without a registry, whatever the mode', () => {
    expect(loadCoordinatorConfig({}, host()).cache).toBeNull();
    expect(loadCoordinatorConfig({ cacheMode: 'read' }, host()).cache).toBeNull();
  });

  it('reads registry and mode from the file, the environment and flags (flag > env > file)', async () => {
    const file = join(dir, 'c.yaml');
    await writeFile(file, 'cache:\n  registry: 127.0.0.1:5000/kiln-cache\n  mode: read\n');
    expect(loadCoordinatorConfig({ config: file }, host()).cache).toEqual({ registry: '127.0.0.1:5000/kiln-cache', mode: 'read', keep: 5 });
    expect(loadCoordinatorConfig({ config: file }, host({ KILN_CACHE_MODE: 'off', KILN_CACHE_REGISTRY: 'registry.example.com/team/cache' })).cache).toEqual({
      registry: 'registry.example.com/team/cache',
      mode: 'off',
      keep: 5,
    });
    expect(loadCoordinatorConfig({ config: file, cacheMode: 'readwrite', cacheRegistry: 'localhost:5001/c', cacheKeep: '2' }, host({ KILN_CACHE_MODE: 'off', KILN_CACHE_KEEP: '9' })).cache).toEqual({
      registry: 'localhost:5001/c',
      mode: 'readwrite',
      keep: 2,
    });
    // default mode: readwrite
    expect(loadCoordinatorConfig({ cacheRegistry: '127.0.0.1:5000/kiln-cache' }, host()).cache?.mode).toBe('readwrite');
  });

  it('refuses a bad registry or mode, naming the setting', async () => {
    expect(() => loadCoordinatorConfig({ cacheRegistry: '127.0.0.1:5000/kiln-cache:latest' }, host())).toThrow(/cache\.registry: .*no tag/);
    expect(() => loadCoordinatorConfig({ cacheRegistry: 'kiln-cache' }, host())).toThrow(/cache\.registry: 'kiln-cache' must be host\[:port\]\/path/);
    expect(() => loadCoordinatorConfig({}, host({ KILN_CACHE_REGISTRY: 'cache/Upper' }))).toThrow(/cache\.registry: .*'cache' is not a registry host/);
    expect(() => loadCoordinatorConfig({ cacheRegistry: '127.0.0.1:5000/Kiln' }, host())).toThrow(/cache\.registry: .*path component 'Kiln'/);
    expect(() => loadCoordinatorConfig({ cacheRegistry: '127.0.0.1:5000/a', cacheMode: 'max' }, host())).toThrow(/cache\.mode: 'max' is not one of readwrite, read, off/);
    expect(() => loadCoordinatorConfig({ cacheRegistry: '127.0.0.1:5000/a', cacheKeep: '-1' }, host())).toThrow(/cache\.keep/);
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'cache: { registry: 127.0.0.1:5000/x, ttl: 3 }\n');
    expect(() => loadCoordinatorConfig({ config: file }, host())).toThrow(/cache\.ttl: unknown setting/);
  });

  it('checks repositories per the distribution spec', () => {
    for (const ok of ['127.0.0.1:5000/kiln-cache', 'localhost/x', 'reg.example.com/a/b__c/d.e-f', 'r.io:443/x']) expect(cacheRepositoryProblem(ok), ok).toBeNull();
    for (const bad of ['', '/x', '127.0.0.1:5000/', '127.0.0.1:5000//x', 'host.io/-x', 'host.io/x-', 'h.io:99999/x', `h.io/${'a'.repeat(300)}`]) expect(cacheRepositoryProblem(bad), bad).not.toBeNull();
  });
});
