/**
 * Replay of the state journal (`journal.jsonl`) onto the state read from the snapshot, at
 * startup. Every complete line is checked by `entryProblem` (the same check the store
 * runs before it appends a line) and applied as an idempotent upsert, so replaying lines
 * the snapshot already holds (a crash between a snapshot and the journal swap) is
 * harmless. The text ends at the first NUL byte (the writer preallocates zeros past it);
 * a final line without its newline is a write that was never acknowledged and is dropped,
 * and so are non-zero bytes a crash left within one write piece after that NUL. Any other
 * bad line, or non-zero bytes further on, is corruption and stops the coordinator with the
 * file and place named. The journal file itself is left to the writer (`JournalWriter.recover`).
 */
import { readFile } from 'node:fs/promises';
import { KilnError, coerceError, errnoCode } from '../../shared/index.js';
import { entryProblem, type JournalEntry } from './journal-entries.js';
import { JOURNAL_WRITE_PIECE } from './journal-writer.js';
import { applyAttemptPatch, applyNodeHead, attemptFromTuple } from './node-delta.js';
import type { BuildRecord, NodeRecord, StateData } from './records.js';

/** A build's nodes by name (the store's cached index). */
export type NodesByName = (b: BuildRecord) => Map<string, NodeRecord>;

/**
 * Reads the journal at `journalPath` and applies it to `data`. Returns the byte length of
 * the lines replayed and whether a torn final line followed them.
 */
export async function replayJournal(journalPath: string, statePath: string, data: StateData, nodesByName: NodesByName): Promise<{ bytes: number; torn: boolean }> {
  let raw: Buffer;
  try {
    raw = await readFile(journalPath);
  } catch (err) {
    const what = errnoCode(err) === 'ENOENT' ? 'is missing' : `cannot be read (${errnoCode(err) ?? coerceError(err).message})`;
    throw new KilnError('E_STATE', `state journal ${journalPath} ${what}; it holds changes newer than ${statePath}. Restore it from a backup.`, { cause: err });
  }
  const end = raw.indexOf(0);
  const text = (end < 0 ? raw : raw.subarray(0, end)).toString('utf8');
  let tornTail = false;
  if (end >= 0) {
    // Past the text: zeros, and what a crash in the middle of one write piece left.
    const stray = firstNonZero(raw, end + JOURNAL_WRITE_PIECE);
    if (stray >= 0) throw new KilnError('E_STATE', `state journal ${journalPath} is corrupt: data at byte ${stray}, after its end at byte ${end}; it was left as it is for inspection`);
    tornTail = firstNonZero(raw.subarray(0, end + JOURNAL_WRITE_PIECE), end) >= 0;
  }
  const lines = text.split('\n');
  const torn = lines.pop() ?? ''; // text after the last newline: an unacknowledged partial write
  applyJournalLines(lines, `state journal ${journalPath}`, data, nodesByName);
  return { bytes: Buffer.byteLength(text) - Buffer.byteLength(torn), torn: torn !== '' || tornTail };
}

/**
 * Checks and applies journal lines (without their newlines; empty ones are skipped) to
 * `data`. A line that is not JSON, or that `entryProblem` refuses, stops it with an E_STATE
 * naming `where` (a file, a database row) and the line; what was applied before stays.
 */
export function applyJournalLines(lines: readonly string[], where: string, data: StateData, nodesByName: NodesByName): void {
  lines.forEach((line, i) => {
    if (!line) return;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch (err) {
      throw new KilnError('E_STATE', `${where} is corrupt at line ${i + 1} (${coerceError(err).message}); it was left as it is for inspection`);
    }
    const problem = entryProblem(entry, data, (b, name) => nodesByName(b).get(name));
    if (problem) throw new KilnError('E_STATE', `${where} line ${i + 1}: ${problem}; it was left as it is for inspection`);
    applyEntry(data, entry as JournalEntry, nodesByName);
  });
}

const ZERO_BLOCK = Buffer.alloc(64 * 1024);

/** The offset of the first non-zero byte of `buf` at or after `from`, or -1. */
export function firstNonZero(buf: Buffer, from: number): number {
  for (let at = from; at < buf.length; at += ZERO_BLOCK.length) {
    const block = buf.subarray(at, at + ZERO_BLOCK.length);
    if (block.equals(ZERO_BLOCK.subarray(0, block.length))) continue;
    for (let i = 0; i < block.length; i++) if (block[i] !== 0) return at + i;
  }
  return -1;
}

/** Applies an entry `entryProblem` accepted. */
export function applyEntry(data: StateData, e: JournalEntry, nodesByName: NodesByName): void {
  const { builds, archived } = data;
  switch (e.t) {
    case 'new':
      if (!archived.has(e.b.id)) builds.set(e.b.id, e.b);
      return;
    case 'build': {
      const b = builds.get(e.b.id);
      if (b) Object.assign(b, e.b); // else archived later in the journal: the archive file has it
      return;
    }
    case 'node': {
      const b = builds.get(e.id);
      const n = b ? nodesByName(b).get(e.name) : undefined;
      if (n) Object.assign(n, e.n);
      return;
    }
    case 'delta':
    case 'patch': {
      const b = builds.get(e.id);
      const n = b ? nodesByName(b).get(e.name) : undefined;
      if (!n) return; // archived later in the journal: the archive file has it
      for (let k = 0; k < e.a.length; k++) n.attempts[e.i + k] = attemptFromTuple(e.a[k]!);
      // A patch's attempt is before `i` (entryProblem), so it exists: `i` is at most the node's attempt count.
      if (e.t === 'patch') for (const p of e.p) applyAttemptPatch(n.attempts[p[0] as number]!, p);
      if (e.n) applyNodeHead(n, e.n);
      return;
    }
    case 'archive':
      builds.delete(e.id);
      archived.set(e.id, e.s);
      return;
    case 'revive':
      archived.delete(e.b.id);
      builds.set(e.b.id, e.b);
      return;
    case 'dlq':
      if (e.r) data.deadLetter.set(e.k, e.r);
      else data.deadLetter.delete(e.k);
      return;
    case 'control':
      if (e.r) data.agentControls.set(e.name, e.r);
      else data.agentControls.delete(e.name);
      return;
  }
}
