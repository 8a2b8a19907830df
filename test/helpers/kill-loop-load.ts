/**
 * The client side of the coordinator kill loop (fault.coordinator-kill-loop.test.ts): a steady
 * stream of small DAGs of noop nodes, cancels of random running builds, and pins sent 0–20 ms
 * after a build ends (seen on its SSE log stream). Every loop outlives the coordinator's
 * deaths: a request that fails is not acknowledged and is retried or dropped. Every
 * acknowledgement (201, 202 with its answer, 200) is recorded for kill-loop-checks.ts.
 *
 * The choices (DAG shapes, gaps, which builds are cancelled or pinned, pin delays) come from
 * seeded generators; the processes' timing does not, so a seed shapes a run but does not
 * replay it exactly.
 */
import type { BuildSummaryT, BuildViewT } from '../../shared/index.js';
import { Rng } from '../sim/rng.js';
import { isTerminalBuild, type AckedCancel, type AckedPin } from './kill-loop-checks.js';
import { apiPath } from '../../shared/index.js';

export type Api = <T = unknown>(path: string, init?: RequestInit) => Promise<{ status: number; body: T; headers: Headers }>;

/** What the load needs of a coordinator (a CoordinatorHandle fits); asked anew for every request. */
export interface LoadTarget {
  url: string;
  apiToken: string;
  api: Api;
}

export interface LoadOptions {
  target: () => LoadTarget;
  seed: number;
  /** Builds the client keeps unfinished at once (submits wait below it). */
  maxActive: number;
  /** Pause after each submit, ms (uniform). */
  submitGapMs: [number, number];
  /** Pause between cancels, ms (uniform). */
  cancelGapMs: [number, number];
  /** Share of builds followed and pinned when they end. */
  pinShare: number;
  /** Delay between seeing a build end and sending its pin, ms (uniform). */
  pinDelayMs: [number, number];
  /** Nodes per build (uniform). */
  nodes: [number, number];
}

export interface TrackedBuild {
  id: string;
  /** Last state seen (list polls, SSE end); `pending` until one was seen. */
  state: string;
  cancelSent: boolean;
  /** Marked by the test when the coordinator no longer has it (so it stops counting as active). */
  lost: boolean;
  followed: boolean;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A DAG of `n` noop nodes n0..n{n-1}; each later node needs up to two earlier ones, about half the time. */
export function dagSpec(rng: Rng, n: number): { name: string; nodes: Record<string, { dockerfile_inline: string; needs?: string[] }> } {
  const nodes: Record<string, { dockerfile_inline: string; needs?: string[] }> = {};
  for (let i = 0; i < n; i++) {
    const needs = new Set<string>();
    if (i > 0 && rng.chance(0.5)) for (let k = rng.int(1, 2); k > 0; k--) needs.add(`n${rng.int(0, i - 1)}`);
    nodes[`n${i}`] = { dockerfile_inline: 'FROM scratch', ...(needs.size ? { needs: [...needs] } : {}) };
  }
  return { name: 'kill-loop', nodes };
}

type Waiter = () => void;

export class KillLoopLoad {
  /** Acknowledged builds (201), in submission order. */
  readonly builds = new Map<string, TrackedBuild>();
  /** Builds listed by the coordinator that the client never got a 201 for (answer lost in a kill). */
  readonly unacked = new Set<string>();
  readonly cancels: AckedCancel[] = [];
  readonly pins: AckedPin[] = [];
  readonly stats = { submitsSent: 0, submitsFailed: 0, cancelsSent: 0, cancelsRefused: 0, pinsSent: 0, followReconnects: 0 };
  private readonly submitRng: Rng;
  private readonly cancelRng: Rng;
  private readonly pinRng: Rng;
  private submitting = false;
  private cancelling = false;
  private polling = false;
  private readonly abort = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly followers = new Set<Promise<void>>();
  private submitWaiters: Waiter[] = [];
  private endWaiters: Waiter[] = [];

  constructor(private readonly o: LoadOptions) {
    const root = new Rng(o.seed);
    this.submitRng = root.fork();
    this.cancelRng = root.fork();
    this.pinRng = root.fork();
  }

  start(): void {
    this.submitting = this.cancelling = this.polling = true;
    this.loops.push(this.submitLoop(), this.cancelLoop(), this.pollLoop());
  }

  /** Stops submitting and cancelling (waits for requests in flight); followers and polls go on. */
  async quiesce(): Promise<void> {
    this.submitting = false;
    this.cancelling = false;
    await Promise.all(this.loops.slice(0, 2));
  }

  /** Waits for every follower to have pinned (or given up), at most `ms`; then stops everything. */
  async stop(ms: number): Promise<void> {
    this.submitting = this.cancelling = false;
    const all = Promise.all([...this.followers]);
    await Promise.race([all, sleep(ms)]);
    this.polling = false;
    this.abort.abort();
    await Promise.all([...this.loops, all]);
  }

  /** Acknowledged builds not seen finished (nor lost). */
  active(): TrackedBuild[] {
    return [...this.builds.values()].filter((b) => !b.lost && !isTerminalBuild(b.state));
  }

