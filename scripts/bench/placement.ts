/**
 * Placement benchmark (benchmarks.md C1, issue 5): the scheduler core in process, no
 * network. 10,000 ready nodes against 10, 100 and 1,000 agents (slots so every node can be
 * placed), agents with a mix of platforms (amd64, arm64, s390x; some amd64 agents also
 * emulate arm64/s390x) and 3 exact labels (os, arch, docker), nodes with a mix of
 * requirements (platform, 0-3 of those labels, some `!=` rules, some allowing emulation)
 * and priorities.
 *
 * Measured per placement: ready-queue pop, capability match, agent pick, the slot hold in
 * the registry, and a no-op assign that builds the dispatch (`assign`) message object.
 * Comparator, in the same run, on the very messages the placements produced:
 * `encodeFrame('assign', ...)` (what the coordinator does to send one: zod validation +
 * msgpackr pack); also shown, bare msgpackr `pack()` of the same envelope.
 * Targets: placement <= 1.0x the comparator; growth from 10 to 1,000 agents <= 3x.
 * Medians of --runs runs after a warm-up; a full GC before each run and before each
 * comparator phase (the script re-runs itself with --expose-gc), so no phase pays for
 * another one's garbage. Enqueue (timed separately) and placement follow each other
 * directly, as when all nodes of a wide build become ready at once.
 *
 *   node dist/scripts/bench/placement.js [--nodes 10000] [--runs 5]
 */
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import { AgentRegistry, type AgentChannel, type AgentEntry } from '../../coordinator/placement/agent-registry.js';
import { Scheduler, type ReadyRef } from '../../coordinator/placement/scheduler.js';
import { encodeFrame, PROTOCOL_VERSION, type AssignPayload, type HelloPayload } from '../../shared/index.js';
import { fmt, machineLine, median, now } from './bench-util.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const NODES = arg('nodes', 10_000);
const RUNS = arg('runs', 5);
const AGENT_COUNTS = [10, 100, 1000];
const BUILD = 'b-01m87q8730000-mtkcs13q';

/** Deterministic PRNG (mulberry32), so every run sees the same fleet and nodes. */
function rng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const noChannel: AgentChannel = { send: () => {}, close: () => {} };
const ARCH: Record<string, string> = { 'linux/amd64': 'x86_64', 'linux/arm64': 'aarch64', 'linux/s390x': 's390x' };

interface Fleet {
  hellos: HelloPayload[];
  refs: Array<Omit<ReadyRef, 'seq'>>;
}

/** Agents (60% amd64, 25% arm64, 15% s390x) and nodes whose requirements the fleet can hold all at once. */
function fleet(agents: number, nodes: number): Fleet {
  const rand = rng(agents * 7919 + nodes);
  const slots = Math.ceil((nodes * 1.3) / agents);
  const hellos: HelloPayload[] = [];
  for (let i = 0; i < agents; i++) {
    const r = i / agents;
    const native = r < 0.6 ? 'linux/amd64' : r < 0.85 ? 'linux/arm64' : 'linux/s390x';
    const platforms = [{ platform: native, emulated: false }];
    if (native === 'linux/amd64' && i % 3 === 0) platforms.push({ platform: 'linux/arm64', emulated: true }, { platform: 'linux/s390x', emulated: true });
    hellos.push({
      protocol_versions: [PROTOCOL_VERSION],
      agent_version: 'bench',
      name: `agent-${String(i).padStart(4, '0')}`,
      session: `s-${i}`,
      platforms,
      labels: { os: 'linux', arch: ARCH[native]!, docker: i % 2 === 0 ? '27' : '28' },
      max_jobs: slots,
      executor: 'noop',
      docker: null,
      gpus: [],
      running: [],
    });
  }
  // Each node copies (part of) the requirement of an agent chosen by slot, so capacity per requirement suffices.
  const refs: Array<Omit<ReadyRef, 'seq'>> = [];
  for (let n = 0; n < nodes; n++) {
    const h = hellos[Math.floor(rand() * agents)]!;
    const native = h.platforms[0]!.platform;
    const labels: Record<string, string> = {};
    const k = Math.floor(rand() * 4);
    if (k >= 1) labels.os = 'linux';
    if (k >= 2) labels.arch = h.labels.arch!;
    if (k >= 3) labels.docker = h.labels.docker!;
    const labelsNot: Record<string, string[]> = rand() < 0.1 ? { docker: [h.labels.docker === '27' ? '28' : '27'] } : {};
    refs.push({
      buildId: BUILD,
      node: `n${n}`,
      platform: native,
      labels,
      labelsNot,
      allowEmulation: native !== 'linux/amd64' && rand() < 0.3,
      gpus: null,
      priority: rand() < 0.2 ? Math.floor(rand() * 10) : 0,
    });
  }
  return { hellos, refs };
}

interface RunResult {
  placeUs: number;
  enqueueUs: number;
  encodeUs: number;
  packUs: number;
  bytes: number;
}

const gc = (globalThis as { gc?: () => void }).gc;
const collect = () => gc?.();

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
let sink = 0;

