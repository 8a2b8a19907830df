/**
 * Timers as a parameter: the agent's and the coordinator's session modules take a
 * `Timers` so the deterministic simulation (test/sim/) can drive them from its event
 * queue, while the processes use `systemTimers` (Node's setTimeout).
 */

/** A scheduled callback; `clear()` cancels it (a no-op once it ran). */
export interface Timer {
  clear(): void;
}

export interface Timers {
  /** Runs `fn` once after `ms`. `unref`: the timer alone does not keep the process alive. */
  after(ms: number, fn: () => void, opts?: { unref?: boolean }): Timer;
}

export const systemTimers: Timers = {
  after(ms, fn, opts) {
    const t = setTimeout(fn, ms);
    if (opts?.unref) t.unref();
    return { clear: () => clearTimeout(t) };
  },
};
