/**
 * `--json` output of the CLI: JSON Lines, always. A list prints one compact JSON object
 * per item and line; a single object prints exactly one line. Nothing else goes to
 * stdout with `--json` (hints and progress go to stderr).
 */
import type { Output } from './render.js';

/** One compact JSON value on one line. */
export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

export function writeJsonLine(out: Output, value: unknown): void {
  out.write(jsonLine(value));
}

/** One line per item (nothing for an empty list). */
export function writeJsonLines(out: Output, items: readonly unknown[]): void {
  if (items.length > 0) out.write(items.map(jsonLine).join(''));
}
