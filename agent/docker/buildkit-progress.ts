/**
 * Turns the event stream of a BuildKit build driven through the Docker Engine API
 * (`docker.buildImage(..., { version: '2' })` read with `docker.modem.followProgress`) into
 * human-readable log text in the style of `docker buildx build --progress=plain`, and
 * extracts the result (image id, error, exit code, failed step, cache counts).
 *
 * The engine wraps BuildKit's progress as `{id: 'moby.buildkit.trace', aux: <base64>}` events;
 * each aux is a protobuf `moby.buildkit.v1.StatusResponse`, decoded with the vendored
 * buildkit-status.proto that sits next to this module (copied to dist/ by
 * scripts/copy-assets.mjs).
 *
 * Output rules, after BuildKit's util/progress/progressui plain printer:
 * - vertices get numbers #1, #2, ... in the order they start (or show up cached/failed);
 *   a vertex that is listed but never starts gets no number, so there are no gaps;
 * - `#N <name>` when a vertex starts, preceded by a blank line except for the first one; if
 *   another vertex was still running, `#M ...` first (and its header again when it resumes);
 * - RUN output: `#N <seconds since the vertex started> <line>` (3 decimals under 10 s, 2
 *   under 100 s, then 1), only complete lines; a partial line is kept per vertex until its
 *   newline arrives, the vertex completes, or end() is called;
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
 */
import { fileURLToPath } from 'node:url';
import { TextDecoder } from 'node:util';
import protobuf from 'protobufjs';
import type { Type } from 'protobufjs';

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
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const EXIT_CODE_RE = /exit code: (\d+)/g;

// Shapes of a decoded StatusResponse (protobufjs toObject, longs as numbers; absent fields are undefined).
interface PbTimestamp { seconds?: number; nanos?: number }
interface PbVertex {
  digest?: string; name?: string; cached?: boolean;
  started?: PbTimestamp; completed?: PbTimestamp; error?: string;
}
interface PbVertexStatus {
  ID?: string; vertex?: string; current?: number; total?: number;
  timestamp?: PbTimestamp; started?: PbTimestamp; completed?: PbTimestamp;
}
interface PbVertexLog { vertex?: string; timestamp?: PbTimestamp; msg?: Uint8Array }
interface PbVertexWarning { vertex?: string; short?: Uint8Array }
interface PbStatusResponse {
  vertexes?: PbVertex[]; statuses?: PbVertexStatus[]; logs?: PbVertexLog[]; warnings?: PbVertexWarning[];
}

let statusResponseType: Type | Error | undefined;

/** Loads buildkit-status.proto (next to this module, in source and in dist/) once. A load
 * failure (e.g. the file was not copied to dist/) is kept too and reported per event as
 * undecodable, so a packaging mistake cannot crash the agent inside followProgress. */
