/**
 * Turns the event stream of a BuildKit build driven through the Docker Engine API
 * (`docker.buildImage(..., { version: '2' })` read with `docker.modem.followProgress`) into
 * human-readable log text in the style of `docker buildx build --progress=plain`, and
 * extracts the result (image id, error, exit code, failed step, cache counts).
 *
 * The engine wraps BuildKit's progress as `{id: 'moby.buildkit.trace', aux: <base64>}` events;
 * each aux is a protobuf `moby.buildkit.v1.StatusResponse`, decoded by buildkit-status.ts.
 *
 * Output rules, after BuildKit's util/progress/progressui plain printer:
 * - vertices get numbers #1, #2, ... in the order they start (or show up cached/failed);
 *   a vertex that is listed but never starts gets no number, so there are no gaps;
 * - `#N <name>` when a vertex starts, preceded by a blank line except for the first one; if
 *   another vertex was still running, `#M ...` first (and its header again when it resumes);
 * - RUN output: `#N <seconds since the vertex started> <line>` (3 decimals under 10 s, 2
 *   under 100 s, then 1), complete lines; a partial line is kept per vertex until its
 *   newline arrives, the vertex completes, end() is called, or flushPartials() shows it
 *   (the caller does that after a short wait, so a prompt or progress dots are not held):
 *   then the text so far goes out without a newline, and the rest of the line follows it
 *   on the same line, or the line is closed first (by a newline) when anything else prints
 *   in between or the rest rewrites the line with `\r`;
 * - `\r`: a trailing `\r` before the newline is dropped; otherwise only the text after the
 *   last `\r` of a line is kept (the final state of a progress bar that rewrites itself);
 * - statuses (`exporting layers`, `transferring context`) only once, when they complete:
 *   `#N <id>[ <bytes>][ <secs>s] done`;
 * - completion: `#N DONE 0.3s`, `#N CACHED`, `#N ERROR: <error>` or `#N CANCELED`; a vertex
 *   that completes again the same way (BuildKit restarts some internal vertices) is not
 *   repeated;
 * - legacy `stream` text is passed through, `status` events as `<id>: <status>` lines, the
 *   final `error` event as `ERROR: <message>`; an undecodable aux gives a `[kiln] ...` line.
 * Times come from BuildKit's timestamps; when they are absent, `options.now` is used.
 * `options.filter` makes a stream filter per vertex that each of its RUN output chunks
 * passes through before the rules above (build secrets: agent/log-redactor.ts), so a value
 * a step prints in pieces is whole to it even while other steps print in between; what it
 * holds back is given back when the vertex completes or the stream ends.
 */
import { TextDecoder } from 'node:util';
import {
  decodeStatus, formatBytes, formatElapsed, lastExitCode, settleCarriageReturns, toMs,
  type PbStatusResponse, type PbVertex, type PbVertexLog, type PbVertexStatus,
} from './buildkit-status.js';

/** One event object as delivered by docker.modem.followProgress's onProgress callback. */
export interface BuildEvent {
  id?: string;
  aux?: unknown;
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string; code?: number };
}

export interface BuildOutcome {
  /** From `{id: 'moby.image.id', aux: {ID}}`; null when the build produced no image. */
  imageId: string | null;
  /** The error message of the failed build (from `error`/errorDetail, or a vertex error). */
  error: string | null;
  /** Parsed from "exit code: N" in the error when a RUN failed. */
  exitCode: number | null;
  /** Name of the vertex that failed, e.g. "[2/2] RUN exit 3". */
  failedStep: string | null;
  /** Numbered vertices (see above) that completed as cached, and all numbered vertices. */
  cachedSteps: number;
  totalSteps: number;
}

const TRACE_ID = 'moby.buildkit.trace';
const IMAGE_ID = 'moby.image.id';
/** A partial line longer than this is emitted anyway, so a newline-less stream cannot grow without bound. */
const MAX_PARTIAL_LINE = 64 * 1024;
type Completion = 'done' | 'cached' | 'error' | 'canceled';

