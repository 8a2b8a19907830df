/**
 * An opt-in trace of build log text through kiln's hops, for the live-logs benchmark
 * (scripts/bench/live-logs.ts --trace): with `KILN_LOG_TRACE=<dir>` in a process's
 * environment (cli/main.ts calls startLogTrace), every batch of log text that passes a hop (the agent taking it from the
 * build and sending its frame, the coordinator receiving and writing it, the SSE route
 * writing it) is recorded with the wall-clock time, as JSON lines
 * `{"hop","t":ms,"text"}` appended to `<dir>/trace-<random>.jsonl` twice a second. The
 * benchmark matches the lines of its generators to find when each line passed
 * each hop. Until startLogTrace, `traceLog` does nothing (one boolean test); it is never
 * on by default and is not a setting.
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';

let file = '';
/** Whether this process traces log text (startLogTrace was called). */
export let LOG_TRACE_ON = false;

/** Starts tracing into `dir` (an existing directory). */
export function startLogTrace(dir: string): void {
  file = join(dir, `trace-${randomBytes(6).toString('hex')}.jsonl`);
  LOG_TRACE_ON = true;
}
/** Records kept between writes at most (a trace that cannot keep up drops records, not memory). */
const MAX_PENDING = 200_000;

let pending: string[] = [];
let flushTimer: NodeJS.Timeout | null = null;

function flushTrace(): void {
  if (flushTimer) clearTimeout(flushTimer);
  flushTimer = null;
  if (pending.length === 0) return;
  const text = `${pending.join('\n')}\n`;
  pending = [];
  try {
    appendFileSync(file, text);
  } catch {
    // a trace that cannot be written is lost, the process goes on
  }
}

/** Records that `text` (log bytes or text) passed `hop` now; a no-op unless tracing. */
export function traceLog(hop: string, text: Uint8Array | string): void {
  if (!LOG_TRACE_ON || pending.length >= MAX_PENDING) return;
  const t = performance.timeOrigin + performance.now();
  const s = typeof text === 'string' ? text : Buffer.from(text.buffer, text.byteOffset, text.byteLength).toString('utf8');
  pending.push(JSON.stringify({ hop, t, text: s }));
  flushTimer ??= setTimeout(flushTrace, 500).unref();
}
