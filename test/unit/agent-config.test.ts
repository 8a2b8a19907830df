/**
 * The agent's min_free_disk setting: 512 MiB by default, layered file < env < flag like
 * every other setting, and a bad size refused with the setting named.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';

describe('agent config: min_free_disk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-agent-cfg-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, KILN_AGENT_TOKEN: 't', KILN_COORDINATOR: 'http://c:8080', ...env }, hostname: 'h', isTTY: false });

  it('defaults to 512MiB and layers file < env < flag', async () => {
    expect(loadAgentConfig({}, host()).minFreeDiskBytes).toBe(512 * 1024 * 1024);
    const file = join(dir, 'a.yaml');
    await writeFile(file, 'min_free_disk: 2GiB\n');
    expect(loadAgentConfig({ config: file }, host()).minFreeDiskBytes).toBe(2 * 1024 ** 3);
    expect(loadAgentConfig({ config: file }, host({ KILN_AGENT_MIN_FREE_DISK: '100MiB' })).minFreeDiskBytes).toBe(100 * 1024 ** 2);
    expect(loadAgentConfig({ config: file, minFreeDisk: '0' }, host({ KILN_AGENT_MIN_FREE_DISK: '100MiB' })).minFreeDiskBytes).toBe(0);
    await writeFile(file, 'min_free_disk: 1048576\n');
    expect(loadAgentConfig({ config: file }, host()).minFreeDiskBytes).toBe(1048576);
  });

  it('names the setting of a bad value', () => {
    expect(() => loadAgentConfig({ minFreeDisk: 'lots' }, host())).toThrow(/config min_free_disk: 'lots' is not a byte size/);
    expect(() => loadAgentConfig({}, host({ KILN_AGENT_MIN_FREE_DISK: '-5MiB' }))).toThrow(/min_free_disk/);
  });

  it('the shipped example config sets it', async () => {
    const token = join(dir, 'token');
    await writeFile(token, 't\n');
    const c = loadAgentConfig({ config: join(import.meta.dirname, '..', '..', 'config', 'agent.example.yaml'), tokenFile: token }, host());
    expect(c.minFreeDiskBytes).toBe(1024 ** 3);
  });
});
