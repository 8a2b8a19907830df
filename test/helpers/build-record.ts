/**
 * Build records for state-store tests: `buildRecord(id, nodes)` is a pending build of
 * `nodes` inline nodes (`n0`, `n1`, ...) with every field a journal entry writes set, so
 * a replayed state compares equal to the one committed. `fill` sizes the Dockerfile text
 * (the journal's per-commit cost tests want large records).
 */
import { pendingNode, type BuildRecord } from '../../coordinator/state/records.js';

export function buildRecord(id: string, nodes: number, opts: { fill?: number; buildArgs?: Record<string, string>; labels?: Record<string, string> } = {}): BuildRecord {
  return {
    id,
    name: 'b',
    state: 'pending',
    cancel_requested: false,
    created_at: 1,
    started_at: null,
    finished_at: null,
    nodes: Array.from({ length: nodes }, (_, i) => ({
      name: `n${i}`,
      platform: 'linux/amd64',
      context: null,
      dockerfile: null,
      dockerfile_inline: `FROM scratch\n# ${'x'.repeat(opts.fill ?? 0)}`,
      build_args: { ...opts.buildArgs },
      labels: { ...opts.labels },
      labels_not: {},
      allow_emulation: false,
      gpus: null,
      priority: 0,
      retry: true,
      test: null,
      needs: [],
      timeout_ms: 1000,
      target: null,
      no_cache: false,
      inputs: [],
      outputs: [],
      reuse: true,
    })).map((n) => Object.assign(pendingNode(n), { retries: 0, budget_from: 0 })),
  };
}