interface VertexState {
  name: string;
  /** #N, 0 until the vertex is first printed. */
  index: number;
  started: boolean;
  /** Started and not completed yet. */
  running: boolean;
  /** BuildKit's start time of the current run (ms), if it sent one. */
  startRemote: number | undefined;
  /** options.now() when the current run was first seen. */
  startLocal: number;
  /** How the last run ended (null while running or before the first run). */
  completion: Completion | null;
  error: string | null;
  utf8: TextDecoder;
  /** options.filter's filter for this vertex's output (null: none). */
  filter: LogFilter | null;
  /** Text after the last newline, and the elapsed-time prefix of the chunk that began it. */
  partial: string;
  partialElapsed: string;
  /** options.now() when the held partial line began. */
  partialSince: number;
  /** The rest of the open line (see flushPartials) that arrived with its newline, to print first. */
  continuation: string | null;
  /** The open line is to be closed without a continuation (the line was rewritten with `\r`). */
  breakLine: boolean;
  /** The shown part of the open line ended in `\r`: unless a newline follows, the line is rewritten. */
  pendingCR: boolean;
  /** Status IDs already printed as done, and those started but not completed yet. */
  statusesDone: Set<string>;
  statusesOpen: Set<string>;
  // What the current event has to print for this vertex:
  /** The vertex (re)started: print its header even without other lines. */
  showHeader: boolean;
  /** Lines without the `#N ` prefix. */
  queued: string[];
  /** The completion line (without `#N `) to print after the queued lines. */
  finishing: string | null;
  /** A `DONE ...` held back until the open statuses complete: BuildKit may send e.g. the
   * "naming to" status of "exporting to image" after the vertex itself completed. */
  pendingDone: string | null;
}

/** A stream filter of a vertex's output: `push` returns what may be shown now, `end` the rest. */
export interface LogFilter {
  push(text: string): string;
  end(): string;
}

export class BuildProgressDecoder {
  private readonly now: () => number;
  private readonly filter: (() => LogFilter) | undefined;
  private readonly vertices = new Map<string, VertexState>();
  /** The vertex whose block is being printed (its header was the last one). */
  private current: VertexState | null = null;
  private nextIndex = 0;
  private printedVertex = false;
  /** Vertex lines were printed since the last other text (which then starts after a blank line). */
  private blockOpen = false;
  private streamPartial = '';
  /** The vertex whose partial line was shown without its newline (the log ends mid-line). */
  private openLine: VertexState | null = null;
  private readonly undecodable = new Map<string, number>();
  private imageId: string | null = null;
  private finalError: string | null = null;

  constructor(options?: { now?: () => number; filter?: () => LogFilter }) {
    this.now = options?.now ?? Date.now;
    this.filter = options?.filter;
  }

  /** Feed one event; returns the text (zero or more complete lines, each ending in \n) to append to the node's log now. */
  push(event: BuildEvent): string {
    let out = '';
    if (event.id === TRACE_ID) {
      let status: PbStatusResponse;
      try {
        status = decodeStatus(event.aux);
      } catch (err) {
        return this.reportUndecodable(err instanceof Error ? err.message : String(err));
      }
      out += this.applyStatus(status);
    } else if (event.id === IMAGE_ID) {
      const id = isRecord(event.aux) ? event.aux['ID'] : undefined;
      if (typeof id === 'string') this.imageId = id;
    } else if (typeof event.status === 'string' && event.status !== '') {
      out += this.passThrough(`${event.id ? `${event.id}: ` : ''}${event.status}\n`);
    }
    if (typeof event.stream === 'string') out += this.passThrough(event.stream);
    const message = event.error ?? event.errorDetail?.message;
    if (typeof message === 'string' && message !== '') {
      this.finalError ??= message;
      out += this.passThrough(`ERROR: ${message}\n`, true);
    }
    return out;
  }

  /** Call once after the stream ended (or was aborted): flushes partial lines of every vertex. */
  end(): string {
    let out = '';
    for (const v of this.vertices.values()) {
      const line = this.takePartial(v);
      if (line !== null) v.queued.push(line);
      if (v.pendingDone !== null) v.statusesOpen.clear();
      out += this.print(v);
    }
    out += this.passThrough('', true);
    out += this.closeOpen();
    for (const [reason, count] of this.undecodable) {
      if (count > 1) out += `[kiln] ${count - 1} more undecodable BuildKit progress events (${reason})\n`;
    }
    this.undecodable.clear();
    return out;
  }

