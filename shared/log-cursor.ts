/**
 * The log cursor of a build's SSE stream, written by the coordinator (event ids) and read
 * back by clients that resume (`?cursor=` or `Last-Event-ID`): `node:offset,node:offset`,
 * each offset the byte count of that node's log already received. Node names have the
 * node-name shape, so they need no escaping.
 */

/** One `node:offset` part. */
const CURSOR_PART = '[A-Za-z0-9][A-Za-z0-9_.-]{0,62}:(?:0|[1-9][0-9]{0,15})';
/** A whole cursor, as `formatCursor` writes it (empty: from the start). */
export const CURSOR_RE = new RegExp(`^(?:${CURSOR_PART}(?:,${CURSOR_PART})*)?$`);

/**
 * Longest cursor taken: it travels in a query string or the Last-Event-ID header, and
 * Node's HTTP server refuses request heads over 16 KiB (431). Builds whose cursor would
 * be longer (hundreds of nodes with logs) are followed per node.
 */
export const MAX_CURSOR_CHARS = 8 * 1024;

/**
 * Parses a cursor; anything but what `formatCursor` writes is refused with a message
 * saying what is wrong (a malformed cursor must not silently replay a log from the start).
 */
export function parseCursor(text: string | undefined | null): Map<string, number> | string {
  const out = new Map<string, number>();
  if (!text) return out;
  if (text.length > MAX_CURSOR_CHARS) return `is longer than ${MAX_CURSOR_CHARS} characters`;
  for (const part of text.split(',')) {
    const m = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,62}):(0|[1-9][0-9]{0,15})$/.exec(part);
    if (!m) return `part '${part.slice(0, 80)}' is not <node>:<byte offset>`;
    const offset = Number(m[2]);
    if (!Number.isSafeInteger(offset)) return `part '${part.slice(0, 80)}' has an offset past 2^53`;
    if (out.has(m[1]!)) return `names node '${m[1]}' twice`;
    out.set(m[1]!, offset);
  }
  return out;
}

/** The cursor for `offsets` (nodes at 0 left out). */
export function formatCursor(offsets: ReadonlyMap<string, number>): string {
  return [...offsets].filter(([, o]) => o > 0).map(([n, o]) => `${n}:${o}`).join(',');
}
