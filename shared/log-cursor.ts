/**
 * The resume points of the log streams, written by the coordinator as each `log` event's
 * `id:` and handed back by a client that resumes; one implementation for both ends.
 *
 * A node's stream: the byte offset after the event's text (`?offset=` or `Last-Event-ID`),
 * see formatOffsetId / parseOffsetId.
 *
 * A build's stream: the cursor (`?cursor=` or `Last-Event-ID`). Clients
 * treat it as opaque. Two forms:
 *   - by name: `node:offset,node:offset` (offset = bytes of that node's log received;
 *     nodes at 0 left out). Clients may write this form themselves (to start mid-log).
 *   - compact, for builds whose name form would be long: `~<bitmap>~<i>:<o>,...`: the
 *     bitmap (base64url, bit i = the build's i-th node) marks nodes whose log was received
 *     whole (they are done), and `i:o` pairs (base 36) give the partial offsets of the
 *     others. It stays under the limit for 10,000 nodes (about 1.7 KB of bitmap) unless
 *     hundreds of nodes are mid-log at once.
 * Node names have the node-name shape, so the name form needs no escaping.
 */

import { NAME_SOURCE } from './names.js';

const NAME_PART = `${NAME_SOURCE}:(?:0|[1-9][0-9]{0,15})`;
const NAME_OFFSET_RE = new RegExp(`^(${NAME_SOURCE}):(0|[1-9][0-9]{0,15})$`);
const INDEX_PART = '[0-9a-z]{1,4}:[0-9a-z]{1,11}';
/** A whole cursor, in either form (empty: from the start). */
export const CURSOR_RE = new RegExp(`^(?:(?:${NAME_PART}(?:,${NAME_PART})*)?|~[A-Za-z0-9_-]{0,4096}~(?:${INDEX_PART}(?:,${INDEX_PART})*)?)$`);

/**
 * Longest cursor taken: it travels in a query string or the Last-Event-ID header, and
 * Node's HTTP server refuses request heads over 16 KiB (431).
 */
export const MAX_CURSOR_CHARS = 8 * 1024;
/** Above this length the coordinator writes the compact form. */
const COMPACT_ABOVE = 1024;

export type ParsedCursor =
  | { kind: 'names'; offsets: Map<string, number> }
  /** `complete`: indexes (build order) of nodes received whole; `partial`: index -> offset. */
  | { kind: 'compact'; complete: number[]; partial: Map<number, number> };

/**
 * Parses a cursor; anything but what `formatCursor` writes is refused with a message
 * saying what is wrong (a malformed cursor must not silently replay a log from the start).
 */
export function parseCursor(text: string | undefined | null): ParsedCursor | string {
  if (!text) return { kind: 'names', offsets: new Map() };
  if (text.length > MAX_CURSOR_CHARS) return `is longer than ${MAX_CURSOR_CHARS} characters`;
  if (text.startsWith('~')) return parseCompact(text);
  const offsets = new Map<string, number>();
  for (const part of text.split(',')) {
    const m = NAME_OFFSET_RE.exec(part);
    if (!m) return `part '${part.slice(0, 80)}' is not <node>:<byte offset>`;
    // An offset past 2^53 is past any log's end: the same as the largest one.
    const offset = Math.min(Number(m[2]), Number.MAX_SAFE_INTEGER);
    offsets.set(m[1]!, offset); // named twice: the later one counts (as a hand-written cursor may)
  }
  return { kind: 'names', offsets };
}

function parseCompact(text: string): ParsedCursor | string {
  const m = /^~([A-Za-z0-9_-]{0,4096})~(.*)$/.exec(text);
  if (!m) return 'is not ~<bitmap>~<index>:<offset>,...';
  const bits = fromBase64url(m[1]!); // characters checked by the pattern; trailing bits ignored
  const complete: number[] = [];
  bits.forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) complete.push(i * 8 + b);
  });
  const partial = new Map<number, number>();
  if (m[2]) {
    for (const part of m[2].split(',')) {
      const p = /^([0-9a-z]{1,4}):([0-9a-z]{1,11})$/.exec(part);
      if (!p) return `part '${part.slice(0, 80)}' is not <index>:<offset> in base 36`;
      const index = parseInt(p[1]!, 36);
      const offset = Math.min(parseInt(p[2]!, 36), Number.MAX_SAFE_INTEGER);
      partial.set(index, offset);
    }
  }
  return { kind: 'compact', complete, partial };
}

/**
 * The cursor for `offsets` (by node name; nodes at 0 left out). With the build's node
 * names in order and the set of nodes received whole, a cursor longer than a kilobyte is
 * written in the compact form.
 */
export function formatCursor(offsets: ReadonlyMap<string, number>, build?: { nodes: readonly string[]; complete: ReadonlySet<string> }): string {
  const byName = [...offsets].filter(([, o]) => o > 0).map(([n, o]) => `${n}:${o}`).join(',');
  if (!build || byName.length <= COMPACT_ABOVE) return byName;
  const bits = new Uint8Array(Math.ceil(build.nodes.length / 8));
  const partial: string[] = [];
  build.nodes.forEach((name, i) => {
    if (build.complete.has(name)) bits[i >> 3]! |= 1 << (i & 7);
    else {
      const o = offsets.get(name) ?? 0;
      if (o > 0) partial.push(`${i.toString(36)}:${o.toString(36)}`);
    }
  });
  return `~${toBase64url(bits)}~${partial.join(',')}`;
}

// base64url without Node's Buffer: the dashboard loads this module in the browser (through log-events.ts).
/** As Buffer.from(s, 'base64url') reads it: no padding needed, a last lone character ignored. */
function fromBase64url(s: string): Uint8Array {
  const bin = atob((s.length % 4 === 1 ? s.slice(0, -1) : s).replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
}

function toBase64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A node stream's event id: a byte offset (at most 15 digits, so always a safe integer). */
export const OFFSET_ID_RE = /^(0|[1-9][0-9]{0,14})$/;

/** The id of a node stream's `log` event: the byte offset after its text. */
export function formatOffsetId(offset: number): string {
  return String(offset);
}

/** Reads a node stream's event id back to its byte offset, or says what is wrong with it. */
export function parseOffsetId(text: string): number | string {
  if (!OFFSET_ID_RE.test(text)) return `'${text.slice(0, 80)}' is not a byte offset (a non-negative integer)`;
  return Number(text);
}
