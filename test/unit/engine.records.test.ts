/**
 * Engine writes go through one place (coordinator/builds/engine-records.ts), which marks
 * what it changes for the state journal in the same call. Checked on the source of the
 * engine's modules (engine*.ts): none of them reaches into `store.data` or calls the
 * store's mark methods, and every assignment to a field of a build, node or attempt is
 * inside a change callback given to `records.build/node/attempt` (or to `setNode`, which
 * passes it on), so a write that would not be journaled does not get past this test.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const DIR = join(import.meta.dirname, '..', '..', 'coordinator', 'builds');
/** Roots that are not records: the engine state, the class itself, agent registry entries. */
const NOT_RECORDS = new Set(['s', 'this', 'entry']);
/** Parameter names of change callbacks (n: node, a: attempt, b: build). */
const CALLBACK_PARAMS = new Set(['n', 'a', 'b']);
/** Calls whose callback argument is a recorded change. */
const RECORDING_CALLS = /(?:records\.(?:node|attempt|build)|setNode)\($/;

async function engineModules(): Promise<Array<{ file: string; code: string }>> {
  const files = (await readdir(DIR)).filter((f) => /^engine.*\.ts$/.test(f) && f !== 'engine-records.ts');
  return Promise.all(
    files.map(async (file) => ({
      file,
      // Comments out, so prose about `store.data` does not count.
      code: (await readFile(join(DIR, file), 'utf8')).replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, ' ')).replace(/\/\/.*$/gm, (m) => ' '.repeat(m.length)),
    })),
  );
}

/** [start, end) ranges of the bodies of change callbacks given to recording calls. */
function recordedBlocks(code: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const m of code.matchAll(/\((n|a|b)\) => \{/g)) {
    // The call this callback is an argument of: walk back to the unclosed '('.
    let depth = 0;
    let i = m.index - 1;
    for (; i >= 0; i--) {
      const c = code[i];
      if (c === ')') depth++;
      else if (c === '(') {
        if (depth === 0) break;
        depth--;
      }
    }
    if (i < 0 || !RECORDING_CALLS.test(code.slice(Math.max(0, i - 40), i + 1))) continue;
    let braces = 0;
    let j = m.index + m[0].length - 1;
    for (; j < code.length; j++) {
      if (code[j] === '{') braces++;
      else if (code[j] === '}' && --braces === 0) break;
    }
    out.push([m.index, j]);
  }
  return out;
}

describe('engine records: every write is recorded', () => {
  it('never reaches into the store data or its mark methods outside engine-records.ts', async () => {
    const offenders: string[] = [];
    for (const { file, code } of await engineModules()) {
      for (const m of code.matchAll(/store\.data\b|\.mark(?:New|Build|Node|NodeFields|Attempt|DeadLetter|Control)\(/g)) offenders.push(`${file}: ${m[0]}`);
    }
    expect(offenders).toEqual([]);
  });

  it('changes builds, nodes and attempts only inside recorded change callbacks', async () => {
    const offenders: string[] = [];
    let checked = 0;
    for (const { file, code } of await engineModules()) {
      const blocks = recordedBlocks(code);
      for (const m of code.matchAll(/\b([A-Za-z_]+)((?:\.[A-Za-z_]+)+)\s*(?:=(?![=>])|\?\?=|\+=|-=|\+\+|--)/g)) {
        const root = m[1]!;
        if (NOT_RECORDS.has(root)) continue;
        checked++;
        const inside = CALLBACK_PARAMS.has(root) && blocks.some(([from, to]) => m.index > from && m.index < to);
        if (!inside) offenders.push(`${file}: ${m[0]}`);
      }
      for (const m of code.matchAll(/\.attempts\.push\(/g)) offenders.push(`${file}: ${m[0]} (use records.addAttempt)`);
    }
    expect(offenders).toEqual([]);
    expect(checked).toBeGreaterThan(40); // the scan sees the writes
  });
});
