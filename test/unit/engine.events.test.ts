/**
 * The engine's and the log store's events are typed (an event map: name -> listener
 * arguments), so a follower gets typed payloads and a misspelt event does not compile.
 * Checks the payloads a live follower sees during one build: `build` on submit and on
 * every build state change, `node` on every node change, `append` on log writes.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, expectTypeOf, it } from 'vitest';
import type { Engine, EngineEvents } from '../../coordinator/builds/engine.js';
import type { BuildSource } from '../../coordinator/logs/log-follow.js';
import type { LogEvents } from '../../coordinator/logs/log-store.js';
import type { LogStorage } from '../../coordinator/logs/log-storage.js';
import type { StateStore } from '../../coordinator/state/state-store.js';
import { validateSpec } from '../../shared/index.js';
import { FakeChannel, finished, frame, hello, openEngine, tick } from '../helpers/engine-harness.js';

describe('engine events', () => {
  let dir: string;
  let engine: Engine;
  let store: StateStore;
  let logs: LogStorage;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-engine-events-'));
    ({ engine, store, logs } = await openEngine(dir, () => 1_000_000));
  });

  afterEach(async () => {
    await engine.stop();
    await store.drain();
    await logs.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('types each event by its map entry', () => {
    expectTypeOf<EngineEvents['node']>().toEqualTypeOf<[buildId: string, node: string]>();
    expectTypeOf<EngineEvents['build']>().toEqualTypeOf<[buildId: string]>();
    expectTypeOf<LogEvents['append']>().toEqualTypeOf<[buildId: string, node: string]>();
    // The engine is what log following needs (logs/ does not import builds/).
    expectTypeOf<Engine>().toExtend<BuildSource>();
    // @ts-expect-error: no such event
    engine.on('nodes', () => {});
    // @ts-expect-error: `build` listeners get a build id, not a number
    engine.on('build', (id: number) => id);
  });

  it('emits build, node and append with the ids of what changed', async () => {
    const seen: string[] = [];
    const onBuild = (id: string) => seen.push(`build ${id}`);
    const onNode = (id: string, node: string) => seen.push(`node ${id} ${node}`);
    const onAppend = (id: string, node: string) => seen.push(`append ${id} ${node}`);
    engine.on('build', onBuild).on('node', onNode);
    logs.on('append', onAppend);
    const ch = new FakeChannel();
    const out = await engine.hello(hello('a1'), ch);
    if (!out.ok) throw new Error(out.reason);
    engine.welcomed(out.entry, ch);
    const r = validateSpec({ name: 't', nodes: { n: { dockerfile_inline: 'FROM scratch\n' } } }, { form: 'submitted', defaultPlatform: 'linux/amd64' });
    if (!r.ok) throw new Error('spec');
    const build = await engine.submit(r.value);
    await tick();
    const id = ch.assigns()[0]!.attempt_id;
    await engine.frame(out.entry, frame('started', { attempt_id: id, at: 1 }));
    await engine.frame(out.entry, frame('log', { attempt_id: id, seq: 1, offset: 0, data: Buffer.from('hello\n') }));
    await engine.frame(out.entry, frame('finished', finished(id, 'success')));
    engine.off('build', onBuild).off('node', onNode);
    logs.off('append', onAppend);
    expect(seen).toContain(`node ${build.id} n`);
    expect(seen).toContain(`append ${build.id} n`);
    // submitted, running, success
    expect(seen.filter((e) => e === `build ${build.id}`).length).toBeGreaterThanOrEqual(3);
    expect(seen.every((e) => e.split(' ')[1] === build.id)).toBe(true);
    expect(engine.activeBuild(build.id) ?? (await engine.getBuild(build.id))).toMatchObject({ state: 'success' });
  });
});
