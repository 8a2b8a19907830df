// vitest configuration: unit tests run in parallel; integration tests (real dockerd, real
// coordinator and agent processes) run one file at a time so two suites never fight over
// the two cores or the Docker engines.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    reporters: ['default'],
    setupFiles: ['test/helpers/setup-state.ts'],
  },
});