  outcome(): BuildOutcome {
    const all = [...this.vertices.values()];
    const numbered = all.filter((v) => v.index > 0);
    const failed = all.find((v) => v.completion === 'error');
    const error = this.finalError ?? failed?.error ?? null;
    return {
      imageId: this.imageId,
      error,
      exitCode: error === null ? null : lastExitCode(error),
      failedStep: failed?.name ?? null,
      cachedSteps: numbered.filter((v) => v.completion === 'cached').length,
      totalSteps: numbered.length,
    };
  }

  /** Layer cache (issue 11): every vertex's name and how it ended last (cached vs executed; see docker/layer-cache.ts). */
  steps(): Array<{ name: string; completion: Completion | null }> {
    return [...this.vertices.values()].map((v) => ({ name: v.name, completion: v.completion }));
  }

  /** Some vertex holds a partial line (text after its last newline) that was not shown yet. */
  hasPartial(): boolean {
    for (const v of this.vertices.values()) if (v.partial !== '') return true;
    return false;
  }

  /** Shows the partial lines held since `heldSince` (options.now() time) or before, by
   * default all, without their newline (see the header). */
  flushPartials(heldSince = Infinity): string {
    let out = '';
    for (const v of this.vertices.values()) {
      if (v.partial === '' || v.partialSince > heldSince) continue;
      const text = v.partial.replace(/\r+$/, '');
      v.pendingCR = text.length < v.partial.length;
      v.partial = '';
      if (this.openLine === v) {
        out += text;
      } else {
        out += this.focus(v);
        out += `#${v.index} ${v.partialElapsed} ${settleCarriageReturns(text)}`;
        this.openLine = v;
      }
    }
    return out;
  }

  /** Ends the open line, with the rest of it if that came. */
  private closeOpen(): string {
    const v = this.openLine;
    if (!v) return '';
    const out = `${v.continuation ?? ''}\n`;
    v.continuation = null;
    v.breakLine = false;
    v.pendingCR = false;
    this.openLine = null;
    return out;
  }

  /** Applies one StatusResponse, then prints like the plain printer: vertices that completed
   * in it first, each as header, statuses, warnings, logs, completion. */
  private applyStatus(status: PbStatusResponse): string {
    const touched = new Set<VertexState>();
    for (const vx of status.vertexes ?? []) touched.add(this.updateVertex(vx));
    for (const st of status.statuses ?? []) touched.add(this.updateVertexStatus(st));
    for (const w of status.warnings ?? []) {
      const v = this.vertex(w.vertex);
      v.queued.push(`WARN: ${new TextDecoder().decode(w.short ?? new Uint8Array())}`);
      touched.add(v);
    }
    for (const log of status.logs ?? []) touched.add(this.updateLog(log));
    const ordered = [...touched].filter((v) => v.finishing !== null)
      .concat([...touched].filter((v) => v.finishing === null));
    return ordered.map((v) => this.print(v)).join('');
  }

  private updateVertex(vx: PbVertex): VertexState {
    const v = this.vertex(vx.digest, vx.name);
    const startedMs = toMs(vx.started);
    const completion: Completion | null = vx.error
      ? vx.error.endsWith('context canceled') ? 'canceled' : 'error'
      : vx.cached ? 'cached' : vx.completed ? 'done' : null;

    if (completion === null) {
      // Listed but not started yet, a start (or a rerun), or a repeated update of a running vertex.
      if (startedMs === undefined) return v;
      if (!v.started || (!v.running && startedMs !== v.startRemote)) {
        this.startRun(v, startedMs);
        v.showHeader = true;
      }
      v.startRemote ??= startedMs;
      return v;
    }

    if (!v.running) {
      // Completed without a start seen: a step that shows up cached, a duplicate update,
      // or a rerun that BuildKit reports in one go (it does that for internal vertices),
      // which is only printed when it ended differently (e.g. DONE, then CACHED).
      if (v.started && completion === v.completion) return v;
      this.startRun(v, startedMs);
    }
    v.startRemote ??= startedMs;
    v.running = false;
    v.completion = completion;
    if (completion === 'error' || completion === 'canceled') {
      v.error = vx.error ?? null;
      v.finishing = completion === 'error' ? `ERROR: ${vx.error}` : 'CANCELED';
    } else if (completion === 'cached') {
      v.finishing = 'CACHED';
    } else {
      const completedMs = toMs(vx.completed);
      const ms = completedMs !== undefined && v.startRemote !== undefined ? completedMs - v.startRemote : this.now() - v.startLocal;
      v.finishing = `DONE ${(Math.max(0, ms) / 1000).toFixed(1)}s`;
    }
    return v;
  }

