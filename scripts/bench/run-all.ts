/**
 * `npm run bench`: every benchmark, one after the other, each printing its own ratios
 * against the comparator it measured in the same run.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const benches = [
  'placement.js',
  'dispatch.js',
  'submit.js',
  'state-store.js',
  'connections.js',
  'agent-memory.js',
  'buildkit-overhead.js',
  'cas.js',
  'live-logs.js',
  'image-push.js',
  'registry-cache.js',
  'dashboard.js',
  // these need a PostgreSQL (scripts/infra/postgres.sh start, or KILN_TEST_POSTGRES)
  'dispatch-pg.js',
  'takeover.js',
  'log-store.js',
];
let failed = 0;
for (const b of benches) {
  const r = spawnSync(process.execPath, [join(import.meta.dirname, b), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed > 0 ? 1 : 0);