  /** Resolves at the next 201 (or after `guardMs`). */
  nextSubmitAck(guardMs: number): Promise<void> {
    return Promise.race([new Promise<void>((r) => this.submitWaiters.push(r)), sleep(guardMs)]);
  }

  /** Resolves when a followed build is next seen ending (or after `guardMs`). */
  nextEnd(guardMs: number): Promise<void> {
    return Promise.race([new Promise<void>((r) => this.endWaiters.push(r)), sleep(guardMs)]);
  }

  private api(): Api {
    return this.o.target().api;
  }

  private async submitLoop(): Promise<void> {
    const rng = this.submitRng;
    while (this.submitting) {
      if (this.active().length >= this.o.maxActive) {
        await sleep(5);
        continue;
      }
      const spec = dagSpec(rng, rng.int(this.o.nodes[0], this.o.nodes[1]));
      const follow = rng.chance(this.o.pinShare);
      this.stats.submitsSent++;
      try {
        const r = await this.api()<{ id: string; state: string }>(apiPath.builds(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
        if (r.status === 201) {
          const b: TrackedBuild = { id: r.body.id, state: r.body.state, cancelSent: false, lost: false, followed: follow };
          this.builds.set(b.id, b);
          this.unacked.delete(b.id);
          for (const w of this.submitWaiters.splice(0)) w();
          if (follow) {
            const p = this.followAndPin(b, this.pinRng.fork()).finally(() => this.followers.delete(p));
            this.followers.add(p);
          }
        } else {
          this.stats.submitsFailed++;
        }
      } catch {
        this.stats.submitsFailed++; // the coordinator is down: not acknowledged
      }
      await sleep(rng.int(this.o.submitGapMs[0], this.o.submitGapMs[1]));
    }
  }

  private async cancelLoop(): Promise<void> {
    const rng = this.cancelRng;
    while (this.cancelling) {
      await sleep(rng.int(this.o.cancelGapMs[0], this.o.cancelGapMs[1]));
      if (!this.cancelling) break;
      const candidates = this.active().filter((b) => !b.cancelSent);
      if (candidates.length === 0) continue;
      const b = rng.pick(candidates);
      b.cancelSent = true;
      this.stats.cancelsSent++;
      try {
        const r = await this.api()<BuildViewT>(apiPath.buildCancel(b.id), { method: 'POST' });
        if (r.status === 202) {
          this.cancels.push({ id: b.id, answer: r.body });
          b.state = r.body.state;
        } else {
          this.stats.cancelsRefused++; // 409: it finished first
        }
      } catch {
        /* the coordinator is down: not acknowledged */
      }
    }
  }

  /** Keeps build states fresh from the list (newest 500), and notes builds nobody got a 201 for. */
  private async pollLoop(): Promise<void> {
    while (this.polling) {
      try {
        const r = await this.api()<{ items: BuildSummaryT[] }>(`${apiPath.builds()}?limit=500`);
        if (r.status === 200) {
          for (const s of r.body.items) {
            const b = this.builds.get(s.id);
            if (b) b.state = s.state;
            else if (s.name === 'kill-loop') this.unacked.add(s.id);
          }
        }
      } catch {
        /* down */
      }
      await sleep(100);
    }
  }

  /** Follows the build's SSE log stream until its `end`, waits 0–20 ms, pins it (retrying until a 200). */
  private async followAndPin(b: TrackedBuild, rng: Rng): Promise<void> {
    let endAt: number | null = null;
    for (let connection = 0; endAt === null && !this.abort.signal.aborted; connection++) {
      if (connection > 0) {
        this.stats.followReconnects++;
        await sleep(rng.int(50, 150));
      }
      try {
        const t = this.o.target();
        const res = await fetch(`${t.url}${apiPath.buildLogs(b.id)}?follow=true`, { headers: { authorization: `Bearer ${t.apiToken}` }, signal: this.abort.signal });
        if (res.status !== 200 || !res.body) {
          await res.text().catch(() => {});
          if (res.status === 404) return;
          continue;
        }
        const dec = new TextDecoder();
        let buf = '';
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          buf += dec.decode(chunk, { stream: true });
          if (/(^|\n)event: end\n/.test(buf)) {
            endAt = performance.now();
            break;
          }
          if (buf.length > 8192) buf = buf.slice(-64);
        }
        if (endAt === null) continue;
        await res.body.cancel().catch(() => {});
      } catch {
        /* the stream broke (the coordinator died): follow again */
      }
    }
    if (endAt === null) return;
    for (const w of this.endWaiters.splice(0)) w();
    await sleep(rng.int(this.o.pinDelayMs[0], this.o.pinDelayMs[1]));
    for (let tries = 0; !this.abort.signal.aborted; tries++) {
      const sentAt = performance.now();
      this.stats.pinsSent++;
      try {
        const r = await this.api()<BuildViewT>(apiPath.buildPin(b.id), { method: 'POST' });
        if (r.status === 200) {
          this.pins.push({ id: b.id, afterEndMs: tries === 0 ? Math.round(sentAt - endAt) : null });
          return;
        }
        if (r.status === 404) return;
      } catch {
        /* down: try again */
      }
      await sleep(100);
    }
  }
}
