/**
 * The CLI's exit codes, documented in the README:
 *   0 the build succeeded (or the command worked)
 *   1 the build failed (or finished `partial`)
 *   2 usage error, invalid spec, or the coordinator could not be reached
 *   3 the build was cancelled
 *   4 the coordinator refused the token
 *   130 interrupted (Ctrl-C); the build keeps running on the coordinator
 * and, for any command, 70 (EX_SOFTWARE, a bug in kiln; error-exit.ts) and 78 (EX_CONFIG,
 * a bad config; defined once in shared/config-values.ts for the CLI, coordinator and agent).
 */
export const EXIT = { OK: 0, BUILD_FAILED: 1, USAGE: 2, CANCELLED: 3, AUTH: 4, INTERRUPTED: 130 } as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly details: string[] = [],
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export function exitCodeForBuildState(state: string): number {
  if (state === 'success') return EXIT.OK;
  if (state === 'cancelled') return EXIT.CANCELLED;
  return EXIT.BUILD_FAILED;
}
