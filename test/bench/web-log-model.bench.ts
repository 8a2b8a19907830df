/**
 * Benchmark of the dashboard's log model (web/src/logs/log-model.ts) under node: appending
 * 200,000 lines of ANSI-coloured, BuildKit-like output in 64 KiB chunks (as the SSE route
 * sends them), and the heap the model keeps for them.
 *
 *   NODE_OPTIONS=--expose-gc npx vitest bench --run test/bench/web-log-model.bench.ts
 *
 * Prints the retained heap (with --expose-gc; without it the figure is not printed) next
 * to the raw text's size, then vitest's timing table. Not a test: no limit is asserted.
 */
import { bench, describe } from 'vitest';
import { LogModel } from '../../web/src/logs/log-model.js';

const ESC = '\x1b';
export const LINES = 200_000;

/** BuildKit plain-progress-like output: steps, compiler lines with colour, warnings, progress rewrites, an error block. */
export function buildkitLikeLog(lines: number): string {
  const out: string[] = [];
  let step = 1;
  for (let i = 0; out.length < lines; i++) {
    const t = (i / 100).toFixed(3);
    if (i % 500 === 0) out.push(`#${++step} [build ${step % 9}/9] RUN make -j4 target-${step}`);
    else if (i % 97 === 0) out.push(`#${step} ${t} ${ESC}[1;33mwarning:${ESC}[0m unused variable 'tmp${i}' [${ESC}[35m-Wunused-variable${ESC}[0m]`);
    else if (i % 3 === 0) out.push(`#${step} ${t} ${ESC}[32m  CC${ESC}[0m      src/module_${i % 1000}/file_${i}.o`);
    else if (i % 211 === 0) out.push(`#${step} ${t} downloading 10%\rdownloading 55%\rdownloading 100%`);
    else if (i % 10_007 === 0) out.push(`#${step} ${t} ${ESC}[31merror:${ESC}[0m expected ';' before '}' token`, '------', ` > [build 4/9] RUN make:`, '------');
    else if (i % 7 === 0) out.push(`#${step} ${t} ${ESC}[38;5;244m[${i}/${lines}]${ESC}[0m linking ${ESC}[38;2;80;160;255mlib${i % 50}.so${ESC}[0m`);
    else out.push(`#${step} ${t} make[2]: Entering directory '/src/build/module_${i % 1000}' (line ${i})`);
  }
  return `${out.slice(0, lines).join('\n')}\n`;
}

function chunks(text: string, size: number): string[] {
  const out: string[] = [];
  for (let at = 0; at < text.length; at += size) out.push(text.slice(at, at + size));
  return out;
}

const text = buildkitLikeLog(LINES);
const parts = chunks(text, 64 * 1024);

function fill(from: readonly string[] = parts): LogModel {
  const m = new LogModel();
  for (const c of from) m.append(c);
  m.finish();
  return m;
}

const gc = (globalThis as { gc?: () => void }).gc;
if (gc) {
  gc();
  const before = process.memoryUsage().heapUsed;
  // fresh chunk strings, as JSON.parse of the SSE data gives them: lines are slices of
  // them, so what the model keeps alive of them is counted too
  const kept = fill(parts.map((c) => Buffer.from(c, 'utf8').toString('utf8')));
  gc();
  const after = process.memoryUsage().heapUsed;
  const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
  console.log(
    `log model: ${kept.lineCount.toLocaleString()} lines (${mib(Buffer.byteLength(text))} MiB of raw text, ${parts.length} chunks): ` +
      `${mib(after - before)} MiB retained heap, first error at line ${kept.firstError + 1}`,
  );
}

describe('log model', () => {
  bench(`append ${LINES.toLocaleString()} ANSI BuildKit-like lines in 64 KiB chunks`, () => {
    fill(parts);
  }, { iterations: 5, warmupIterations: 1, time: 0 });

  bench(`baseline: split the same text into lines`, () => {
    let n = 0;
    for (const c of parts) n += c.split('\n').length;
    if (n === 0) throw new Error('no lines');
  }, { iterations: 5, warmupIterations: 1, time: 0 });
});