function runOnce(f: Fleet): RunResult {
  const clock = 1_700_000_000_000;
  const reg = new AgentRegistry();
  for (const h of f.hellos) reg.markWelcomed(reg.connect(h, noChannel, clock).entry);
  const sched = new Scheduler(reg, () => clock);
  const dead = new Set<string>();
  const msgs: AssignPayload[] = new Array(f.refs.length);
  let count = 0;

  collect();
  const t0 = now();
  for (const r of f.refs) sched.enqueue(r);
  // placement follows right away, as when a wide build's nodes all become ready at once
  const t1 = now();
  const placed = sched.placeAll(
    (ref) => !dead.has(ref.node),
    (ref: ReadyRef, agent: AgentEntry, gpus: number[]) => {
      const attemptId = `a-01m87q8730000-${count.toString(36).padStart(8, '0')}`;
      reg.hold(agent, attemptId, gpus, clock);
      msgs[count++] = {
        attempt_id: attemptId,
        build_id: ref.buildId,
        node: ref.node,
        attempt: 1,
        platform: ref.platform,
        context: null,
        dockerfile: null,
        dockerfile_inline: 'FROM scratch',
        build_args: {},
        target: null,
        timeout_ms: 3_600_000,
        image_tag: `kiln-build/${ref.buildId}:${ref.node}`,
        no_cache: false,
        inputs: [],
        outputs: [],
        resolve: false,
        gpus,
        test: null,
      };
    },
  );
  const t2 = now();
  if (placed !== f.refs.length) throw new Error(`placed ${placed} of ${f.refs.length} nodes (the fleet should hold them all)`);

  let bytes = 0;
  collect();
  const t3 = now();
  for (let i = 0; i < count; i++) bytes += encodeFrame('assign', i + 1, msgs[i]!, 1).length;
  const t4 = now();
  collect();
  const t4b = now();
  for (let i = 0; i < count; i++) sink += packr.pack({ v: 1, type: 'assign', id: i + 1, payload: msgs[i]! }).length;
  const t5 = now();
  return {
    enqueueUs: ((t1 - t0) * 1000) / count,
    placeUs: ((t2 - t1) * 1000) / count,
    encodeUs: ((t4 - t3) * 1000) / count,
    packUs: ((t5 - t4b) * 1000) / count,
    bytes: bytes / count,
  };
}

function main(): void {
  console.log(`# placement benchmark (C1): ${NODES} ready nodes, agents ${AGENT_COUNTS.join(' / ')}, in process, median of ${RUNS} runs after warm-up`);
  console.log(`# ${machineLine()}; load average ${loadavg().map((x) => fmt(x, 2)).join(' ')} (others running make every figure noisier)`);
  const fleets = AGENT_COUNTS.map((a) => fleet(a, NODES));
  for (const f of fleets) for (let i = 0; i < 2; i++) runOnce(f); // warm-up
  const results = new Map<number, RunResult[]>();
  for (let r = 0; r < RUNS; r++) {
    AGENT_COUNTS.forEach((a, i) => {
      const list = results.get(a) ?? [];
      list.push(runOnce(fleets[i]!));
      results.set(a, list);
    });
  }
  const med = new Map<number, { place: number; enqueue: number; encode: number; pack: number; bytes: number }>();
  for (const a of AGENT_COUNTS) {
    const list = results.get(a)!;
    const m = {
      place: median(list.map((x) => x.placeUs)),
      enqueue: median(list.map((x) => x.enqueueUs)),
      encode: median(list.map((x) => x.encodeUs)),
      pack: median(list.map((x) => x.packUs)),
      bytes: list[0]!.bytes,
    };
    med.set(a, m);
    console.log(
      `agents ${String(a).padStart(4)}: ours ${fmt(m.place, 3)} µs/placement (runs ${list.map((x) => fmt(x.placeUs, 3)).join(', ')}; enqueue ${fmt(m.enqueue, 3)} µs/node)` +
        ` | comparator encodeFrame ${fmt(m.encode, 3)} µs (${fmt(m.bytes, 0)} B) -> ratio ${fmt(m.place / m.encode, 3)}` +
        ` | bare msgpackr pack ${fmt(m.pack, 3)} µs -> ratio ${fmt(m.place / m.pack, 3)}` +
        ` | per-run ratios vs encodeFrame, median ${fmt(median(list.map((x) => x.placeUs / x.encodeUs)), 3)}`,
    );
  }
  const lo = med.get(AGENT_COUNTS[0]!)!;
  const hi = med.get(AGENT_COUNTS[AGENT_COUNTS.length - 1]!)!;
  const growth = hi.place / lo.place;
  const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
  const worstEncode = Math.max(...AGENT_COUNTS.map((a) => med.get(a)!.place / med.get(a)!.encode));
  const worstPack = Math.max(...AGENT_COUNTS.map((a) => med.get(a)!.place / med.get(a)!.pack));
  console.log(`growth ${AGENT_COUNTS[0]} -> ${AGENT_COUNTS[AGENT_COUNTS.length - 1]} agents: ${fmt(lo.place, 3)} -> ${fmt(hi.place, 3)} µs = ${fmt(growth, 2)}x`);
  console.log(`target (issue 5) placement <= 1.0x encodeFrame at every agent count: worst ratio ${fmt(worstEncode, 3)} -> ${verdict(worstEncode <= 1)}`);
  console.log(`target (C1) placement <= 1.0x bare pack() at every agent count: worst ratio ${fmt(worstPack, 3)} -> ${verdict(worstPack <= 1)}`);
  console.log(`target (issue 5) growth ${AGENT_COUNTS[0]} -> ${AGENT_COUNTS[AGENT_COUNTS.length - 1]} agents <= 3x: ${fmt(growth, 2)}x -> ${verdict(growth <= 3)}`);
  if (sink < 0) console.log(sink);
}

if (gc) main();
else {
  // re-run with a collectable heap (see the header)
  const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...args], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
