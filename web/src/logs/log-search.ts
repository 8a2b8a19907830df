/**
 * Search in a log: over the model's plain-text lines (never the DOM), kept up to date as
 * lines are appended (only the new lines, and the partial last line again, are searched).
 * Pure; the log pane owns one LogSearch per query.
 */
import type { LogModel, LogSegment } from './log-model.js';

/** Longest query accepted (characters). */
export const MAX_QUERY_CHARS = 200;
/** At most this many matching lines are listed (the count says "at least" beyond). */
export const MAX_HITS = 100_000;

export interface SearchOptions {
  readonly caseSensitive?: boolean;
  /** The query is a regular expression (JavaScript syntax). */
  readonly regex?: boolean;
}

/** A matcher for the query, or an error naming what is wrong with it; null for an empty query. */
export function makeMatcher(query: string, options: SearchOptions = {}): RegExp | { error: string } | null {
  if (query === '') return null;
  if (query.length > MAX_QUERY_CHARS) return { error: `the search is longer than ${MAX_QUERY_CHARS} characters` };
  const source = options.regex ? query : query.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  try {
    return new RegExp(source, options.caseSensitive ? 'g' : 'gi');
  } catch (err) {
    return { error: `not a valid regular expression: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** [start, end) ranges of the matches in `text` (empty matches skipped; at most 1000). */
export function matchRanges(text: string, matcher: RegExp): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  matcher.lastIndex = 0;
  for (let m = matcher.exec(text); m !== null && out.length < 1000; m = matcher.exec(text)) {
    if (m[0] === '') {
      matcher.lastIndex++;
      continue;
    }
    out.push([m.index, m.index + m[0].length]);
  }
  matcher.lastIndex = 0;
  return out;
}

/** A segment of a line, marked when it is (part of) a search match. */
export interface MarkedSegment extends LogSegment {
  readonly match: boolean;
}

/**
 * Segments cut at the edges of `ranges` ([start, end) offsets into the line's text, sorted,
 * not overlapping); each piece says which range it lies in (-1: none).
 */
export function cutSegments<S extends LogSegment>(segments: readonly S[], ranges: ReadonlyArray<readonly [number, number]>): Array<S & { range: number }> {
  if (ranges.length === 0) return segments.map((s) => ({ ...s, range: -1 }));
  const out: Array<S & { range: number }> = [];
  let pos = 0;
  let r = 0;
  for (const seg of segments) {
    const end = pos + seg.text.length;
    let at = pos;
    while (at < end) {
      while (r < ranges.length && ranges[r]![1] <= at) r++;
      const range = ranges[r];
      if (!range || range[0] >= end) {
        out.push({ ...seg, text: seg.text.slice(at - pos), range: -1 });
        at = end;
      } else if (range[0] > at) {
        out.push({ ...seg, text: seg.text.slice(at - pos, range[0] - pos), range: -1 });
        at = range[0];
      } else {
        const stop = Math.min(end, range[1]);
        out.push({ ...seg, text: seg.text.slice(at - pos, stop - pos), range: r });
        at = stop;
      }
    }
    pos = end;
  }
  return out;
}

/** A line's styled segments cut further at the match ranges, the pieces inside marked. */
export function markMatches(segments: readonly LogSegment[], ranges: ReadonlyArray<readonly [number, number]>): MarkedSegment[] {
  return cutSegments(segments, ranges).map((s) => ({ text: s.text, style: s.style, match: s.range >= 0 }));
}

/** http(s) URLs in a line (what the pane makes links of); a trailing `.`, `,`, `)` and the like is not part of one. */
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]}]/g;

/** [start, end) ranges of the URLs in `text` (at most 20). */
export function linkRanges(text: string): Array<[number, number]> {
  if (!text.includes('://')) return [];
  const out: Array<[number, number]> = [];
  URL_RE.lastIndex = 0;
  for (let m = URL_RE.exec(text); m !== null && out.length < 20; m = URL_RE.exec(text)) out.push([m.index, m.index + m[0].length]);
  URL_RE.lastIndex = 0;
  return out;
}

/** The lines matching one query, extended as the model grows. */
export class LogSearch {
  private readonly hitList: number[] = [];
  /** Lines before this index were searched and are complete (they cannot change). */
  private searchedTo = 0;
  private capped = false;

  constructor(readonly matcher: RegExp) {}

  /** Matching line indexes, ascending. */
  get hits(): readonly number[] {
    return this.hitList;
  }

  /** More lines matched than are listed. */
  get truncated(): boolean {
    return this.capped;
  }

  /** Searches what is new in `model` since the last call; true when the hits changed. */
  update(model: LogModel): boolean {
    const before = this.hitList.length;
    // the partial last line may have been rewritten: forget its hit and search it again
    let dropped = false;
    while (this.hitList.length > 0 && this.hitList[this.hitList.length - 1]! >= this.searchedTo) {
      this.hitList.pop();
      dropped = true;
    }
    const count = model.lineCount;
    const re = this.matcher;
    for (let i = this.searchedTo; i < count; i++) {
      re.lastIndex = 0;
      if (!re.test(model.text(i))) continue;
      if (this.hitList.length >= MAX_HITS) {
        this.capped = true;
        break;
      }
      this.hitList.push(i);
    }
    re.lastIndex = 0;
    this.searchedTo = model.completeLines;
    return dropped || this.hitList.length !== before;
  }

  /** The hit to go to from line `from`: the next one after it (or the previous before it), wrapping; -1 when none. */
  step(from: number, direction: 1 | -1): number {
    const h = this.hitList;
    if (h.length === 0) return -1;
    if (direction === 1) {
      for (const i of h) if (i > from) return i;
      return h[0]!;
    }
    for (let k = h.length - 1; k >= 0; k--) if (h[k]! < from) return h[k]!;
    return h[h.length - 1]!;
  }
}
