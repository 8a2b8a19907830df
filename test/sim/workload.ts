/**
 * What one seed simulates: the fleet (3-6 agents with 1-3 slots, some emulating arm64,
 * a few with the noop executor), the builds (small DAGs — chains, diamonds, fans,
 * artifact hand-offs — some nodes identical across builds so reuse and shared execution
 * happen, some `retry: false`, some builds cancelled), the network tuning per agent and
 * the fault schedule of the fault window (kills, graceful stops, connection breaks,
 * partitions, stalls, dropped connections, disk-full spells, a coordinator restart or a leader
 * failover to a standby on a shared state; operator pauses/drains
 * and retries of failed nodes). All drawn from the seed; times are ms after the start.
 */
import type { Dir, PathTuning } from './sim-net.js';
import type { JobOdds, SimAgentConfig } from './sim-agent.js';
import type { Rng } from './rng.js';

export type Fault =
  | { at: number; kind: 'kill'; agent: string; mode: 'crash' | 'host-down'; restartAfter: number }
  | { at: number; kind: 'break'; agent: string; silent: boolean }
  | { at: number; kind: 'partition'; agent: string; ms: number }
  | { at: number; kind: 'stall'; agent: string; dir: Dir; ms: number }
  | { at: number; kind: 'drop'; agent: string }
  | { at: number; kind: 'unhealthy'; agent: string; ms: number }
  | { at: number; kind: 'stop'; agent: string; how: 'drain' | 'cancel'; restartAfter: number }
  // operator actions through the engine's API, also only in the fault window
  | { at: number; kind: 'control'; agent: string; control: 'paused' | 'draining'; resumeAfter: number }
  | { at: number; kind: 'retry' }
  // the coordinator process dies and starts again after `downMs`
  | { at: number; kind: 'restart'; downMs: number }
  // the leader pauses (its connections die, its engine lives on and wakes up within `zombieMs`),
  // a standby takes the lease over after `downMs` and reads the shared state back (issue 14)
  | { at: number; kind: 'failover'; downMs: number; zombieMs: number };

export interface PlannedBuild {
  at: number;
  name: string;
  nodes: Record<string, Record<string, unknown>>;
  reuse: boolean;
  cancelAt: number | null;
  /** Budget fields of the spec (issue 11: `concurrency`, `concurrency_group`, ...); none when empty. */
  budget: Record<string, unknown>;
}

export interface Scenario {
  profile: 'calm' | 'moderate' | 'heavy';
  agents: Array<{ cfg: SimAgentConfig; path: PathTuning; startAt: number }>;
  builds: PlannedBuild[];
  faults: Fault[];
  /** Faults (and infra failures, hangs, latency spikes) stop at this time. */
  faultEnd: number;
  /** Job outcome odds while faults are on; afterwards only `fail` stays. */
  odds: JobOdds;
  nodeTimeoutMs: number;
}

export interface ScenarioOptions {
  /** Give some agents a wrong clock (the timestamps they report are off). Default false. */
  clockSkew?: boolean;
}

const FAULT_WINDOW_MS = 30_000;
const NODE_TIMEOUT_S = 30;

