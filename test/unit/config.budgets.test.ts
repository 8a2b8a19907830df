/**
 * The coordinator's `concurrency_groups` setting (issue 11 budgets): a map in the config
 * file (the shipped example sets one), `name=n,...` in the environment and as a flag, and
 * a bad name or limit is an error naming the setting.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadCoordinatorConfig, type ConfigEnvironment } from '../../coordinator/config.js';

const ROOT = join(import.meta.dirname, '..', '..');
const host = (env: Record<string, string> = {}): ConfigEnvironment => ({ env: { HOME: '/home/k', ...env }, arch: 'x64', isTTY: false });

describe('coordinator config: concurrency_groups', () => {
  it('reads the file map, the environment and the flag (flag wins)', () => {
    const file = loadCoordinatorConfig({ config: join(ROOT, 'config', 'coordinator.example.yaml') }, host());
    expect([...file.concurrencyGroups]).toEqual([['gpu-heavy', 2]]);
    expect([...loadCoordinatorConfig({}, host({ KILN_CONCURRENCY_GROUPS: 'gpu-heavy=2, ci=8' })).concurrencyGroups]).toEqual([
      ['gpu-heavy', 2],
      ['ci', 8],
    ]);
    expect([...loadCoordinatorConfig({ concurrencyGroups: 'x=1' }, host({ KILN_CONCURRENCY_GROUPS: 'y=2' })).concurrencyGroups]).toEqual([['x', 1]]);
    expect(loadCoordinatorConfig({}, host()).concurrencyGroups.size).toBe(0);
  });

  it.each(['gpu=0', 'gpu=10001', 'gpu=two', 'bad name=2', 'gpu'])('refuses %s naming the setting', (value) => {
    expect(() => loadCoordinatorConfig({}, host({ KILN_CONCURRENCY_GROUPS: value }))).toThrow(/concurrency_groups/);
  });
});
