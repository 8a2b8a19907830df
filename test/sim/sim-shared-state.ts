/**
 * The shared state of the simulation's leader-failover fault (issue 14): an in-memory
 * stand-in for the PostgreSQL state of several coordinators (a fake beside the real tests in
 * state-pg.test.ts and cluster.failover.test.ts). It keeps what the PostgreSQL backend
 * keeps, in the same form: the journal text of every commit as a row tagged with the writer's
 * epoch, and archived builds; a new leader reads the state back by replaying those rows with
 * the real replay code (`applyJournalLines`), so the journal lines the engine's changes make
 * are exercised too. The lease is an epoch: a takeover bumps it, and a commit from a backend
 * of an older epoch is refused (E_NOT_LEADER), nothing appended, and that backend refuses
 * every later commit, as the PostgreSQL backend does under its fencing check.
 *
 * Commits are immediate (the text is taken and the row appended before `commit()` returns a
 * resolved promise), so the simulation's schedule is as with an unpersisted store.
 */
import { NotLeaderError } from '../../shared/index.js';
import { applyJournalLines } from '../../coordinator/state/journal-replay.js';
import { emptyState, type StateData } from '../../coordinator/state/records.js';
import type { StateBackend, StateBackendContext } from '../../coordinator/state/state-backend.js';

export interface SharedRow {
  epoch: number;
  text: string;
}

export class SimSharedState {
  /** The lease's epoch: the leader's backends write under it. */
  epoch = 1;
  readonly rows: SharedRow[] = [];
  readonly archives = new Map<string, string>();
  /** Commits refused because their backend's epoch was over (writes a deposed leader tried). */
  refused = 0;

  /** A backend writing under the current epoch. */
  backend(): SimStateBackend {
    return new SimStateBackend(this, this.epoch);
  }

  /** A standby takes the lease over: every backend of an earlier epoch is fenced off. */
  takeOver(): number {
    return ++this.epoch;
  }
}

export class SimStateBackend implements StateBackend {
  readonly kind = 'postgres';
  readonly location = 'simulated shared state';
  readonly preallocations = 0;
  readonly snapshots = 0;
  writes = 0;
  private ctx: StateBackendContext | null = null;
  private failed: Error | null = null;

  constructor(
    private readonly db: SimSharedState,
    readonly epoch: number,
  ) {}

  open(ctx: StateBackendContext): Promise<{ data: StateData; created: boolean }> {
    this.ctx = ctx;
    const data = emptyState();
    this.db.rows.forEach((row, i) => {
      const lines = row.text.split('\n');
      lines.pop();
      applyJournalLines(lines, `simulated journal row ${i + 1}`, data, ctx.nodesByName);
    });
    return Promise.resolve({ data, created: this.db.rows.length === 0 });
  }

  commit(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const text = this.ctx?.takeText() ?? '';
    if (!text) return Promise.resolve();
    if (this.epoch !== this.db.epoch) {
      this.db.refused++;
      this.failed = new NotLeaderError(null, `epoch ${this.epoch} is over (the lease is at ${this.db.epoch}): nothing written`);
      return Promise.reject(this.failed);
    }
    this.db.rows.push({ epoch: this.epoch, text });
    this.writes++;
    return Promise.resolve();
  }

  writeArchive(id: string, json: string): Promise<void> {
    if (this.epoch !== this.db.epoch) return Promise.reject(new NotLeaderError(null, `epoch ${this.epoch} is over: archive of ${id} not written`));
    this.db.archives.set(id, json);
    return Promise.resolve();
  }

  readArchive(id: string): Promise<string> {
    const json = this.db.archives.get(id);
    return json === undefined ? Promise.reject(new Error(`simulated archive of ${id} is missing`)) : Promise.resolve(json);
  }

  drain(): Promise<void> {
    return Promise.resolve();
  }
}
