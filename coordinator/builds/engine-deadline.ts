/**
 * Build deadlines (issue 11): a build with `deadline:` (a duration from submit) that has
 * not finished by `created_at + deadline` is cancelled like an API cancel, with a reason
 * that names the deadline: nodes not started are cancelled at once, running ones are told
 * to cancel on their agents. The deadline is part of the build record (`budget`), so it
 * survives a restart: `recover()` arms every active build's deadline again and applies the
 * ones that passed while the coordinator was down at once.
 *
 * One timer, for the earliest deadline (a min-heap of pending ones; entries of builds that
 * finished are dropped when they come up). Delays are capped (Node's timers take at most
 * 2^31-1 ms; the clock is checked again when the timer fires).
 */
import { formatDuration, isBuildTerminal, type Timer, type Timers } from '../../shared/index.js';
import type { BuildRecord } from '../state/records.js';
import { cancelUnfinished } from './engine-actions.js';
import { track, type EngineState } from './engine-state.js';
import { maybeArchive } from './engine-transitions.js';

/** Longest single timer delay (re-armed when it fires early). */
const MAX_TIMER_MS = 3_600_000;

/** The node reason (and build reason) of a build cancelled by its deadline. */
export function deadlineReason(build: BuildRecord): string {
  return `the build's deadline passed (${formatDuration(build.budget?.deadline_ms ?? 0)} after submit)`;
}

/** When the build's deadline passes (epoch ms), or null when it has none. */
export function deadlineAt(build: Pick<BuildRecord, 'created_at' | 'budget'>): number | null {
  const ms = build.budget?.deadline_ms;
  return ms === undefined ? null : build.created_at + ms;
}

/** true when the build was cancelled by its deadline (derived from its nodes' reasons, which are journaled). */
export function deadlineExceeded(build: BuildRecord): boolean {
  if (!build.cancel_requested || build.budget?.deadline_ms === undefined) return false;
  const reason = deadlineReason(build);
  return build.nodes.some((n) => n.state === 'cancelled' && n.reason === reason);
}

interface Pending {
  at: number;
  id: string;
}

export class Deadlines {
  private readonly heap: Pending[] = [];
  private timer: Timer | null = null;
  private timerAt = Infinity;
  private stopped = false;
  /** The latest expiry's commit (tests). */
  last: Promise<void> = Promise.resolve();

  constructor(
    private readonly s: EngineState,
    private readonly timers: Timers,
  ) {}

  /** Arms the deadline of a (new or recovered) build; one already passed is applied now. */
  add(build: BuildRecord): void {
    const at = deadlineAt(build);
    if (at === null || isBuildTerminal(build.state)) return;
    push(this.heap, { at, id: build.id });
    this.arm();
  }

  /** After recovery: every active build's deadline, those already passed applied at once. */
  recover(): Promise<void> {
    for (const b of this.s.records.activeBuilds()) {
      const at = deadlineAt(b);
      if (at !== null && !isBuildTerminal(b.state)) push(this.heap, { at, id: b.id });
    }
    this.fire();
    return this.last;
  }

  stop(): void {
    this.stopped = true;
    this.timer?.clear();
    this.timer = null;
  }

  private arm(): void {
    if (this.stopped) return;
    const next = this.heap[0];
    if (!next) return;
    if (this.timer !== null && this.timerAt <= next.at) return;
    this.timer?.clear();
    this.timerAt = next.at;
    const delay = Math.max(0, Math.min(MAX_TIMER_MS, next.at - this.s.now()));
    this.timer = this.timers.after(delay, () => {
      this.timer = null;
      this.timerAt = Infinity;
      this.fire();
    }, { unref: true });
  }

  /** Cancels every build whose deadline has passed, then arms the timer for the next one. */
  private fire(): void {
    if (this.stopped) return;
    const now = this.s.now();
    const expired: BuildRecord[] = [];
    while (this.heap.length > 0 && this.heap[0]!.at <= now) {
      const { id } = pop(this.heap)!;
      const build = this.s.records.activeBuild(id);
      if (!build || isBuildTerminal(build.state)) continue;
      const reason = deadlineReason(build);
      this.s.log.info({ build: id, deadline_ms: build.budget?.deadline_ms }, 'build deadline passed; cancelling what has not finished');
      cancelUnfinished(this.s, build, reason);
      expired.push(build);
    }
    if (expired.length > 0) {
      this.last = this.s.store.commit().then(
        () => {
          for (const b of expired) maybeArchive(this.s, b);
        },
        (err: unknown) => this.s.log.error({ err }, 'state commit failed after a build deadline'),
      );
      track(this.s, this.last); // shutdown waits for it
    }
    this.arm();
  }
}

// A binary min-heap by `at`.
function push(h: Pending[], p: Pending): void {
  h.push(p);
  let i = h.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (h[parent]!.at <= p.at) break;
    h[i] = h[parent]!;
    i = parent;
  }
  h[i] = p;
}

function pop(h: Pending[]): Pending | undefined {
  const top = h[0];
  const last = h.pop();
  if (h.length > 0 && last !== undefined) {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && h[r]!.at < h[l]!.at ? r : l;
      if (h[c]!.at >= last.at) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
  }
  return top;
}