export function makeScenario(rng: Rng, opts: ScenarioOptions = {}): Scenario {
  const profile = rng.pick(['calm', 'moderate', 'moderate', 'heavy', 'heavy'] as const);
  const spikeChance = profile === 'calm' ? 0 : profile === 'moderate' ? 0.01 : 0.03;

  const agents: Scenario['agents'] = [];
  const nAgents = rng.int(3, 6);
  for (let i = 1; i <= nAgents; i++) {
    const platforms = [{ platform: 'linux/amd64', emulated: false }];
    if (rng.chance(0.3)) platforms.push({ platform: 'linux/arm64', emulated: true });
    const skew = opts.clockSkew && rng.chance(0.3) ? rng.pick([-1, 1]) * rng.int(1000, 120_000) : 0;
    agents.push({
      cfg: { name: `sim-a${i}`, maxJobs: rng.int(1, 3), platforms, executor: rng.chance(0.15) ? 'noop' : 'docker', clockSkewMs: skew },
      path: { baseLatencyMs: rng.int(1, 10), jitterMs: rng.int(0, 20), spikeChance, spikeMaxMs: 2500 },
      startAt: rng.int(0, 500),
    });
  }
  const arm = agents.some((a) => a.cfg.platforms.some((p) => p.platform === 'linux/arm64'));

  const builds: PlannedBuild[] = [];
  const nBuilds = rng.int(2, 4);
  for (let b = 1; b <= nBuilds; b++) {
    const at = rng.int(200, 20_000);
    builds.push({
      at,
      name: `sim-${b}`,
      nodes: dag(rng, b, arm),
      reuse: !rng.chance(0.2),
      cancelAt: rng.chance(0.1) ? at + rng.int(300, 8000) : null,
      // Budgets, drawn from nothing (the seeds' streams stay as they were): build 2 runs at
      // most 2 nodes at once, builds 1 and 3 share a group of 2.
      budget: b === 2 ? { concurrency: 2 } : b === 1 || b === 3 ? { concurrency_group: 'sim-shared', concurrency_groups: { 'sim-shared': 2 } } : {},
    });
  }

  const faults: Fault[] = [];
  if (profile !== 'calm') {
    const meanGap = profile === 'moderate' ? 3000 : 1000;
    let t = rng.int(0, meanGap);
    while (t < FAULT_WINDOW_MS) {
      const agent = rng.pick(agents).cfg.name;
      const room = FAULT_WINDOW_MS - t;
      const k = rng.next();
      if (k < 0.08) faults.push({ at: t, kind: 'stop', agent, how: rng.chance(0.5) ? 'drain' : 'cancel', restartAfter: rng.int(100, 3000) });
      else if (k < 0.2) faults.push({ at: t, kind: 'kill', agent, mode: rng.chance(0.5) ? 'crash' : 'host-down', restartAfter: rng.int(100, 8000) });
      else if (k < 0.45) faults.push({ at: t, kind: 'break', agent, silent: rng.chance(0.4) });
      else if (k < 0.65) faults.push({ at: t, kind: 'partition', agent, ms: Math.min(room, rng.int(200, 8000)) });
      else if (k < 0.85) faults.push({ at: t, kind: 'stall', agent, dir: rng.chance(0.5) ? 'toCoord' : 'toAgent', ms: Math.min(room, rng.int(200, 6000)) });
      else if (k < 0.92) faults.push({ at: t, kind: 'unhealthy', agent, ms: Math.min(room, rng.int(300, 6000)) });
      else faults.push({ at: t, kind: 'drop', agent });
      t += rng.int(1, 2 * meanGap);
    }
  }

  for (let i = rng.int(0, 2); i > 0; i--) {
    const at = rng.int(1000, FAULT_WINDOW_MS - 2000);
    faults.push({ at, kind: 'control', agent: rng.pick(agents).cfg.name, control: rng.chance(0.5) ? 'paused' : 'draining', resumeAfter: rng.int(500, FAULT_WINDOW_MS - at) });
  }
  for (let i = rng.int(0, 3); i > 0; i--) faults.push({ at: rng.int(5000, FAULT_WINDOW_MS), kind: 'retry' });
  if (profile !== 'calm' && rng.chance(0.3)) {
    const at = rng.int(2000, FAULT_WINDOW_MS - 1000);
    faults.push({ at, kind: 'restart', downMs: rng.int(200, Math.min(8000, FAULT_WINDOW_MS - at)) });
  }
  // Drawn last, so a seed without it has the scenario it had before the fault existed.
  if (profile !== 'calm' && !faults.some((f) => f.kind === 'restart') && rng.chance(0.3)) {
    const at = rng.int(2000, FAULT_WINDOW_MS - 1000);
    faults.push({ at, kind: 'failover', downMs: rng.int(300, Math.min(8000, FAULT_WINDOW_MS - at)), zombieMs: rng.int(100, 12_000) });
  }
  faults.sort((x, y) => x.at - y.at);

  return {
    profile,
    agents,
    builds,
    faults,
    faultEnd: FAULT_WINDOW_MS,
    odds: profile === 'calm' ? { fail: 0.05, infra: 0, hang: 0 } : { fail: 0.05, infra: 0.06, hang: 0.01 },
    nodeTimeoutMs: NODE_TIMEOUT_S * 1000,
  };
}

