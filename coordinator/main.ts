/**
 * `kiln coordinator`: loads the config, starts the coordinator, tells the user where
 * its data and tokens are, and stops cleanly on SIGTERM/SIGINT (a second signal exits
 * at once); SIGHUP reloads what can change without a restart (the TLS certificate and
 * key: systemd's ExecReload sends it). Exit 78 (EX_CONFIG) for errors a restart cannot fix: bad config, a missing
 * or corrupt state file, a data dir locked by another coordinator. `COORDINATOR_COMMAND`
 * is what the CLI needs to declare the command: its flags, made from the settings table.
 * SIGHUP (`systemctl reload kiln-coordinator`) re-reads the config and applies what can
 * change without a restart (the log level); a config that no longer loads is logged and
 * the running settings stay.
 * The CLI imports this module only to run `kiln coordinator` (or show its help).
 */
import { coerceError, createLogger, EX_CONFIG, isKilnError, KILN_VERSION, settingFlags, settingsHelpFooter, type FlagSpec } from '../shared/index.js';
import { COORDINATOR_OPTIONS, COORDINATOR_SETTINGS, loadCoordinatorConfig, type CoordinatorFlags } from './config.js';
import { startCoordinator } from './coordinator.js';

export interface CoordinatorProcessHost {
  env: Record<string, string | undefined>;
  arch: string;
  isTTY: boolean;
  onSignal: (handler: (signal: string) => void) => void;
  /** SIGHUP: reload (absent: no reload signal). */
  onReload?: (handler: (signal: string) => void) => void;
  /** Human-readable start-up lines (stderr). */
  print: (line: string) => void;
}

export async function runCoordinator(flags: CoordinatorFlags, host: CoordinatorProcessHost): Promise<number> {
  const config = loadCoordinatorConfig(flags, { env: host.env, arch: host.arch, isTTY: host.isTTY });
  const logger = createLogger({ name: 'kiln-coordinator', level: config.log.level, format: config.log.format, env: host.env });
  let running;
  try {
    running = await startCoordinator(config, logger);
  } catch (err) {
    if (isKilnError(err) && ['E_CONFIG', 'E_STATE', 'E_LOCKED'].includes(err.code)) {
      host.print(`kiln coordinator: ${err.message}`);
      return EX_CONFIG;
    }
    throw err;
  }
  const created = new Set(running.tokens.created);
  host.print(`kiln coordinator ${KILN_VERSION} listening on ${running.url}`);
  host.print(`  data dir:    ${running.dataDir}${running.initialized ? ' (new)' : ` (${running.recovered})`}`);
  host.print(`  agent token: ${running.tokens.agentTokenFile}${created.has(running.tokens.agentTokenFile) ? ' (created)' : ''}`);
  host.print(`  API token:   ${running.tokens.apiTokenFile}${created.has(running.tokens.apiTokenFile) ? ' (created)' : ''}`);
  host.print(`  start an agent: kiln agent --coordinator ${running.url} --token-file ${running.tokens.agentTokenFile}`);
  process.on('SIGHUP', () => {
    try {
      const next = loadCoordinatorConfig(flags, { env: host.env, arch: host.arch, isTTY: host.isTTY });
      logger.level = next.log.level;
      logger.info({ signal: 'SIGHUP', log_level: next.log.level }, 'reload: log level re-read; other settings take effect at the next restart');
    } catch (err) {
      logger.error({ signal: 'SIGHUP', err: coerceError(err).message }, 'reload failed: the config does not load; running settings kept');
    }
  });
  let stopping: Promise<void> | null = null;
  host.onReload?.((signal) => {
    logger.info({ signal }, 'reloading');
    running.reload(signal);
  });
  return new Promise<number>((resolve) => {
    host.onSignal((signal) => {
      if (stopping) {
        logger.warn({ signal }, 'exiting now');
        process.exit(1);
      }
      logger.info({ signal }, 'shutting down');
      stopping = running.stop().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    });
  });
}

/** `kiln coordinator` for the CLI: its flags and how to run it with commander's option object. */
export const COORDINATOR_COMMAND = {
  flags: [...settingFlags(COORDINATOR_SETTINGS), ...COORDINATOR_OPTIONS] as readonly FlagSpec[],
  helpAfter: settingsHelpFooter(COORDINATOR_SETTINGS),
  /** commander's `--no-persist` sets `persist: false`. */
  run: (opts: CoordinatorFlags & { persist?: boolean }, host: CoordinatorProcessHost): Promise<number> => runCoordinator({ ...opts, noPersist: opts.persist === false }, host),
};
