/**
 * What every part of the simulation shares: the simulated clock and agenda, the trace
 * (the last events in full, and a hash of all of them so two runs of one seed can be
 * compared), readable aliases for the engine's random ids, and the list of invariant
 * violations found so far.
 */
import { createHash, type Hash } from 'node:crypto';
import { EventQueue } from './event-queue.js';

export interface Violation {
  at: number;
  invariant: string;
  detail: string;
}

export class Trace {
  private readonly ring: string[] = [];
  private readonly hash: Hash = createHash('sha256');
  count = 0;

  constructor(private readonly keep: number) {}

  add(line: string): void {
    this.count++;
    this.hash.update(line).update('\n');
    this.ring.push(line);
    if (this.ring.length > this.keep) this.ring.shift();
  }

  last(n: number): string[] {
    return this.ring.slice(-n);
  }

  digest(): string {
    return this.hash.copy().digest('hex');
  }
}

export class World {
  now: number;
  readonly queue = new EventQueue();
  readonly trace: Trace;
  readonly violations: Violation[] = [];
  /** Faults are injected only while this is true (the fault window); afterwards the system must settle. */
  faultsActive = true;
  private readonly buildAliases = new Map<string, string>();
  private readonly attemptAliases = new Map<string, string>();

  constructor(start: number, traceKeep: number) {
    this.now = start;
    this.trace = new Trace(traceKeep);
  }

  at(t: number, label: string, run: () => void | Promise<void>): void {
    this.queue.push(Math.max(t, this.now), label, run);
  }

  after(ms: number, label: string, run: () => void | Promise<void>): void {
    this.at(this.now + Math.max(0, Math.round(ms)), label, run);
  }

  log(line: string): void {
    this.trace.add(`${(this.now / 1000).toFixed(3).padStart(8)} ${line}`);
  }

  violate(invariant: string, detail: string): void {
    this.violations.push({ at: this.now, invariant, detail });
    this.log(`!! VIOLATION ${invariant}: ${detail}`);
  }

  aliasBuild(id: string): string {
    let a = this.buildAliases.get(id);
    if (!a) {
      a = `B${this.buildAliases.size + 1}`;
      this.buildAliases.set(id, a);
    }
    return a;
  }

  /** Registered when the engine assigns the attempt (the assign frame names build, node and number). */
  nameAttempt(id: string, buildId: string, node: string, number: number): void {
    if (!this.attemptAliases.has(id)) this.attemptAliases.set(id, `${this.aliasBuild(buildId)}/${node}#${number}`);
  }

  attempt(id: string | undefined): string {
    if (id === undefined) return '-';
    return this.attemptAliases.get(id) ?? `?${id.slice(-6)}`;
  }
}

/** Replaces the engine's random build and attempt ids in free text (reasons, errors) by their aliases. */
export function scrub(world: World, text: string): string {
  return text.replace(/\b([ab])-[0-9a-z]+-[0-9a-z]+\b/g, (id, kind: string) => (kind === 'b' ? world.aliasBuild(id) : world.attempt(id)));
}
