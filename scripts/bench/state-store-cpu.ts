/**
 * What persistence costs per node in CPU, apart from the network and the agents (issue 10,
 * dispatch on/off): kiln's real `StateStore` taking a 10,000-node build through submission
 * (`markNew` + commit), dispatch and result (two changes a node, 50 in flight, each awaited
 * until durable, as the engine does) and archiving, with the main thread's CPU read from
 * /proc per phase; and the CPU of one durable journal append against a write over bytes
 * the file already has (a pre-zeroed journal), the disk's fixed cost per group commit.
 * The same with persistence off (the work of the bench loop itself) is the baseline. CPU
 * time, not wall-clock time, so the figures hold on a busy machine. Linux only.
 *
 *   node dist/scripts/bench/state-store-cpu.js [--nodes 10000] [--builds 6]
 */
import { constants, mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StateStore } from '../../coordinator/state/state-store.js';
import { assignedAttempt, pendingNode, type BuildRecord } from '../../coordinator/state/records.js';
import { fmt, machineLine } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const NODES = arg('nodes', 10_000);
const BUILDS = arg('builds', 6);
const IN_FLIGHT = 50;

/** CPU ms of the main thread so far (utime + stime, 10 ms ticks). */
function mainThreadMs(): number {
  const f = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

function processMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function wideBuild(id: string): BuildRecord {
  const t = Date.now();
  const nodes = Array.from({ length: NODES }, (_, i) =>
    Object.assign(
      pendingNode({ name: `n${i}`, platform: 'linux/amd64', context: null, dockerfile: null, dockerfile_inline: 'FROM scratch', build_args: {}, labels: {}, labels_not: {}, allow_emulation: false, gpus: null, priority: 0, retry: true, test: null, needs: [], timeout_ms: 3_600_000, target: null, no_cache: false, inputs: [], outputs: [], reuse: true }),
      { state: 'ready' as const, ready_at: t },
    ),
  );
  return { id, name: 'wide', state: 'running', cancel_requested: false, created_at: t, started_at: t, finished_at: null, nodes };
}

async function storePhases(dir: string, persist: boolean) {
  const store = await StateStore.open({ dataDir: dir, persist, init: true });
  const ms = { submit: 0, dispatch: 0, archive: 0, process: 0, writes: 0 };
  for (let r = 0; r < BUILDS; r++) {
    const id = `b-01m87q8730000-bench${String(r).padStart(3, '0')}`;
    const build = wideBuild(id);
    const p0 = processMs();
    const w0 = store.writes;
    let c = mainThreadMs();
    store.data.builds.set(id, build);
    store.markNew(id);
    await store.commit();
    ms.submit += mainThreadMs() - c;
    c = mainThreadMs();
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < NODES; i = next++) {
        const node = build.nodes[i]!;
        const t = Date.now();
        node.state = 'assigned';
        node.attempts.push(assignedAttempt({ id: `a-01m87q8730000-${String(i).padStart(8, '0')}`, number: 1, agent: 'sim-17', session: 'ARd0s5eJ-jFQbMPC', assigned_at: t, log_header: '', inputs: {}, spec_digest: `sha256:${'c4'.repeat(32)}`, gpus: [], emulated: false }));
        store.markNodeFields(id, node.name);
        store.markAttempt(id, node.name, 0);
        await store.commit();
        await new Promise((resolve) => setImmediate(resolve));
        const a = node.attempts[0]!;
        Object.assign(a, { state: 'success', accepted_at: t, started_at: t, finished_at: Date.now(), exit_code: 0 });
        Object.assign(node, { state: 'success', started_at: t, finished_at: Date.now() });
        store.markNodeFields(id, node.name);
        store.markAttempt(id, node.name, 0);
        await store.commit();
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    ms.dispatch += mainThreadMs() - c;
    c = mainThreadMs();
    Object.assign(build, { state: 'success', finished_at: Date.now() });
    store.markBuild(id);
    await store.archive(build);
    await store.commit();
    ms.archive += mainThreadMs() - c;
    ms.process += processMs() - p0;
    ms.writes += store.writes - w0;
  }
  await store.drain();
  return ms;
}

/** CPU µs of the whole process per O_DSYNC write of `size` bytes: appending, or over a pre-zeroed file. */
async function writeCost(dir: string, prezeroed: boolean, size = 3000, count = 2000): Promise<number> {
  const path = join(dir, prezeroed ? 'prezeroed' : 'append');
  const bytes = Buffer.alloc(size, 0x78);
  if (prezeroed) {
    const fh = await open(path, 'w');
    await fh.write(Buffer.alloc(size * count));
    await fh.sync();
    await fh.close();
  }
  const fh = await open(path, prezeroed ? constants.O_WRONLY | constants.O_DSYNC : constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC);
  const p0 = processMs();
  for (let i = 0; i < count; i++) await (prezeroed ? fh.write(bytes, 0, size, i * size) : fh.write(bytes));
  const per = ((processMs() - p0) * 1000) / count;
  await fh.close();
  return per;
}

async function main() {
  console.log(`# state store CPU: ${BUILDS} builds of ${NODES} nodes, ${IN_FLIGHT} in flight; ${machineLine()}`);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-state-cpu-'));
  try {
    const perNode = (x: number) => fmt((x * 1000) / (NODES * BUILDS), 2);
    for (const persist of [true, false, true, false]) {
      const sub = join(dir, `run-${Math.random().toString(36).slice(2)}`);
      await mkdir(sub);
      const ms = await storePhases(sub, persist);
      console.log(`persistence ${persist ? 'on ' : 'off'}: main thread µs per node: submit ${perNode(ms.submit)}, dispatch + result ${perNode(ms.dispatch)}, archive ${perNode(ms.archive)}; whole process ${perNode(ms.process)}; ${fmt(ms.writes / BUILDS, 0)} durable writes per build`);
    }
    const a1 = await writeCost(dir, false);
    const z1 = await writeCost(dir, true);
    const a2 = await writeCost(dir, false);
    const z2 = await writeCost(dir, true);
    console.log(`process CPU per 3,000-byte O_DSYNC write: append ${fmt(a1, 0)} / ${fmt(a2, 0)} µs, over a pre-zeroed file ${fmt(z1, 0)} / ${fmt(z2, 0)} µs`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
