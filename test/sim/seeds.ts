/**
 * Which seeds a simulation run covers, from the environment (the one place the
 * simulation reads it):
 *   KILN_SIM_SEED=1234        only that seed (a replay)
 *   KILN_SIM_SEEDS=N          how many seeds (default 300)
 *   KILN_SIM_FIRST=S          the first seed (default 1; the nightly script walks chunks)
 *   KILN_SIM_CLOCK_SKEW=1     give some agents a wrong clock (off by default; see workload.ts)
 *   KILN_SIM_TRACE=N          print the last N trace lines of a single-seed run even when it passes
 *   KILN_SIM_REPORT=FILE      write the failing seeds as JSON there (for scripts/sim-nightly.sh)
 */
import { KilnError } from '../../shared/index.js';

export interface SeedPlan {
  seeds: number[];
  single: boolean;
  clockSkew: boolean;
  traceLines: number;
  reportFile: string | null;
}

export const DEFAULT_SEEDS = 300;

function nonNegativeInt(env: Record<string, string | undefined>, name: string, min: number): number | null {
  const raw = env[name];
  if (raw === undefined || raw === '') return null;
  if (!/^\d+$/.test(raw.trim()) || Number(raw) < min || !Number.isSafeInteger(Number(raw))) {
    throw new KilnError('E_CONFIG', `${name} must be an integer >= ${min} (got '${raw}')`);
  }
  return Number(raw);
}

export function seedPlan(env: Record<string, string | undefined>): SeedPlan {
  const one = nonNegativeInt(env, 'KILN_SIM_SEED', 0);
  const count = nonNegativeInt(env, 'KILN_SIM_SEEDS', 1) ?? DEFAULT_SEEDS;
  const first = nonNegativeInt(env, 'KILN_SIM_FIRST', 0) ?? 1;
  const skew = env.KILN_SIM_CLOCK_SKEW;
  if (skew !== undefined && skew !== '' && skew !== '0' && skew !== '1') throw new KilnError('E_CONFIG', `KILN_SIM_CLOCK_SKEW must be 0 or 1 (got '${skew}')`);
  return {
    seeds: one !== null ? [one] : Array.from({ length: count }, (_, i) => first + i),
    single: one !== null,
    clockSkew: skew === '1',
    traceLines: nonNegativeInt(env, 'KILN_SIM_TRACE', 1) ?? 200,
    reportFile: env.KILN_SIM_REPORT || null,
  };
}

/** The command that runs one seed again, exactly. */
export function replayCommand(seed: number, plan: Pick<SeedPlan, 'clockSkew'>): string {
  return `${plan.clockSkew ? 'KILN_SIM_CLOCK_SKEW=1 ' : ''}KILN_SIM_SEED=${seed} npx vitest run test/unit/simulation.test.ts`;
}
