/**
 * The walking skeleton end to end: a coordinator and two agent processes on two Docker
 * engines, one of them also offering linux/s390x under qemu emulation. A DAG with a
 * fan-in runs through both; the s390x node must go to the s390x agent and really run
 * there (`uname -m` in its log), the others anywhere; dependents start only after their
 * needs succeeded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DOCKER_HOST,
  DOCKER_HOST_SECOND,
  inline,
  nodeLog,
  startAgent,
  startCoordinator,
  submitSpec,
  tempDir,
  waitForBuild,
  type CoordinatorHandle,
  type Proc,
} from '../helpers/cluster.js';
import { apiPath } from '../../shared/index.js';

describe.skipIf(!DOCKER_HOST_SECOND)('a DAG across two agents on two dockerd instances (needs KILN_DOCKER_HOST_SECOND)', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let coord: CoordinatorHandle;
  const procs: Proc[] = [];

  beforeAll(async () => {
    dir = await tempDir('dag');
    coord = await startCoordinator({ dataDir: `${dir.path}/data` });
    procs.push(coord.proc);
    procs.push(await startAgent({ coordinator: coord, name: 'amd64-only', workDir: `${dir.path}/a1`, dockerHost: DOCKER_HOST }));
    procs.push(await startAgent({ coordinator: coord, name: 's390x-emu', workDir: `${dir.path}/a2`, dockerHost: DOCKER_HOST_SECOND!, platforms: ['linux/s390x'] }));
  });

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop();
    await dir.cleanup();
  });

  it('runs every node, places s390x only on the emulating agent, and honours the needs', async () => {
    const marker = `m${Date.now()}`;
    const id = await submitSpec(coord, {
      name: 'fan-in',
      nodes: {
        native: inline(`FROM kiln/busybox:1\nRUN echo "native ${marker} $(uname -m)"`, { no_cache: true }),
        mainframe: inline(`FROM kiln/busybox:1-s390x\nRUN echo "mainframe ${marker} $(uname -m)"`, { platform: 'linux/s390x', allow_emulation: true, no_cache: true }),
        combine: inline(`FROM kiln/busybox:1\nRUN echo "combine ${marker}"`, { needs: ['native', 'mainframe'], no_cache: true }),
      },
    });
    const build = await waitForBuild(coord, id);
    expect(build.state).toBe('success');
    const byName = Object.fromEntries(build.nodes.map((n) => [n.name, n]));
    expect(byName.mainframe!.agent).toBe('s390x-emu');
    for (const n of build.nodes) {
      expect(n.state).toBe('success');
      expect(n.image_id).toMatch(/^sha256:[0-9a-f]{64}$/);
    }
    const view = await coord.api<{ nodes: Array<{ attempts: Array<{ build_ms: number | null; started_at: string | null; accepted_at: string | null }> }> }>(apiPath.build(id));
    for (const n of view.body.nodes) {
      expect(n.attempts[0]!.build_ms).toBeGreaterThan(0);
      expect(n.attempts[0]!.started_at).not.toBeNull();
      expect(n.attempts[0]!.accepted_at).not.toBeNull();
    }
    const mainframeLog = await nodeLog(coord, id, 'mainframe');
    expect(mainframeLog).toContain(`mainframe ${marker} s390x`);
    const nativeLog = await nodeLog(coord, id, 'native');
    expect(nativeLog).toContain(`native ${marker} x86_64`);
    expect(await nodeLog(coord, id, 'combine')).toContain(`combine ${marker}`);

    // combine started only after both of its needs finished
    const full = await coord.api<{ nodes: Array<{ name: string; started_at: string; finished_at: string }> }>(apiPath.build(id));
    const t = Object.fromEntries(full.body.nodes.map((n) => [n.name, n]));
    expect(Date.parse(t.combine!.started_at)).toBeGreaterThanOrEqual(Date.parse(t.native!.finished_at));
    expect(Date.parse(t.combine!.started_at)).toBeGreaterThanOrEqual(Date.parse(t.mainframe!.finished_at));
  });

  it('keeps a node that no agent can run waiting, and says why', async () => {
    const id = await submitSpec(coord, { nodes: { arm: inline('FROM kiln/busybox:1-arm64\nRUN true', { platform: 'linux/arm64' }) } });
    const build = await waitForBuild(coord, id, (b) => b.nodes[0]!.state === 'ready');
    const view = await coord.api<{ nodes: Array<{ waiting: string | null }> }>(apiPath.build(build.id));
    expect(view.body.nodes[0]!.waiting).toContain('no connected agent has platform linux/arm64');
    const cancelled = await coord.api<{ state: string }>(apiPath.buildCancel(id), { method: 'POST' });
    expect(cancelled.status).toBe(202);
    expect(cancelled.body.state).toBe('cancelled');
  });
});
