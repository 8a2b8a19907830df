/**
 * The log pane's model: a node's log as lines, appended chunk by chunk as the stream
 * delivers them. Pure (no DOM); the React view (log-pane.tsx) only reads it.
 *
 * - **Partial lines.** Text after the last newline is the current last line: shown, and
 *   parsed again from its start when more of it arrives (until its newline commits it).
 * - **`\r` rewrites** keep what a terminal would show at the end: the last segment after a
 *   `\r`, or the one before it when the last is empty (`50%\r` shows `50%`; `\r\n` ends a
 *   line like `\n`). Segments are not overlaid character by character.
 * - **ANSI** SGR → styled spans (ansi-line.ts, with anser), the state carrying across
 *   lines; other escapes removed.
 * - **Caps.** A line shows at most `maxLineChars` characters, then a marker saying how
 *   many were cut; of a line still being written, at most `maxPendingChars` raw characters
 *   are kept (more are counted, not stored), so a log without newlines costs bounded work
 *   per chunk.
 * - **Compact storage.** Plain text in one string array; spans of every line in one
 *   growing Int32Array (pairs of start offset and style id) indexed by a Uint32Array;
 *   error flags in a Uint8Array. Lines without colour cost one string.
 * - **Errors** per log-errors.ts; `firstError` is the index of the first error line.
 * - **Search** is over the plain-text lines (log-search.ts), never the DOM.
 */
import { AnsiLineParser, DEFAULT_SGR, STYLE_CUT, type LogStyle, type ParsedSegment, type SgrState } from './ansi-line.js';
import { ErrorClassifier, LINE_ERROR, LINE_PLAIN, type LineFlag } from './log-errors.js';

export interface LogModelOptions {
  /** Characters of a line shown before it is cut with a marker. @default 4000 */
  readonly maxLineChars?: number;
  /** Raw characters of one `\r` segment of a line kept while it is written. @default 65536 */
  readonly maxPendingChars?: number;
}

/** A run of a line with one style. */
export interface LogSegment {
  readonly text: string;
  readonly style: LogStyle;
}

/** What an append changed: lines from `firstChanged` (0-based) on are new or rewritten. */
export interface AppendResult {
  readonly firstChanged: number;
  readonly lineCount: number;
}

function grow<T extends Uint32Array | Int32Array | Uint8Array>(a: T, need: number, make: (n: number) => T): T {
  if (need <= a.length) return a;
  let n = a.length * 2;
  while (n < need) n *= 2;
  const b = make(n);
  b.set(a);
  return b;
}

export class LogModel {
  private readonly parser = new AnsiLineParser();
  private readonly classifier = new ErrorClassifier();
  private readonly maxLineChars: number;
  private readonly maxPendingChars: number;

  private readonly lines: string[] = [];
  /** spanIndex[i]..spanIndex[i+1]: line i's span pairs in spanData. */
  private spanIndex = new Uint32Array(1024);
  private spanData = new Int32Array(4096);
  private flags = new Uint8Array(1024);
  private readonly errors: number[] = [];
  /** Lines ended by a newline; a partial last line, when shown, is lines[complete]. */
  private complete = 0;

  /** The line being written: SGR state at its start, the previous non-empty `\r` segment, the current one. */
  private pendStart: SgrState = DEFAULT_SGR;
  private pendPrev: string | null = null;
  private pendCur = '';
  private pendDropped = 0;
  /** The SGR state after the last complete line. */
  private carry: SgrState = DEFAULT_SGR;
  private chars = 0;
  private changes = 0;

  constructor(options: LogModelOptions = {}) {
    this.maxLineChars = options.maxLineChars ?? 4000;
    this.maxPendingChars = options.maxPendingChars ?? 65536;
  }

  /** Lines shown, the partial last line included. */
  get lineCount(): number {
    return this.lines.length;
  }

  /** Lines ended by a newline. */
  get completeLines(): number {
    return this.complete;
  }

  /** Characters appended so far (UTF-16 units of the raw text). */
  get appendedChars(): number {
    return this.chars;
  }

  /** Increases with every change (a React key for "the model changed"). */
  get version(): number {
    return this.changes;
  }

  /** Index of the first error line, or -1. */
  get firstError(): number {
    return this.errors[0] ?? -1;
  }

  /** Indexes of the error lines, ascending (complete lines only). */
  get errorLines(): readonly number[] {
    return this.errors;
  }

  /** Plain text of line `i` (escapes removed, capped). */
  text(i: number): string {
    return this.lines[i] ?? '';
  }

  flag(i: number): LineFlag {
    return (i < this.complete ? this.flags[i] : LINE_PLAIN) as LineFlag;
  }

  /** Line `i` as runs of one style each (one plain run for an uncoloured line). */
  segments(i: number): LogSegment[] {
    const text = this.lines[i];
    if (text === undefined) return [];
    const from = this.spanIndex[i]!;
    const to = this.spanIndex[i + 1]!;
    const plain = this.parser.styles.style(0);
    const out: LogSegment[] = [];
    let at = 0;
    let style = plain;
    for (let k = from; k < to; k += 2) {
      const start = this.spanData[k]!;
      if (start > at) out.push({ text: text.slice(at, start), style });
      at = Math.max(at, start);
      style = this.parser.styles.style(this.spanData[k + 1]!);
    }
    if (at < text.length || out.length === 0) out.push({ text: text.slice(at), style });
    return out;
  }