  private updateVertexStatus(st: PbVertexStatus): VertexState {
    const v = this.vertex(st.vertex);
    const id = st.ID ?? '';
    if (v.statusesDone.has(id)) return v;
    if (!st.completed) {
      v.statusesOpen.add(id);
      return v;
    }
    v.statusesDone.add(id);
    v.statusesOpen.delete(id);
    const current = st.current ?? 0;
    const total = st.total ?? 0;
    const bytes = total !== 0 ? ` ${formatBytes(current)} / ${formatBytes(total)}`
      : current !== 0 ? ` ${formatBytes(current)}` : '';
    const startedMs = toMs(st.started);
    const completedMs = toMs(st.completed);
    const secs = startedMs !== undefined && completedMs !== undefined ? (completedMs - startedMs) / 1000 : 0;
    v.queued.push(`${id}${bytes}${secs > 0.01 ? ` ${secs.toFixed(1)}s` : ''} done`);
    return v;
  }

  private updateLog(log: PbVertexLog): VertexState {
    const v = this.vertex(log.vertex);
    const logMs = toMs(log.timestamp);
    if (!v.started) this.startRun(v, logMs);
    const decoded = v.utf8.decode(log.msg ?? new Uint8Array(), { stream: true });
    const text = v.filter ? v.filter.push(decoded) : decoded;
    if (text === '') return v;
    const elapsed = formatElapsed(
      logMs !== undefined && v.startRemote !== undefined ? logMs - v.startRemote : this.now() - v.startLocal,
    );
    const pieces = text.split('\n');
    const rest = pieces.pop() ?? '';
    const open = this.isOpen(v);
    let continuing = open && !this.rewritesOpenLine(v, text);
    if (open && !continuing) {
      v.breakLine = true;
      if (v.partial !== '') v.partialElapsed = elapsed;
    }
    for (const piece of pieces) {
      if (continuing) {
        v.continuation = (v.partial + piece).replace(/\r+$/, '');
        v.partial = '';
        continuing = false;
      } else if (v.partial !== '') {
        v.queued.push(`${v.partialElapsed} ${settleCarriageReturns(v.partial + piece)}`);
        v.partial = '';
      } else {
        v.queued.push(`${elapsed} ${settleCarriageReturns(piece)}`);
      }
    }
    if (rest !== '') {
      if (v.partial === '') {
        v.partialElapsed = elapsed;
        v.partialSince = this.now();
      }
      v.partial += rest;
      // Keep only the last rewrite of a `\r` progress line (a trailing `\r` may be half of `\r\n`).
      const cut = v.partial.length < 2 ? -1 : v.partial.lastIndexOf('\r', v.partial.length - 2);
      if (cut >= 0) v.partial = v.partial.slice(cut + 1);
      if (v.partial.length > MAX_PARTIAL_LINE) {
        if (continuing) v.continuation = v.partial;
        else v.queued.push(`${v.partialElapsed} ${settleCarriageReturns(v.partial)}`);
        v.partial = '';
      }
    }
    return v;
  }

  /** v's line is open and what comes next for v continues it. */
  private isOpen(v: VertexState): boolean {
    return this.openLine === v && v.continuation === null && !v.breakLine;
  }

  /** Whether `text`, arriving for the open line of v, rewrites it with `\r` instead of continuing it. */
  private rewritesOpenLine(v: VertexState, text: string): boolean {
    if (v.pendingCR && !text.startsWith('\n') && !text.startsWith('\r')) return true;
    const nl = text.indexOf('\n');
    const segment = v.partial + (nl >= 0 ? text.slice(0, nl) : text);
    // A trailing `\r` may be half of `\r\n`; any other `\r` starts the line over.
    return segment.replace(/\r+$/, '').includes('\r');
  }

