/**
 * vitest setup (every test file): with `KILN_TEST_STATE=postgres`, drops the databases the
 * engine harness made for the file once it is done. Loads nothing otherwise.
 */
import { afterAll } from 'vitest';

if (process.env.KILN_TEST_STATE === 'postgres') {
  afterAll(async () => {
    const { dropTestDatabases } = await import('./engine-harness.js');
    await dropTestDatabases();
  });
}
