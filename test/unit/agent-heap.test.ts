/**
 * `kiln agent`'s V8 settings (cli/agent-heap.ts) do what they are for on this Node: set
 * at run time, after the heap exists, they keep the young generation from growing while
 * the process allocates. A real node process allocates the same garbage with and without
 * them; without them V8 grows the young generation, which shows the check can fail (and
 * would, on a Node whose V8 no longer reads the flag at run time).
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { AGENT_V8_FLAGS } from '../../cli/agent-heap.js';

/** Allocates short-lived objects (as start-up does) after setting `flags`; returns the new space's size in bytes. */
function newSpaceAfterAllocating(flags: readonly string[]): number {
  const code = `
    const v8 = require('node:v8');
    for (const flag of JSON.parse(process.argv[1])) v8.setFlagsFromString(flag);
    let keep = [];
    for (let i = 0; i < 400000; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 50000) keep = []; }
    process.stdout.write(String(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size));
  `;
  return Number(execFileSync(process.execPath, ['-e', code, JSON.stringify(flags)], { encoding: 'utf8' }));
}

describe("kiln agent's V8 settings", () => {
  it('keep the young generation at its start-up size while the process allocates', () => {
    const MiB = 1024 * 1024;
    const withFlags = newSpaceAfterAllocating(AGENT_V8_FLAGS);
    const without = newSpaceAfterAllocating([]);
    // V8 starts it at 2 MiB (Node 20) and grows it to 16 MiB under this load.
    expect(withFlags).toBeLessThanOrEqual(4 * MiB);
    expect(without).toBeGreaterThanOrEqual(4 * withFlags);
  });
});
