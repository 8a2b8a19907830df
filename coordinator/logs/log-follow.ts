/**
 * Following logs: turns a node's (or a whole build's) attempt logs plus live appends
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
import type { LogStorage } from './log-storage.js';

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
/** A batch (one pass over the nodes) carries about this much text at most: memory stays bounded
 * however far behind a reader is. */
const MAX_BATCH_BYTES = 256 * 1024;
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
  logs: LogStorage;
}

/**
 * Watches one build for changes (node states, log bytes) for the life of a follower, and
 * remembers which nodes changed: a follower of a build of many nodes reads only those.
 * Events that arrive while the follower is busy reading are kept until take(), so a
 * change can never slip between a poll and the next wait.
 */
class BuildWatch {
  /** Nodes that changed since the last take(); 'all' for the first pass and after a build event. */
  private changed: Set<string> | 'all' = 'all';
  private wake: (() => void) | null = null;
  private readonly onNode = (id: string, node: string) => {
    if (id !== this.buildId) return;
    if (this.changed !== 'all') this.changed.add(node);
    this.wake?.();
  };
  private readonly onBuild = (id: string) => {
    if (id !== this.buildId) return;
    this.changed = 'all';
    this.wake?.();
  };

  constructor(
    private readonly deps: FollowDeps,
    private readonly buildId: string,
  ) {
    deps.engine.on('node', this.onNode);
    deps.engine.on('build', this.onBuild);
    deps.logs.on('append', this.onNode);
  }

  /** Call before reading: the nodes that changed since the last call (and forgets them). */
  take(): ReadonlySet<string> | 'all' {
    const changed = this.changed;
    this.changed = new Set();
    return changed;
  }

  /** Resolves at once if something changed since take(), else on the next change, after `ms`, or on abort. */
  wait(ms: number, signal: AbortSignal): Promise<'change' | 'timeout'> {
    if (this.changed === 'all' || this.changed.size > 0) return Promise.resolve('change');
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
    this.deps.engine.off('node', this.onNode);
    this.deps.engine.off('build', this.onBuild);
    this.deps.logs.off('append', this.onNode);
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
  /** What the last poll found: the node is done, a partial line waits, more bytes wait than were read. */
  polled: boolean;
  done: boolean;
  partial: boolean;
  more: boolean;
}

/**
 * Reads what is new for one node since `cur.offset`, up to about `maxBytes`. Returns the
 * events to send and the bytes they carry, and updates the cursor's findings.
 */
async function pollNode(
  deps: FollowDeps,
  build: BuildRecord,
  node: NodeRecord,
  cur: Cursor,
  now: number,
  wholeBytes: boolean,
  maxBytes: number,
): Promise<{ events: FollowerEvent[]; bytes: number }> {
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
  let bytes = 0;
  while (cur.offset < total && bytes < maxBytes) {
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
    bytes += len;
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
  cur.polled = true;
  cur.partial = partial;
  cur.more = !partial && cur.offset < total;
  cur.done = done && cur.offset >= total;
  return { events, bytes };
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
 * client goes away, or (without `follow`) the stored text has been sent. Events come in
 * batches, one per pass over the nodes that changed (the SSE route writes a batch at
 * once), of about MAX_BATCH_BYTES of text at most. Yields `null` as a keep-alive when
 * nothing happened for a while.
 */
export async function* followLogs(deps: FollowDeps, opts: FollowOptions): AsyncGenerator<FollowerEvent[] | null> {
  const now = opts.now ?? Date.now;
  const cursors = new Map<string, Cursor>();
  const watch = new BuildWatch(deps, opts.buildId);
  /** Where a pass starts: after a pass cut short by the batch size, at the node it did not finish. */
  let start = 0;
  try {
    for (;;) {
      const changed = watch.take();
      const build = await deps.engine.getBuild(opts.buildId);
      if (!build) return;
      const nodes = opts.node === null ? build.nodes : build.nodes.filter((n) => n.name === opts.node);
      const batch: FollowerEvent[] = [];
      let room = MAX_BATCH_BYTES;
      let allDone = true;
      let anyPartial = false;
      let anyMore = false;
      const first = start;
      let next: number | null = null;
      for (let i = 0; i < nodes.length; i++) {
        const at = (first + i) % nodes.length;
        const node = nodes[at]!;
        let cur = cursors.get(node.name);
        if (!cur) {
          cur = { offset: opts.offsets.get(node.name) ?? 0, completeSent: false, lastState: null, lastAttempts: -1, partialSince: null, polled: false, done: false, partial: false, more: false };
          cursors.set(node.name, cur);
        }
        const due = !cur.polled || changed === 'all' || changed.has(node.name) || cur.partial || cur.more;
        if (due && room > 0) {
          const r = await pollNode(deps, build, node, cur, now(), !opts.follow, room);
          for (const e of r.events) batch.push(e);
          room -= r.bytes;
          if (cur.done && !cur.completeSent) {
            cur.completeSent = true;
            batch.push({ type: 'complete', node: node.name });
          }
          if (opts.signal.aborted) return;
        } else if (due) {
          cur.more = true; // no room left in this batch: the next pass starts here
        }
        if (cur.more) next ??= at;
        if (!cur.done) allDone = false;
        if (cur.partial) anyPartial = true;
        if (cur.more) anyMore = true;
      }
      start = next ?? 0;
      if (allDone) {
        batch.push({ type: 'end', state: opts.node === null ? build.state : (nodes[0]?.state ?? build.state) });
        yield batch;
        return;
      }
      if (batch.length > 0) yield batch;
      if (opts.signal.aborted) return;
      if (anyMore) continue; // more than one batch was waiting
      if (!opts.follow) return;
      const r = await watch.wait(anyPartial ? PARTIAL_FLUSH_MS : KEEPALIVE_MS, opts.signal);
      if (opts.signal.aborted) return;
      if (r === 'timeout' && !anyPartial) yield null;
      // Let the writes that finished with this one report first: the frames an agent sends
      // together are then read in one pass (one SSE write), not one pass each.
      if (r === 'change') await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    watch.close();
  }
}
