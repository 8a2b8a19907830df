/**
 * Following logs: turns a node's (or a whole build's) attempt files plus live appends
 * into a sequence of events for the SSE routes.
 *
 * Offsets are node-level byte offsets (see log-store.ts). While a node is still
 * running, text is cut at the last newline, so a multi-byte UTF-8 character is never
 * split and clients always get whole lines; a partial line is sent anyway when nothing
 * new arrived for a while, cut at a character boundary. When the node is done (terminal,
 * and no attempt can still write) everything is sent and the stream ends.
 */
import { isNodeTerminal, SLOT_HOLDING_ATTEMPT_STATES, type FollowEvent, type Listener, type NodeState } from '../../shared/index.js';
import type { BuildRecord, NodeRecord } from '../state/records.js';
import type { LogStore } from './log-store.js';

/**
 * What the follower yields: the log stream's events (shared/log-events.ts), a `log` event
 * with the node offset after its text, and `complete`.
 */
export type FollowerEvent =
  | (Extract<FollowEvent, { type: 'log' }> & { offset: number })
  | Exclude<FollowEvent, { type: 'log' }>
  /** The node is done and every byte of its log was yielded (for cursors; not sent to clients). */
  | { type: 'complete'; node: string };

const MAX_EVENT_BYTES = 64 * 1024;
/**
 * A partial line is sent once nothing more came for this long. The agent itself sends a
 * partial line only after 100 ms of quiet (agent/executors/docker-executor.ts), so a prompt
 * reaches a client about 0.3 s after it is printed.
 */
const PARTIAL_FLUSH_MS = 200;
const KEEPALIVE_MS = 15_000;

/** Largest prefix length of `buf` that does not end inside a UTF-8 sequence. */
export function utf8SafeLength(buf: Uint8Array): number {
  let end = buf.length;
  // Walk back over at most 3 continuation bytes to the start of the last character.
  let i = end - 1;
  let cont = 0;
  while (i >= 0 && cont < 3 && (buf[i]! & 0xc0) === 0x80) {
    i--;
    cont++;
  }
  if (i < 0) return end;
  const lead = buf[i]!;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  if (need > cont + 1) end = i;
  return end;
}

/** Where to cut `chunk` while its node is still writing: after the last newline, or null. */
function lineCut(chunk: Buffer): number | null {
  const nl = chunk.lastIndexOf(10);
  return nl >= 0 ? nl + 1 : null;
}

export function nodeDone(node: NodeRecord): boolean {
  if (!isNodeTerminal(node.state)) return false;
  const last = node.attempts[node.attempts.length - 1];
  return !last || !SLOT_HOLDING_ATTEMPT_STATES.has(last.state);
}

/** Build changes a follower waits for (the engine's events; builds/ is not imported here). */
export interface BuildChangeEvents {
  /** A node of the build changed state. */
  node: [buildId: string, node: string];
  /** The build's state changed. */
  build: [buildId: string];
}

/** Where builds come from and how their changes are heard (the engine, passed in). */
export interface BuildSource {
  getBuild(id: string): Promise<BuildRecord | null>;
  on<K extends keyof BuildChangeEvents>(event: K, listener: Listener<BuildChangeEvents[K]>): unknown;
  off<K extends keyof BuildChangeEvents>(event: K, listener: Listener<BuildChangeEvents[K]>): unknown;
}

export interface FollowDeps {
  engine: BuildSource;
  logs: LogStore;
}

/**
 * Watches one build for changes (node states, log bytes) for the life of a follower.
 * Events that arrive while the follower is busy reading are remembered (`dirty`), so a
 * change can never slip between a poll and the next wait.
 */
class BuildWatch {
  private dirty = true;
  private wake: (() => void) | null = null;
  private readonly onEvent = (id: string) => {
    if (id !== this.buildId) return;
    this.dirty = true;
    this.wake?.();
  };

  constructor(
    private readonly deps: FollowDeps,
    private readonly buildId: string,
  ) {
    deps.engine.on('node', this.onEvent);
    deps.engine.on('build', this.onEvent);
    deps.logs.on('append', this.onEvent);
  }

  /** Call before reading: clears the dirty flag. */
  begin(): void {
    this.dirty = false;
  }

  /** Resolves at once if something changed since begin(), else on the next change, after `ms`, or on abort. */
  wait(ms: number, signal: AbortSignal): Promise<'change' | 'timeout'> {
    if (this.dirty) return Promise.resolve('change');
    return new Promise((resolve) => {
      const finish = (r: 'change' | 'timeout') => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.wake = null;
        resolve(r);
      };
      const timer = setTimeout(() => finish('timeout'), ms);
      const onAbort = () => finish('timeout');
      signal.addEventListener('abort', onAbort, { once: true });
      this.wake = () => finish('change');
    });
  }

  close(): void {
    this.deps.engine.off('node', this.onEvent);
    this.deps.engine.off('build', this.onEvent);
    this.deps.logs.off('append', this.onEvent);
    this.wake = null;
  }
}

