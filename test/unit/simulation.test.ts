import { it } from 'vitest';
import { runSimulation, formatFailure } from '../sim/harness.js';
it('seeds', async () => {
  const from = Number(process.env.FROM ?? 1), n = Number(process.env.N ?? 100);
  const t0 = performance.now();
  const fails: number[] = [];
  const counts = new Map<string, number>();
  let shown = 0;
  const agg = new Map<string, number>();
  for (let s = from; s < from + n; s++) {
    const r = await runSimulation(s, { clockSkew: process.env.SKEW === '1', traceLines: Number(process.env.LINES ?? 200), stopAtFirst: process.env.ALL !== '1' });
    for (const [k, v] of Object.entries(r.stats.attempts)) agg.set('attempt:' + k, (agg.get('attempt:' + k) ?? 0) + v);
    for (const [k, v] of Object.entries(r.stats.builds)) agg.set('build:' + k, (agg.get('build:' + k) ?? 0) + v);
    for (const [k, v] of Object.entries(r.stats.notCurrent)) agg.set('notcur:' + k, (agg.get('notcur:' + k) ?? 0) + v);
    agg.set('stale', (agg.get('stale') ?? 0) + r.stats.staleConnection);
    agg.set('events', (agg.get('events') ?? 0) + r.stats.events);
    if (!r.ok) {
      fails.push(s);
      for (const v of r.violations) counts.set(v.invariant, (counts.get(v.invariant) ?? 0) + 1);
      if (shown++ < Number(process.env.SHOW ?? 1)) console.log(formatFailure(r, String(s)));
      else console.log(s, r.violations.map((v) => `[${v.invariant}] ${v.detail}`).join(' | ').slice(0, 400));
    }
  }
  console.log([...agg].sort().map(([k, v]) => `${k}=${v}`).join(' '));
  console.log('fails', fails, [...counts], 'ms', performance.now() - t0);
}, 600_000);