function statusType(): Type {
  if (statusResponseType === undefined) {
    try {
      statusResponseType = protobuf
        .loadSync(fileURLToPath(new URL('./buildkit-status.proto', import.meta.url)))
        .lookupType('moby.buildkit.v1.StatusResponse');
    } catch (err) {
      statusResponseType = new Error(`cannot load buildkit-status.proto: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (statusResponseType instanceof Error) throw statusResponseType;
  return statusResponseType;
}

function decodeStatus(aux: unknown): PbStatusResponse {
  if (typeof aux !== 'string') throw new Error(`aux is ${aux === null ? 'null' : typeof aux}, not a base64 string`);
  if (aux.length % 4 !== 0 || !BASE64_RE.test(aux)) throw new Error(`aux is not valid base64 (${aux.length} chars)`);
  const type = statusType();
  return type.toObject(type.decode(Buffer.from(aux, 'base64')), { longs: Number }) as PbStatusResponse;
}

function toMs(ts: PbTimestamp | undefined): number | undefined {
  if (!ts) return undefined;
  return (ts.seconds ?? 0) * 1000 + (ts.nanos ?? 0) / 1e6;
}

/** Seconds since the vertex started, as the plain printer shows them before a log line. */
function formatElapsed(ms: number): string {
  const sec = Math.max(0, ms) / 1000;
  return sec.toFixed(sec < 10 ? 3 : sec < 100 ? 2 : 1);
}

/** Byte counts like BuildKit's units.Bytes with %.2f: `37B`, `1.50kB`, `2.05MB`. */
function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let value = n;
  let i = 0;
  while (Math.abs(value) >= 1000 && i < units.length - 1) {
    value /= 1000;
    i++;
  }
  return i === 0 ? `${n}B` : `${value.toFixed(2)}${units[i]}`;
}

function lastExitCode(message: string): number | null {
  let code: number | null = null;
  for (const m of message.matchAll(EXIT_CODE_RE)) code = Number(m[1]);
  return code;
}

/** Applies the `\r` rule from the header to one line (without its `\n`). */
function settleCarriageReturns(line: string): string {
  const trimmed = line.replace(/\r+$/, '');
  return trimmed.slice(trimmed.lastIndexOf('\r') + 1);
}

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
  /** Text after the last newline, and the elapsed-time prefix of the chunk that began it. */
  partial: string;
  partialElapsed: string;
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

export class BuildProgressDecoder {
  private readonly now: () => number;
  private readonly vertices = new Map<string, VertexState>();
  /** The vertex whose block is being printed (its header was the last one). */
  private current: VertexState | null = null;
  private nextIndex = 0;
  private printedVertex = false;
  /** Vertex lines were printed since the last other text (which then starts after a blank line). */
  private blockOpen = false;
  private streamPartial = '';
  private readonly undecodable = new Map<string, number>();
  private imageId: string | null = null;
  private finalError: string | null = null;

  constructor(options?: { now?: () => number }) {
    this.now = options?.now ?? Date.now;
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
    const text = v.utf8.decode(log.msg ?? new Uint8Array(), { stream: true });
    if (text === '') return v;
    const elapsed = formatElapsed(
      logMs !== undefined && v.startRemote !== undefined ? logMs - v.startRemote : this.now() - v.startLocal,
    );
    const pieces = text.split('\n');
    const rest = pieces.pop() ?? '';
    for (const piece of pieces) {
      if (v.partial !== '') {
        v.queued.push(`${v.partialElapsed} ${settleCarriageReturns(v.partial + piece)}`);
        v.partial = '';
      } else {
        v.queued.push(`${elapsed} ${settleCarriageReturns(piece)}`);
      }
    }
    if (rest !== '') {
      if (v.partial === '') v.partialElapsed = elapsed;
      v.partial += rest;
      // Keep only the last rewrite of a `\r` progress line (a trailing `\r` may be half of `\r\n`).
      const cut = v.partial.length < 2 ? -1 : v.partial.lastIndexOf('\r', v.partial.length - 2);
      if (cut >= 0) v.partial = v.partial.slice(cut + 1);
      if (v.partial.length > MAX_PARTIAL_LINE) {
        v.queued.push(`${v.partialElapsed} ${settleCarriageReturns(v.partial)}`);
        v.partial = '';
      }
    }
    return v;
  }

  /** The buffered partial line (and any incomplete UTF-8 sequence) as `<elapsed> <text>`, or null if none. */
  private takePartial(v: VertexState): string | null {
    v.partial += v.utf8.decode(); // flushes and resets the decoder
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
    if (!v.showHeader && v.queued.length === 0) return '';
    let out = this.focus(v);
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
    let out = '';
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
        utf8: new TextDecoder(), partial: '', partialElapsed: '',
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
    this.current = null;
    return separator + (out.endsWith('\n') ? out : `${out}\n`);
  }

  /** One line per distinct reason; repeats are counted and summarised by end(). */
  private reportUndecodable(reason: string): string {
    const seen = this.undecodable.get(reason) ?? 0;
    this.undecodable.set(reason, seen + 1);
    return seen === 0 ? `[kiln] undecodable BuildKit progress event (${reason})\n` : '';
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