  /** Appends a chunk of the log (any size, cut anywhere). */
  append(chunk: string): AppendResult {
    const firstChanged = this.complete;
    this.chars += chunk.length;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf('\n', start);
      if (nl < 0) {
        this.addToPending(start === 0 ? chunk : chunk.slice(start));
        break;
      }
      this.addToPending(chunk.slice(start, nl));
      this.commit();
      start = nl + 1;
    }
    this.showPending();
    this.changes++;
    return { firstChanged, lineCount: this.lines.length };
  }

  /** The log is complete: a last line without a newline becomes a complete line. */
  finish(): void {
    if (this.pendCur === '' && this.pendPrev === null) return;
    this.commit();
    this.changes++;
  }

  private addToPending(text: string): void {
    if (text === '') return;
    if (!text.includes('\r')) {
      this.appendCur(text);
      return;
    }
    const parts = text.split('\r');
    this.appendCur(parts[0]!);
    for (let k = 1; k < parts.length; k++) {
      this.closeSegment();
      this.appendCur(parts[k]!);
    }
  }

  private appendCur(text: string): void {
    const room = this.maxPendingChars - this.pendCur.length;
    if (text.length <= room) this.pendCur += text;
    else {
      if (room > 0) this.pendCur += text.slice(0, room);
      this.pendDropped += text.length - Math.max(room, 0);
    }
  }

  /** A `\r` ended the current segment: it becomes the previous one unless it shows nothing. */
  private closeSegment(): void {
    if (this.pendCur === '') return;
    const prevEnd = this.pendPrev === null ? this.pendStart : this.parser.parse(this.pendPrev, this.pendStart).end;
    const cur = this.parser.parse(this.pendCur, prevEnd);
    if (cur.text === '') {
      // only escapes: they change the state, not what is shown
      if (this.pendPrev === null) this.pendStart = cur.end;
      else this.pendPrev += this.pendCur;
    } else {
      this.pendStart = prevEnd;
      this.pendPrev = this.pendCur;
    }
    this.pendCur = '';
    this.pendDropped = 0;
  }

  /** What the line being written shows, and the SGR state after it. */
  private renderPending(): { shown: ParsedSegment; end: SgrState } {
    const prev = this.pendPrev === null ? null : this.parser.parse(this.pendPrev, this.pendStart);
    const cur = this.parser.parse(this.pendCur, prev ? prev.end : this.pendStart);
    return { shown: prev && cur.text === '' ? prev : cur, end: cur.end };
  }

  private commit(): void {
    const { shown, end } = this.renderPending();
    const i = this.complete;
    const text = this.write(i, shown, this.pendCur === '' ? 0 : this.pendDropped);
    const flag = this.classifier.classify(i, text);
    this.flags = grow(this.flags, i + 1, (n) => new Uint8Array(n));
    this.flags[i] = flag;
    if (flag === LINE_ERROR) this.errors.push(i);
    this.complete = i + 1;
    this.carry = end;
    this.pendStart = end;
    this.pendPrev = null;
    this.pendCur = '';
    this.pendDropped = 0;
  }

  private showPending(): void {
    if (this.pendCur === '' && this.pendPrev === null) {
      // nothing after the last newline: no partial line shown
      this.lines.length = this.complete;
      return;
    }
    this.write(this.complete, this.renderPending().shown, this.pendDropped);
  }

  /** Stores line `i` (the last one, or one past it): text capped, spans; returns the stored text. */
  private write(i: number, seg: ParsedSegment, dropped: number): string {
    let text = seg.text;
    let spans = seg.spans;
    const over = text.length - this.maxLineChars + dropped;
    if (over > 0) {
      if (text.length > this.maxLineChars) {
        text = text.slice(0, this.maxLineChars);
        spans = cutSpans(spans, this.maxLineChars);
      }
      const marker = ` … [${over} more characters cut]`;
      spans = [...spans, text.length, STYLE_CUT];
      text += marker;
    }
    this.lines[i] = text;
    this.lines.length = i + 1;
    this.spanIndex = grow(this.spanIndex, i + 2, (n) => new Uint32Array(n));
    const at = this.spanIndex[i]!;
    this.spanData = grow(this.spanData, at + spans.length, (n) => new Int32Array(n));
    for (let k = 0; k < spans.length; k++) this.spanData[at + k] = spans[k]!;
    this.spanIndex[i + 1] = at + spans.length;
    return text;
  }

  /** The SGR state after the last complete line (what the next line starts in). */
  get stateAfterComplete(): SgrState {
    return this.carry;
  }
}

/** Span pairs of a text cut to `length` characters (spans starting at or after it dropped). */
function cutSpans(spans: readonly number[], length: number): number[] {
  const out: number[] = [];
  for (let k = 0; k < spans.length; k += 2) if (spans[k]! < length) out.push(spans[k]!, spans[k + 1]!);
  return out;
}
