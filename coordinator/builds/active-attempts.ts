/**
 * The engine's attempts holding a slot (`EngineState.active`), by attempt id: a Map that
 * also keeps the budget counts (coordinator/placement/budgets.ts) in step with its
 * entries, so every attempt that is added (dispatch, recovery) or removed (the attempt
 * ended) is counted by the one place that already records it. Nothing is journaled:
 * recovery rebuilds this map from the attempt records, and the counts with it.
 *
 * When an attempt of a budgeted node ends, placement runs again (`onFreed`), so a node
 * held back by that budget goes as soon as the slot is free.
 */
import type { Budgets } from '../placement/budgets.js';
import type { BuildRecord, NodeRecord } from '../state/records.js';

export class ActiveAttempts<T extends { build: BuildRecord; node: NodeRecord }> extends Map<string, T> {
  constructor(
    private readonly budgets: Budgets,
    private readonly onFreed: () => void,
  ) {
    super();
  }

  override set(id: string, act: T): this {
    const old = super.get(id);
    if (old !== undefined) this.budgets.ended(old.build, old.node);
    super.set(id, act);
    this.budgets.started(act.build, act.node);
    return this;
  }

  override delete(id: string): boolean {
    const old = super.get(id);
    if (old === undefined) return false;
    super.delete(id);
    if (this.budgets.ended(old.build, old.node)) this.onFreed();
    return true;
  }

  override clear(): void {
    super.clear();
    this.budgets.reset();
  }
}
