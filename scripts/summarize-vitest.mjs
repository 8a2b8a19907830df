// Prints `N passed, N failed` from vitest's JSON report (scripts/test.sh's last line).
// A test file that failed to load (no tests ran in it) and a failed type-check each count as
// one failure; a missing report counts as one failure. Skipped and todo tests count as neither.
import { readFileSync } from 'node:fs';

const [file, typecheckFailed = '0'] = process.argv.slice(2);
let passed = 0;
let failed = Number(typecheckFailed) > 0 ? 1 : 0;
try {
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests ?? 0;
  failed += report.numFailedTests ?? 0;
  for (const suite of report.testResults ?? []) {
    const ran = (suite.assertionResults ?? []).length;
    if (suite.status === 'failed' && ran === 0) failed += 1;
  }
  if ((report.numTotalTests ?? 0) === 0 && (report.numFailedTestSuites ?? 0) === 0 && failed === 0) {
    // vitest ran nothing at all: that is not a pass
    failed += 1;
  }
} catch (err) {
  process.stderr.write(`summarize-vitest: no usable report at ${file}: ${err.message}\n`);
  failed += 1;
}
process.stdout.write(`${passed} passed, ${failed} failed\n`);
