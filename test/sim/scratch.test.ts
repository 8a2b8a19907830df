import { it } from 'vitest';
import { runSimulation } from './harness.js';
it('scan', async () => {
  let restarts = 0, adopted = 0, lostAfter = 0;
  for (let s = 1; s <= 300; s++) {
    const r = await runSimulation(s, { traceLines: 100000 });
    const i = r.trace.findIndex((l) => l.includes('coordinator started'));
    if (i < 0) continue;
    restarts++;
    const after = r.trace.slice(i, i + 400);
    if (after.some((l) => /welcome resume=\[\S+:continue/.test(l))) adopted++;
    if (after.some((l) => /restarted while the coordinator was down|did not come back/.test(l))) lostAfter++;
  }
  console.log({ restarts, adopted, lostAfter });
}, 600000);
