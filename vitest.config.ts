// vitest configuration: unit tests run in parallel; integration tests (real dockerd, real
// coordinator and agent processes) run one file at a time so two suites never fight over
// the two cores or the Docker engines.
//
// Two projects (issue 14): `kiln` is every test; `state:postgres` runs the engine tests
// again with the coordinator's state in PostgreSQL (KILN_TEST_STATE=postgres, see
// test/helpers/engine-harness.ts), so a behaviour cannot differ by backend without a
// failing test. It is there when a test PostgreSQL is (scripts/infra/postgres.sh, started
// by scripts/test.sh), so `npx vitest run test/unit` still needs nothing else.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

const hasPostgres = Boolean(process.env.KILN_TEST_POSTGRES) || existsSync('/run/kiln-infra/postgres/env');
/** The test files that drive the engine through the harness (they take the backend from KILN_TEST_STATE). */
const engineFiles = readdirSync('test/unit')
  .map((f) => `test/unit/${f}`)
  .filter((f) => f.endsWith('.test.ts') && readFileSync(f, 'utf8').includes('openEngine('));

export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    reporters: ['default'],
    setupFiles: ['test/helpers/setup-state.ts'],
    projects: [
      { extends: true, test: { name: 'kiln', include: ['test/**/*.test.ts'] } },
      ...(hasPostgres ? [{ extends: true, test: { name: 'state:postgres', include: engineFiles, env: { KILN_TEST_STATE: 'postgres' } } }] : []),
    ],
  },
});
