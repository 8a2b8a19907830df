/**
 * Timing marks of the log pane, for the browser tests and the benchmark ("line written by
 * the build → visible in the page"). Uses the User Timing API (`performance.mark`), so a
 * test reads them with `performance.getEntriesByName(LOG_MARK_APPEND)` in the page, or
 * with readLogTimings() below.
 *
 *   kiln-log:append   text reached the model: detail {node, firstLine, lastLine, epochMs}
 *   kiln-log:visible  the pane rendered with lines up to lastLine on screen (after the
 *                     commit that shows them): detail {node, lastLine, epochMs}
 *
 * Line numbers are 1-based, as shown (and as the rows' `data-line` attributes say).
 * `epochMs` is Date.now() at the mark, comparable with a timestamp the build printed.
 * Marks are capped (the oldest are cleared) so a long log does not grow the timeline.
 */

export const LOG_MARK_APPEND = 'kiln-log:append';
export const LOG_MARK_VISIBLE = 'kiln-log:visible';
const MAX_MARKS = 2000;

export interface LogMarkDetail {
  readonly node: string;
  readonly firstLine?: number;
  readonly lastLine: number;
  readonly epochMs: number;
}

let marks = 0;

function mark(name: string, detail: LogMarkDetail): void {
  if (typeof performance === 'undefined' || typeof performance.mark !== 'function') return;
  if (++marks > MAX_MARKS) {
    performance.clearMarks(LOG_MARK_APPEND);
    performance.clearMarks(LOG_MARK_VISIBLE);
    marks = 1;
  }
  performance.mark(name, { detail });
}

export function markAppend(node: string, firstLine: number, lastLine: number): void {
  mark(LOG_MARK_APPEND, { node, firstLine, lastLine, epochMs: Date.now() });
}

export function markVisible(node: string, lastLine: number): void {
  mark(LOG_MARK_VISIBLE, { node, lastLine, epochMs: Date.now() });
}

/** The marks so far, oldest first: what the browser tests read. */
export function readLogTimings(): Array<{ name: string; startTime: number; detail: LogMarkDetail }> {
  if (typeof performance === 'undefined') return [];
  return [...performance.getEntriesByName(LOG_MARK_APPEND), ...performance.getEntriesByName(LOG_MARK_VISIBLE)]
    .map((e) => ({ name: e.name, startTime: e.startTime, detail: (e as { detail?: unknown }).detail as LogMarkDetail }))
    .sort((a, b) => a.startTime - b.startTime);
}