  /** The buffered partial line (and any incomplete UTF-8 sequence) as `<elapsed> <text>`, or
   * null if none; for the open line, the rest becomes its continuation (closed when printed). */
  private takePartial(v: VertexState): string | null {
    const rest = v.utf8.decode(); // flushes and resets the decoder
    v.partial += v.filter ? v.filter.push(rest) + v.filter.end() : rest;
    if (this.isOpen(v)) {
      v.continuation = v.partial.replace(/\r+$/, '');
      v.partial = '';
      return null;
    }
    if (v.partial === '') return null;
    const line = `${v.partialElapsed} ${settleCarriageReturns(v.partial)}`;
    v.partial = '';
    return line;
  }

  /** Prints what v has queued: header if needed, lines, completion. */
  private print(v: VertexState): string {
    if (v.finishing !== null) {
      const line = this.takePartial(v);
      if (line !== null) v.queued.push(line);
      if (v.finishing.startsWith('DONE')) {
        v.pendingDone = v.finishing;
      } else {
        v.queued.push(v.finishing);
      }
      v.finishing = null;
    }
    const done = v.pendingDone !== null && v.statusesOpen.size === 0;
    if (done) v.queued.push(v.pendingDone ?? '');
    const closing = this.openLine === v && (v.continuation !== null || v.breakLine);
    if (!v.showHeader && v.queued.length === 0 && !closing) return '';
    let out = this.openLine === v ? this.closeOpen() : '';
    out += this.focus(v);
    for (const line of v.queued) out += `#${v.index} ${line}\n`;
    v.queued = [];
    v.showHeader = false;
    if (done) v.pendingDone = null;
    if (!v.running && v.pendingDone === null) this.current = null;
    return out;
  }

  private startRun(v: VertexState, startedMs: number | undefined): void {
    v.started = true;
    v.running = true;
    v.completion = null;
    v.pendingDone = null;
    v.startRemote = startedMs;
    v.startLocal = this.now();
  }

  /** Makes v the vertex being printed: `#M ...` for an interrupted one, blank line, `#N name`. */
  private focus(v: VertexState): string {
    if (this.current === v) return '';
    let out = this.closeOpen();
    if (this.current && (this.current.running || this.current.pendingDone !== null)) out += `#${this.current.index} ...\n`;
    if (this.printedVertex) out += '\n';
    if (v.index === 0) v.index = ++this.nextIndex;
    out += `#${v.index} ${v.name}\n`;
    this.current = v;
    this.printedVertex = true;
    this.blockOpen = true;
    return out;
  }

  private vertex(digest: string | undefined, name?: string): VertexState {
    const key = digest ?? '';
    let v = this.vertices.get(key);
    if (!v) {
      v = {
        name: key || '(unnamed vertex)', index: 0, started: false, running: false,
        startRemote: undefined, startLocal: this.now(), completion: null, error: null,
        utf8: new TextDecoder(), filter: this.filter ? this.filter() : null, partial: '', partialElapsed: '', partialSince: 0, continuation: null, breakLine: false, pendingCR: false,
        statusesDone: new Set(), statusesOpen: new Set(),
        showHeader: false, queued: [], finishing: null, pendingDone: null,
      };
      this.vertices.set(key, v);
    }
    if (name) v.name = name;
    return v;
  }

  /** Text that is not from a vertex (legacy `stream`, `status`, the final error): complete
   * lines are passed through, `flush` also emits a partial rest. After vertex output it starts
   * with a blank line, and later vertex output starts with a header again. */
  private passThrough(text: string, flush = false): string {
    const all = this.streamPartial + text;
    const cut = flush ? all.length : all.lastIndexOf('\n') + 1;
    this.streamPartial = all.slice(cut);
    const out = all.slice(0, cut);
    if (out === '') return '';
    const separator = this.blockOpen ? '\n' : '';
    this.blockOpen = false;
    const close = this.closeOpen();
    this.current = null;
    return close + separator + (out.endsWith('\n') ? out : `${out}\n`);
  }

  /** One line per distinct reason; repeats are counted and summarised by end(). */
  private reportUndecodable(reason: string): string {
    const seen = this.undecodable.get(reason) ?? 0;
    this.undecodable.set(reason, seen + 1);
    return seen === 0 ? `${this.closeOpen()}[kiln] undecodable BuildKit progress event (${reason})\n` : '';
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
