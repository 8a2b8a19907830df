/**
 * The state journal's text as a reader sees it: the file up to its first NUL byte (the
 * journal writer preallocates zeros past its end; see coordinator/state/journal-writer.ts).
 */
import { readFile } from 'node:fs/promises';

export async function journalText(path: string): Promise<string> {
  const raw = await readFile(path);
  const end = raw.indexOf(0);
  return (end < 0 ? raw : raw.subarray(0, end)).toString('utf8');
}
