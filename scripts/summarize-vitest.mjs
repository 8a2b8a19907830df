#!/usr/bin/env node
// summarize-vitest.mjs REPORT.json [--vitest-exit N] [--failed-step NAME]...
// Prints `N passed, N failed` (the last line of scripts/test.sh) from vitest's JSON report
// (--reporter=json --outputFile=REPORT.json), and why on stderr when it is not plain counting.
//   passed = numPassedTests
//   failed = numFailedTests
//          + 1 per test file that failed without a failed test in it (it did not load, a
//            beforeAll/afterAll hook threw, ...)
//          + 1 per --failed-step (e.g. the type-check of the tests)
//          + 1 if the report is missing or unreadable (vitest crashed or never ran)
//          and at least 1 if vitest exited non-zero (--vitest-exit), e.g. for unhandled errors
//            or "no test files found", which the report does not count.
// Skipped and todo tests count as neither.
import { readFileSync } from 'node:fs';

const usage = 'usage: summarize-vitest.mjs REPORT.json [--vitest-exit N] [--failed-step NAME]...';
const args = process.argv.slice(2);
let file;
let vitestExit = 0;
const failedSteps = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--vitest-exit') vitestExit = Number(args[++i]);
  else if (a === '--failed-step') failedSteps.push(args[++i] ?? 'unnamed step');
  else if (file === undefined && !a.startsWith('--')) file = a;
  else {
    process.stderr.write(`${usage}\n`);
    process.exit(2);
  }
}
if (file === undefined || !Number.isInteger(vitestExit)) {
  process.stderr.write(`${usage}\n`);
  process.exit(2);
}

const why = (msg) => process.stderr.write(`[summarize-vitest] ${msg}\n`);
let passed = 0;
let failed = 0;

let report;
try {
  report = JSON.parse(readFileSync(file, 'utf8'));
} catch (err) {
  why(`no usable vitest report at ${file} (${err.code ?? err.message}): counted as 1 failed`);
  failed += 1;
}
if (report) {
  passed += Number(report.numPassedTests) || 0;
  failed += Number(report.numFailedTests) || 0;
  for (const suite of report.testResults ?? []) {
    const tests = suite.assertionResults ?? [];
    if (suite.status === 'failed' && !tests.some((t) => t.status === 'failed')) {
      const first = String(suite.message ?? '').split('\n')[0].slice(0, 200);
      why(`${suite.name}: file failed with no failed test (${tests.length} ran)${first ? `: ${first}` : ''}; counted as 1 failed`);
      failed += 1;
    }
  }
}
for (const step of failedSteps) {
  why(`${step} failed: counted as 1 failed`);
  failed += 1;
}
if (vitestExit !== 0 && failed === 0) {
  why(`vitest exited with ${vitestExit} but no test failed (unhandled error? no test files?): counted as 1 failed`);
  failed = 1;
}
process.stdout.write(`${passed} passed, ${failed} failed\n`);