interface Cursor {
  offset: number;
  /** `complete` was yielded. */
  completeSent: boolean;
  lastState: NodeState | null;
  lastAttempts: number;
  /** When a partial line was first seen waiting (for the partial flush). */
  partialSince: number | null;
}

/**
 * Reads what is new for one node since `cur.offset`. Returns events to send and whether
 * the node has nothing more to say.
 */
async function pollNode(
  deps: FollowDeps,
  build: BuildRecord,
  node: NodeRecord,
  cur: Cursor,
  now: number,
  wholeBytes: boolean,
): Promise<{ events: FollowerEvent[]; done: boolean; partial: boolean }> {
  const events: FollowerEvent[] = [];
  if (node.state !== cur.lastState || node.attempts.length !== cur.lastAttempts) {
    cur.lastState = node.state;
    cur.lastAttempts = node.attempts.length;
    events.push({ type: 'status', node: node.name, state: node.state, attempt: node.attempts.length });
  }
  const done = nodeDone(node);
  const sizes = await deps.logs.nodeSizes(build.id, node.name, node.attempts.length);
  const total = sizes.reduce((a, b) => a + b, 0);
  let partial = false;
  while (cur.offset < total) {
    const chunk = await deps.logs.read(build.id, node.name, sizes, cur.offset, Math.min(total, cur.offset + MAX_EVENT_BYTES));
    if (chunk.length === 0) break;
    // A chunk cut by the event size (not at the end) must not split a character.
    let len = cur.offset + chunk.length < total ? utf8SafeLength(chunk) || chunk.length : chunk.length;
    if (!done && !wholeBytes) {
      const cut = lineCut(chunk);
      if (cut !== null) {
        len = cut;
        cur.partialSince = null;
      } else if (chunk.length >= MAX_EVENT_BYTES || (cur.partialSince !== null && now - cur.partialSince >= PARTIAL_FLUSH_MS)) {
        len = utf8SafeLength(chunk) || chunk.length;
        cur.partialSince = null;
      } else {
        cur.partialSince ??= now;
        partial = true;
        break;
      }
    }
    const text = chunk.subarray(0, len);
    cur.offset += len;
    events.push({ type: 'log', node: node.name, text: text.toString('utf8'), offset: cur.offset });
    if (len < chunk.length && !done && !wholeBytes) {
      // the rest is a partial line: wait for its newline
      if (lineCut(chunk.subarray(len)) === null) {
        cur.partialSince ??= now;
        partial = true;
        break;
      }
    }
  }
  return { events, done: done && cur.offset >= total, partial };
}

export interface FollowOptions {
  buildId: string;
  /** One node, or null for every node of the build. */
  node: string | null;
  /** Starting offsets by node name. */
  offsets: Map<string, number>;
  follow: boolean;
  signal: AbortSignal;
  now?: () => number;
}

/**
 * Yields log, status and end events until the node (or every node) is done, the
 * client goes away, or (without `follow`) the stored text has been sent. Yields `null`
 * as a keep-alive when nothing happened for a while.
 */
export async function* followLogs(deps: FollowDeps, opts: FollowOptions): AsyncGenerator<FollowerEvent | null> {
  const now = opts.now ?? Date.now;
  const cursors = new Map<string, Cursor>();
  const watch = new BuildWatch(deps, opts.buildId);
  try {
    for (;;) {
      watch.begin();
      const build = await deps.engine.getBuild(opts.buildId);
      if (!build) return;
      const nodes = opts.node === null ? build.nodes : build.nodes.filter((n) => n.name === opts.node);
      let allDone = true;
      let anyPartial = false;
      for (const node of nodes) {
        let cur = cursors.get(node.name);
        if (!cur) {
          cur = { offset: opts.offsets.get(node.name) ?? 0, completeSent: false, lastState: null, lastAttempts: -1, partialSince: null };
          cursors.set(node.name, cur);
        }
        const r = await pollNode(deps, build, node, cur, now(), !opts.follow);
        for (const e of r.events) yield e;
        if (r.done && !cur.completeSent) {
          cur.completeSent = true;
          yield { type: 'complete', node: node.name };
        }
        if (!r.done) allDone = false;
        if (r.partial) anyPartial = true;
        if (opts.signal.aborted) return;
      }
      if (allDone) {
        const state = opts.node === null ? build.state : (nodes[0]?.state ?? build.state);
        yield { type: 'end', state };
        return;
      }
      if (!opts.follow) return;
      const r = await watch.wait(anyPartial ? PARTIAL_FLUSH_MS : KEEPALIVE_MS, opts.signal);
      if (opts.signal.aborted) return;
      if (r === 'timeout' && !anyPartial) yield null;
    }
  } finally {
    watch.close();
  }
}
