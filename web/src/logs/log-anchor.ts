/**
 * Deep links to log lines: `#L123` (one line) and `#L10-L20` (a range), 1-based as the
 * pane numbers its lines (GitHub's form). Pure.
 */

/** A selected range of lines, 1-based, `first <= last`. */
export interface LineRange {
  readonly first: number;
  readonly last: number;
}

/** Largest line number a link may name (far above what a pane holds). */
const MAX_LINE = 100_000_000;

/** The range a location hash names, or null when it names none (or a silly one). */
export function parseLineHash(hash: string): LineRange | null {
  const m = /^#L([1-9]\d{0,8})(?:-L([1-9]\d{0,8}))?$/.exec(hash);
  if (!m) return null;
  const a = Number(m[1]);
  const b = m[2] === undefined ? a : Number(m[2]);
  if (a > MAX_LINE || b > MAX_LINE) return null;
  return { first: Math.min(a, b), last: Math.max(a, b) };
}

/** The hash for a range (`#L5`, `#L5-L9`). */
export function lineHash(r: LineRange): string {
  return r.first === r.last ? `#L${r.first}` : `#L${r.first}-L${r.last}`;
}

/** The range after a click on line `line`: that line, or (shift-click) from the current range's first line to it. */
export function extendRange(current: LineRange | null, line: number, extend: boolean): LineRange {
  if (!extend || current === null) return { first: line, last: line };
  return { first: Math.min(current.first, line), last: Math.max(current.first, line) };
}
