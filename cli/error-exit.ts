/**
 * How a command that ends with an exception ends the process: the lines printed on
 * stderr and the exit code. Expected failures say what happened in one line (plus the
 * details of a rejected spec): CliError with its own code, KilnError (78 for bad config,
 * else 2), and for client commands a connection to the coordinator lost mid-response (2)
 * or a local file or network error (2, like "cannot read spec"). Anything else is a bug
 * in kiln: exit 70 (EX_SOFTWARE) with one line naming the error, the stack trace only
 * with KILN_DEBUG set. The long-running `coordinator` and `agent` commands (`daemon`)
 * keep what they always did for those: exit 70 with the stack trace, for their logs.
 */
import { CommanderError } from 'commander';
import { EX_CONFIG, KilnError } from '../shared/core.js';
import { CliError, EXIT } from './exit-codes.js';

export const EX_SOFTWARE = 70;

export interface ErrorExit {
  /** Lines for stderr, without newlines. */
  lines: string[];
  exitCode: number;
}

export interface ErrorExitOptions {
  /** `kiln coordinator` or `kiln agent` was running. */
  daemon?: boolean;
  /** KILN_DEBUG: print the stack trace of an unexpected error. */
  debug?: boolean;
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A Node.js system error (ENOENT, EACCES, ECONNRESET, ...): the environment, not a bug. */
function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && /^E[A-Z0-9_]+$/.test(codeOf(err) ?? '') && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

/**
 * undici's failures of a response body after the headers came (`TypeError: terminated`,
 * cause `UND_ERR_SOCKET` / `ECONNRESET`): the coordinator went away mid-answer.
 */
function lostConnection(err: unknown): string | null {
  if (!(err instanceof TypeError)) return null;
  const cause = (err as { cause?: unknown }).cause;
  const code = codeOf(cause);
  if (code === undefined || !(code.startsWith('UND_ERR') || /^E[A-Z0-9_]+$/.test(code))) return null;
  return `${code}${cause instanceof Error && cause.message ? `: ${firstLine(cause.message)}` : ''}`;
}

export function errorExit(err: unknown, opts: ErrorExitOptions): ErrorExit {
  if (err instanceof CommanderError) {
    // commander has printed its message (and the help) already
    return { lines: [], exitCode: err.exitCode === 0 ? EXIT.OK : EXIT.USAGE };
  }
  if (err instanceof CliError) {
    return { lines: [`kiln: ${err.message}`, ...err.details.map((d) => `  - ${d}`)], exitCode: err.exitCode };
  }
  if (err instanceof KilnError) {
    return { lines: [`kiln: ${err.message}`, ...err.errors.map((e) => `  - ${e.message}`)], exitCode: err.code === 'E_CONFIG' ? EX_CONFIG : EXIT.USAGE };
  }
  if (opts.daemon) return { lines: [`kiln: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`], exitCode: EX_SOFTWARE };
  const lost = lostConnection(err);
  if (lost !== null) return { lines: [`kiln: lost the connection to the coordinator: ${lost}`], exitCode: EXIT.USAGE };
  if (isSystemError(err)) return { lines: [`kiln: ${firstLine(err.message)}`], exitCode: EXIT.USAGE };
  const what = err instanceof Error ? `${err.name}: ${firstLine(err.message)}` : firstLine(String(err));
  if (opts.debug && err instanceof Error && err.stack) return { lines: [`kiln: internal error: ${err.stack}`], exitCode: EX_SOFTWARE };
  return { lines: [`kiln: internal error (a bug in kiln; run with KILN_DEBUG=1 for the stack trace): ${what}`], exitCode: EX_SOFTWARE };
}