/** One build's nodes: a chain, a diamond, a fan or an artifact hand-off. */
function dag(rng: Rng, b: number, arm: boolean): Record<string, Record<string, unknown>> {
  const node = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => {
    // Some nodes are identical across builds (same Dockerfile, no inputs): reused or shared.
    const token = rng.chance(0.3) ? `shared-${rng.int(1, 3)}` : `b${b}-${name}`;
    const n: Record<string, unknown> = { dockerfile_inline: `FROM kiln/busybox:1\nRUN echo ${token}\n`, timeout: NODE_TIMEOUT_S, ...extra };
    if (rng.chance(0.15)) n.retry = false;
    if (arm && rng.chance(0.2)) {
      n.platform = 'linux/arm64';
      n.allow_emulation = true;
    }
    return n;
  };
  const shape = rng.pick(['chain', 'diamond', 'fan', 'artifact'] as const);
  if (shape === 'chain') {
    const out: Record<string, Record<string, unknown>> = {};
    const k = rng.int(2, 4);
    for (let i = 1; i <= k; i++) out[`step${i}`] = node(`step${i}`, i > 1 ? { needs: [`step${i - 1}`] } : {});
    return out;
  }
  if (shape === 'diamond') {
    return { top: node('top'), left: node('left', { needs: ['top'] }), right: node('right', { needs: ['top'] }), bottom: node('bottom', { needs: ['left', 'right'] }) };
  }
  if (shape === 'fan') {
    const out: Record<string, Record<string, unknown>> = {};
    const k = rng.int(2, 4);
    for (let i = 1; i <= k; i++) out[`leaf${i}`] = node(`leaf${i}`);
    return out;
  }
  return {
    gen: node('gen', { outputs: { bin: '/out' } }),
    use: node('use', { needs: ['gen'], inputs: { bin: { from: 'gen.bin', mount: '/in' } } }),
    also: node('also', { needs: ['gen'] }),
  };
}

export function describeScenario(s: Scenario): string {
  const agents = s.agents
    .map((a) => `${a.cfg.name}(${a.cfg.maxJobs} slots${a.cfg.platforms.length > 1 ? ', +arm64 emulated' : ''}${a.cfg.executor === 'noop' ? ', noop' : ''}${a.cfg.clockSkewMs ? `, clock ${a.cfg.clockSkewMs > 0 ? '+' : ''}${a.cfg.clockSkewMs} ms` : ''})`)
    .join(' ');
  // node marks: ^ arm64 (emulated only), ! retry: false, = identical to nodes elsewhere
  const mark = (n: Record<string, unknown>) => `${n.platform === 'linux/arm64' ? '^' : ''}${n.retry === false ? '!' : ''}${String(n.dockerfile_inline).includes('shared-') ? '=' : ''}`;
  const builds = s.builds.map((b) => `${b.name}@${b.at}[${Object.entries(b.nodes).map(([name, n]) => `${name}${mark(n)}`).join(',')}]${b.reuse ? '' : ' no-reuse'}${b.cancelAt !== null ? ` cancel@${b.cancelAt}` : ''}`).join(' ');
  const counts = new Map<string, number>();
  for (const f of s.faults) counts.set(f.kind, (counts.get(f.kind) ?? 0) + 1);
  // (faults include the operator actions: control, retry)
  const faults = [...counts].map(([k, n]) => `${k}×${n}`).join(' ') || 'none';
  return `profile ${s.profile}; agents: ${agents}; builds: ${builds}; faults until ${s.faultEnd} ms: ${faults}`;
}
