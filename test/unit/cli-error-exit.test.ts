/**
 * How the CLI ends on an exception (cli/error-exit.ts): expected failures print one line
 * (plus a rejected spec's details) and their own exit code; a local file error or a
 * connection lost mid-response is exit 2, not a crash; only a genuine bug is exit 70, in
 * one line without a stack trace unless asked for (KILN_DEBUG). The daemons keep exit 70
 * with the stack for anything unexpected.
 */
import { readFile } from 'node:fs/promises';
import { CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { KilnError } from '../../shared/index.js';
import { errorExit } from '../../cli/error-exit.js';
import { CliError, EXIT } from '../../cli/exit-codes.js';

const noStack = {};

describe('errorExit', () => {
  it('prints a CliError and its details with its own code', () => {
    expect(errorExit(new CliError('token refused', EXIT.AUTH), noStack)).toEqual({ lines: ['kiln: token refused'], exitCode: 4 });
    expect(errorExit(new CliError('invalid spec s.yaml: a', EXIT.USAGE, ['a', 'b']), noStack)).toEqual({
      lines: ['kiln: invalid spec s.yaml: a', '  - a', '  - b'],
      exitCode: 2,
    });
  });

  it('maps KilnError to 78 for config errors, else 2; commander errors print nothing more', () => {
    expect(errorExit(new KilnError('E_CONFIG', 'bad config'), noStack).exitCode).toBe(78);
    expect(errorExit(new KilnError('E_NOT_FOUND', 'gone'), noStack)).toEqual({ lines: ['kiln: gone'], exitCode: 2 });
    expect(errorExit(new CommanderError(1, 'commander.unknownOption', 'x'), noStack)).toEqual({ lines: [], exitCode: 2 });
    expect(errorExit(new CommanderError(0, 'commander.helpDisplayed', '(help)'), noStack)).toEqual({ lines: [], exitCode: 0 });
  });

  it('treats a local file error as exit 2 in one line', async () => {
    const err = await readFile('/nonexistent/kiln-spec.yaml').catch((e: unknown) => e);
    const out = errorExit(err, noStack);
    expect(out.exitCode).toBe(2);
    expect(out.lines).toEqual(["kiln: ENOENT: no such file or directory, open '/nonexistent/kiln-spec.yaml'"]);
  });

  it('treats a response body cut off by the coordinator as a lost connection (exit 2)', () => {
    const cause = Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' });
    const err = new TypeError('terminated', { cause });
    expect(errorExit(err, noStack)).toEqual({ lines: ['kiln: lost the connection to the coordinator: UND_ERR_SOCKET: other side closed'], exitCode: 2 });
  });

  it('reports a genuine bug as exit 70 in one line, with the stack only when asked', () => {
    let bug: unknown;
    try {
      (undefined as unknown as { x: () => void }).x();
    } catch (err) {
      bug = err;
    }
    const out = errorExit(bug, noStack);
    expect(out.exitCode).toBe(70);
    expect(out.lines).toHaveLength(1);
    expect(out.lines[0]).toMatch(/^kiln: internal error \(a bug in kiln; run with KILN_DEBUG=1 for the stack trace\): TypeError: Cannot read properties of undefined/);
    expect(out.lines[0]).not.toContain('\n');
    const plain = errorExit(new TypeError('fetch failed'), noStack); // no cause with a code: not a lost connection
    expect(plain.exitCode).toBe(70);
    const debug = errorExit(bug, { debug: true });
    expect(debug.exitCode).toBe(70);
    expect(debug.lines.join('\n')).toMatch(/\n\s+at /);
    expect(errorExit('a string', noStack)).toEqual({ lines: ['kiln: internal error (a bug in kiln; run with KILN_DEBUG=1 for the stack trace): a string'], exitCode: 70 });
  });

  it('keeps exit 70 and the stack trace for the daemons, even for a system error', async () => {
    const err = await readFile('/nonexistent/state.json').catch((e: unknown) => e);
    const out = errorExit(err, { daemon: true });
    expect(out.exitCode).toBe(70);
    expect(out.lines[0]).toMatch(/^kiln: Error: ENOENT: no such file or directory, open '\/nonexistent\/state\.json'\n\s+at /);
    expect(errorExit(new CliError('bad flag', EXIT.USAGE), { daemon: true })).toEqual({ lines: ['kiln: bad flag'], exitCode: 2 });
  });
});
