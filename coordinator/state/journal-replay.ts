/**
 * Replay of the state journal (`journal.jsonl`) onto the state read from the snapshot, at
 * startup. Every complete line is checked by `entryProblem` (the same check the store
 * runs before it appends a line) and applied as an idempotent upsert, so replaying lines
 * the snapshot already holds (a crash between a snapshot and the journal swap) is
 * harmless. A final line without its newline is a write that was never acknowledged and
 * is dropped; any other bad line is corruption and stops the coordinator with the file and
 * line named. The journal file itself is left to the writer (`JournalWriter.recover`).
 */
import { readFile } from 'node:fs/promises';
import { KilnError, coerceError, errnoCode } from '../../shared/index.js';
import { entryProblem, type JournalEntry } from './journal-entries.js';
import { applyNodeHead, attemptFromTuple } from './node-delta.js';
import type { BuildRecord, NodeRecord, StateData } from './records.js';

/** A build's nodes by name (the store's cached index). */
export type NodesByName = (b: BuildRecord) => Map<string, NodeRecord>;

/**
 * Reads the journal at `journalPath` and applies it to `data`. Returns the byte length of
 * the lines replayed and whether a torn final line followed them.
 */
export async function replayJournal(journalPath: string, statePath: string, data: StateData, nodesByName: NodesByName): Promise<{ bytes: number; torn: boolean }> {
  let text: string;
  try {
    text = await readFile(journalPath, 'utf8');
  } catch (err) {
    const what = errnoCode(err) === 'ENOENT' ? 'is missing' : `cannot be read (${errnoCode(err) ?? coerceError(err).message})`;
    throw new KilnError('E_STATE', `state journal ${journalPath} ${what}; it holds changes newer than ${statePath}. Restore it from a backup.`, { cause: err });
  }
  const lines = text.split('\n');
  const torn = lines.pop() ?? ''; // text after the last newline: an unacknowledged partial write
  lines.forEach((line, i) => {
    if (!line) return;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch (err) {
      throw new KilnError('E_STATE', `state journal ${journalPath} is corrupt at line ${i + 1} (${coerceError(err).message}); it was left as it is for inspection`);
    }
    const problem = entryProblem(entry, data, (b, name) => nodesByName(b).get(name));
    if (problem) throw new KilnError('E_STATE', `state journal ${journalPath} line ${i + 1}: ${problem}; it was left as it is for inspection`);
    applyEntry(data, entry as JournalEntry, nodesByName);
  });
  return { bytes: Buffer.byteLength(text) - Buffer.byteLength(torn), torn: torn !== '' };
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
    case 'delta': {
      const b = builds.get(e.id);
      const n = b ? nodesByName(b).get(e.name) : undefined;
      if (!n) return; // archived later in the journal: the archive file has it
      for (let k = 0; k < e.a.length; k++) n.attempts[e.i + k] = attemptFromTuple(e.a[k]!);
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
