/**
 * `kiln state migrate --from DATA_DIR --to postgres://…` (issue 14): moves an embedded
 * coordinator's state into an empty PostgreSQL database (coordinator/state/migrate-state.ts,
 * loaded only when this command runs) and prints what it moved; `--json` prints the counts as
 * one JSON line. The URL may also come from `KILN_STATE` (so the password need not be on the
 * command line). Not a client of the coordinator's API: it works on the files and the
 * database, with every coordinator stopped.
 */
import type { CliIO } from './commands.js';
import { CliError, EXIT } from './exit-codes.js';
import { writeJsonLine } from './json-lines.js';

export interface StateMigrateFlags {
  from?: string;
  to?: string;
  secretsKeyFile?: string;
  json?: boolean;
}

export async function stateMigrateCommand(flags: StateMigrateFlags, io: CliIO): Promise<number> {
  const from = flags.from?.trim();
  const to = (flags.to ?? io.env.KILN_STATE ?? '').trim();
  if (!from) throw new CliError('give the embedded coordinator\'s data dir: --from DATA_DIR', EXIT.USAGE);
  if (!to) throw new CliError('give the database: --to postgres://USER:PASSWORD@HOST:PORT/DATABASE (or KILN_STATE)', EXIT.USAGE);
  const { migrateState, migrateStateText } = await import('../coordinator/state/migrate-state.js');
  const result = await migrateState({ from, to, secretsKeyFile: flags.secretsKeyFile });
  if (flags.json) writeJsonLine(io.stdout, result);
  else io.stdout.write(migrateStateText(result));
  return EXIT.OK;
}
