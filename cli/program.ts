/**
 * The `kiln` program: its commands and their wiring (cli/main.ts, the entry point, loads
 * it). `kiln coordinator` and `kiln agent` run the two processes; the other commands are
 * clients of the coordinator's HTTP API. This module only wires commands: each command's
 * code is imported when that command runs, so `kiln agent` never loads the coordinator
 * (nor the client commands), and `kiln coordinator` never loads the agent. The two
 * processes declare their own flags (coordinator/config.ts, agent/config.ts: one
 * settings table each), which are added to their command just before it parses its
 * arguments. Only this module and main.ts touch `process` (argv, env, signals, exit
 * code); everything else gets what it needs as parameters.
 */
import { hostname } from 'node:os';
import { Command, Help, Option } from 'commander';
import { z } from 'zod';
import { KILN_VERSION, startLogTrace, type FlagSpec } from '../shared/core.js';
import type { ClientFlags } from './client-config.js';
import type { CliIO } from './commands.js';
import type { AgentAction } from './fleet-commands.js';
import { errorExit } from './error-exit.js';
import { CliError, EXIT } from './exit-codes.js';

/** What `kiln coordinator` and `kiln agent` get from the process (each uses its part). */
interface DaemonHost {
  env: Record<string, string | undefined>;
  arch: string;
  hostname: string;
  isTTY: boolean;
  onSignal: (handler: (signal: string) => void) => void;
  onReload: (handler: (signal: string) => void) => void;
  /** Human-readable start-up lines (stderr). */
  print: (line: string) => void;
}

/** A process command as its module exports it: its flags and how to run it with commander's option object. */
interface DaemonCommand {
  readonly flags: readonly FlagSpec[];
  /** Printed after the options in `--help`. */
  readonly helpAfter: string;
  run(opts: object, host: DaemonHost): Promise<number>;
}

function onSignal(handler: (signal: string) => void): void {
  process.on('SIGINT', () => handler('SIGINT'));
  process.on('SIGTERM', () => handler('SIGTERM'));
}

function makeIO(env: Record<string, string | undefined>): CliIO {
  // `kiln logs ... | head`: a closed pipe ends the command quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.OK);
  });
  return {
    stdout: { write: (t) => void process.stdout.write(t), isTTY: Boolean(process.stdout.isTTY) },
    stderr: { write: (t) => void process.stderr.write(t), isTTY: Boolean(process.stderr.isTTY) },
    env,
    onInterrupt: (handler) => {
      const h = () => handler();
      process.on('SIGINT', h);
      return () => process.off('SIGINT', h);
    },
  };
}

function clientOptions(cmd: Command): Command {
  return cmd
    .option('--coordinator <url[,url...]>', 'coordinator URL, or several comma-separated (the leader among them is followed) (default: $KILN_COORDINATOR or http://127.0.0.1:8080)')
    .option('--token-file <file>', 'API token file (default: $KILN_TOKEN_FILE, $KILN_TOKEN, or the local coordinator\'s token)')
    .option('--ca-file <file>', 'PEM CA certificate(s) the coordinator\'s TLS certificate is verified with (default: $KILN_CA_FILE, else Node\'s built-in CA store)')
    .option('--insecure', 'allow plain http:// to a coordinator that is not on loopback (default: $KILN_INSECURE=1)');
}

export async function main(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  if (env.KILN_LOG_TRACE) startLogTrace(env.KILN_LOG_TRACE); // the live-logs benchmark's --trace (shared/log-trace.ts)
  const io = makeIO(env);
  let code: number = EXIT.OK;
  // coordinator and agent: an unexpected error keeps its stack trace, for their logs
  let daemon = false;
  const client = async (flags: ClientFlags) => {
    const [{ ApiClient }, { loadClientConfig }] = await Promise.all([import('./api-client.js'), import('./client-config.js')]);
    return new ApiClient(loadClientConfig(flags, env));
  };
  const commands = () => import('./commands.js');
  const fleet = () => import('./fleet-commands.js');
  const access = () => import('./token-commands.js');
  const artifacts = () => import('./artifacts.js');
  const images = () => import('./images.js');
  const secretCommands = () => import('./secret-commands.js');
  const program = new Command('kiln')
    .description('kiln: a build farm. A coordinator pushes DAGs of BuildKit builds to agents and streams their logs back.')
    .version(KILN_VERSION)
    .showHelpAfterError()
    .exitOverride();

  // The two processes: their flags come with their module, loaded only for that command.
  const onReload = (handler: (signal: string) => void) => void process.on('SIGHUP', () => handler('SIGHUP'));
  const daemonHost: DaemonHost = { env, arch: process.arch, hostname: hostname(), isTTY: Boolean(process.stderr.isTTY), onSignal, onReload, print: (l) => void process.stderr.write(`${l}\n`) };
  const daemons = new Map<string, () => Promise<DaemonCommand>>([
    ['coordinator', async () => (await import('../coordinator/main.js')).COORDINATOR_COMMAND],
    ['agent', async () => (await import('../agent/main.js')).AGENT_COMMAND],
  ]);
  // Their options are declared later: list them as having some in `kiln --help`.
  const help = new Help();
  program.configureHelp({ subcommandTerm: (cmd) => (daemons.has(cmd.name()) ? `${cmd.name()} [options]` : help.subcommandTerm(cmd)) });
  program.command('coordinator').description('run the coordinator (HTTP API + agent WebSocket endpoint)');
  program.command('agent').description('run an agent: connect to the coordinator and build what it pushes');
  const declare = async (sub: Command): Promise<void> => {
    const load = daemons.get(sub.name());
    if (load === undefined) return;
    const command = await load();
    sub.addHelpText('after', command.helpAfter);
    for (const f of command.flags) sub.addOption(f.hidden ? new Option(f.flags, f.description).hideHelp() : new Option(f.flags, f.description));
    sub.action(async (o: Record<string, unknown>) => {
      daemon = true;
      code = await command.run(o, daemonHost);
    });
  };
  program.hook('preSubcommand', (_program, sub) => declare(sub));

  clientOptions(program.command('submit <spec>'))
    .description('submit a build spec (YAML or JSON, UTF-8); prints the build id')
    .option('-f, --follow', 'stream every node\'s log and exit with the build\'s result')
    .option('--json', 'JSON Lines: one line {"id","state","url"}; with --follow the events of `logs -f --json`')
    .option('--no-reuse', 'build every node, even when an identical node already succeeded')
    .action(async (spec: string, o: ClientFlags & { follow?: boolean; json?: boolean; reuse?: boolean }) => {
      code = await (await commands()).submitCommand(await client(o), spec, { follow: Boolean(o.follow), json: Boolean(o.json), reuse: o.reuse !== false }, io);
    });

  clientOptions(program.command('prewarm <spec>'))
    .description("build a spec's nodes so the first real build hits the layer cache (result reuse off, cache readwrite); follows it like submit -f")
    .option('--pool <platform>', 'only the nodes of this platform (and the upstream nodes they need)')
    .option('--json', 'JSON Lines, as `submit -f --json`')
    .action(async (spec: string, o: ClientFlags & { pool?: string; json?: boolean }) => {
      const { prewarmCommand } = await import('./prewarm.js');
      code = await prewarmCommand(await client(o), spec, { pool: o.pool ?? null, json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('logs <build> [node]'))
    .description("print a build's (or one node's) log")
    .option('-f, --follow', 'keep streaming until the build ends; resumes after interruptions, but exits 2 if the coordinator cannot be reached at the start')
    .option(
      '--json',
      'JSON Lines events, per node: {"type":"status","node","state","attempt"} then {"type":"log","node","text"}; ' +
        'when the build (or NODE) is finished, {"type":"end","state"} and {"type":"build","build"} last. ' +
        'Without -f: what is stored now (a running build stops there, with no end event)',
    )
    .action(async (build: string, node: string | undefined, o: ClientFlags & { follow?: boolean; json?: boolean }) => {
      code = await (await commands()).logsCommand(await client(o), build, node, { follow: Boolean(o.follow), json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('status <build>'))
    .description('show a build and its nodes')
    .option('--json', 'the full build as one JSON line')
    .action(async (build: string, o: ClientFlags & { json?: boolean }) => {
      code = await (await commands()).statusCommand(await client(o), build, { json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('builds'))
    .description('list builds, newest first, one page of --limit; when there are older ones, the command for the next page is printed on stderr')
    .option('--json', 'JSON Lines: one build summary per line (the next-page hint stays on stderr)')
    .option('--limit <n>', 'how many (1..500)', '20')
    .option('--cursor <id>', 'start after this build id (from the next-page hint)')
    .action(async (o: ClientFlags & { json?: boolean; limit: string; cursor?: string }) => {
      const { LimitOption, buildsCommand } = await commands();
      const limit = LimitOption.safeParse(o.limit);
      if (!limit.success) throw new CliError(`--limit: '${o.limit}' is not a number in 1..500`, EXIT.USAGE);
      if (o.cursor !== undefined && (o.cursor === '' || o.cursor.length > 200)) throw new CliError('--cursor: give the build id from the next-page hint', EXIT.USAGE);
      code = await buildsCommand(await client(o), { json: Boolean(o.json), limit: limit.data, ...(o.cursor !== undefined ? { cursor: o.cursor } : {}) }, io);
    });

  const agents = clientOptions(program.command('agents'))
    .description('list agents: state, control, health, circuit breaker, jobs, load; `agents pause|resume|drain NAME` steers one')
    .option('--json', 'JSON Lines: one agent per line (all of them: every page is fetched)')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await fleet()).agentsCommand(await client(o), { json: Boolean(o.json) }, io);
    });
  const actions: Array<[AgentAction, string]> = [
    ['pause', 'give an agent no new work (running attempts go on)'],
    ['drain', 'let an agent finish what it runs and take nothing new until resumed'],
    ['resume', 'let a paused or draining agent take work again'],
  ];
  for (const [action, description] of actions) {
    const sub = clientOptions(agents.command(`${action} <name>`))
      .description(description)
      .option('--json', 'the agent as one JSON line');
    if (action !== 'resume') sub.option('--reason <text>', 'why (shown in `kiln agents` and the API)');
    sub.action(async (name: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<ClientFlags & { json?: boolean; reason?: string }>();
      code = await (await fleet()).agentControlCommand(await client(o), action, name, { json: Boolean(o.json), ...(o.reason !== undefined ? { reason: o.reason } : {}) }, io);
    });
  }

  // Agent enrolment (token-commands.ts): revoke or rotate an enrolled agent's credential.
  for (const [action, description] of [
    ['revoke', "revoke an agent's credential: its connection is closed, reconnects refused, its running attempts queued again"],
    ['rotate', 'ask an agent to rotate its credential (it reconnects with the new one; builds go on)'],
  ] as const) {
    clientOptions(agents.command(`${action} <name>`))
      .description(description)
      .option('--json', 'the answer as one JSON line')
      .action(async (name: string, _o: unknown, cmd: Command) => {
        const o = cmd.optsWithGlobals<ClientFlags & { json?: boolean }>();
        const m = await access();
        code = await (action === 'revoke' ? m.agentRevokeCommand : m.agentRotateCommand)(await client(o), name, { json: Boolean(o.json) }, io);
      });
  }
  const tokens = program.command('tokens').description('agent enrolment tokens: create, list, revoke');
  clientOptions(tokens.command('create'))
    .description('create an agent enrolment token and print just the token on stdout')
    .option('--agent', 'an agent enrolment token (the only kind)')
    .option('--name <name>', 'bind the token to this agent name')
    .option('--expires <duration>', 'valid this long (default 24h; at most 366d)')
    .option('--uses <n>', 'how many agents may enrol with it (default 1)')
    .option('--json', 'the token and its record as one JSON line')
    .action(async (o: ClientFlags & { agent?: boolean; name?: string; expires?: string; uses?: string; json?: boolean }) => {
      code = await (await access()).tokensCreateCommand(await client(o), o, io);
    });
  clientOptions(tokens.command('list'))
    .description('enrolment tokens (never their secrets)')
    .option('--json', 'JSON Lines: one token per line')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await access()).tokensListCommand(await client(o), { json: Boolean(o.json) }, io);
    });
  clientOptions(tokens.command('revoke <id>'))
    .description('revoke an enrolment token (agents enrolled with it keep their credentials)')
    .option('--json', 'the token as one JSON line')
    .action(async (id: string, o: ClientFlags & { json?: boolean }) => {
      code = await (await access()).tokensRevokeCommand(await client(o), id, { json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('pools'))
    .description('pools per platform (and gpu): agents, slots, queued and running nodes, dispatch waits')
    .option('--json', 'JSON Lines: one pool per line')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await fleet()).poolsCommand(await client(o), { json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('cluster'))
    .description('the coordinators sharing the state: the leader, the fencing epoch, each coordinator\'s role and when it was last seen')
    .option('--json', 'the cluster view as one JSON line')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await import('./cluster-commands.js')).clusterCommand(await client(o), { json: Boolean(o.json) }, io);
    });

  const state = program.command('state').description("the coordinator's state: migrate an embedded one into PostgreSQL");
  state
    .command('migrate')
    .description("move an embedded coordinator's state (builds, archived builds, dead letters, reuse records, agent controls, tokens, keys, credentials, secrets) into an empty PostgreSQL database; stop the coordinator first")
    .option('--from <dir>', "the embedded coordinator's data dir")
    .option('--to <url>', 'postgres://USER:PASSWORD@HOST:PORT/DATABASE, an empty database (default: $KILN_STATE)')
    .option('--secrets-key-file <file>', 'the secrets key, to check the secret store opens (default: DATA_DIR/keys/secrets.key)')
    .option('--json', 'what moved, as one JSON line')
    .action(async (o: { from?: string; to?: string; secretsKeyFile?: string; json?: boolean }) => {
      code = await (await import('./state-commands.js')).stateMigrateCommand(o, io);
    });

  clientOptions(program.command('dlq'))
    .description('the dead-letter list: nodes whose infrastructure failures used up their attempts')
    .option('--json', 'JSON Lines: one dead letter per line')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await fleet()).deadLetterCommand(await client(o), { json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('retry <build> <node>'))
    .description('run a failed node again (the nodes skipped because of it wait again)')
    .option('-f, --follow', "stream the build's new output and exit with its result")
    .option('--json', 'the build as one JSON line; with --follow the events of `logs -f --json`')
    .action(async (build: string, node: string, o: ClientFlags & { follow?: boolean; json?: boolean }) => {
      code = await (await fleet()).retryCommand(await client(o), build, node, { follow: Boolean(o.follow), json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('error <build>'))
    .description(
      "why a build failed: each failed node's attempt, agent, exit code, error, last log lines and provenance. " +
        'Exits 1 with a message on stderr when no node failed (no report), 2 for an unknown build',
    )
    .option('--json', 'the error report as one JSON line')
    .option('--lines <n>', 'log lines shown per failed node (up to 200)', '30')
    .action(async (build: string, o: ClientFlags & { json?: boolean; lines: string }) => {
      const lines = z.coerce.number().int().min(0).max(200).safeParse(o.lines);
      if (!lines.success) throw new CliError(`--lines: '${o.lines}' is not a number in 0..200`, EXIT.USAGE);
      code = await (await fleet()).errorCommand(await client(o), build, { json: Boolean(o.json), lines: lines.data }, io);
    });

  clientOptions(program.command('artifacts <build-or-get> [args...]'))
    .description("list a build's artifacts; `artifacts get BUILD NODE OUTPUT -o DIR` downloads, verifies and extracts one")
    .option('-o, --output <dir>', 'with get: directory to extract into')
    .option('--json', 'JSON Lines: one artifact per line; with get, one line for the extracted artifact')
    .action(async (first: string, rest: string[], o: ClientFlags & { json?: boolean; output?: string }) => {
      if (first === 'get') {
        if (rest.length !== 3 || !o.output) throw new CliError('usage: kiln artifacts get BUILD NODE OUTPUT -o DIR', EXIT.USAGE);
        code = await (await artifacts()).artifactsGetCommand(await client(o), rest[0]!, rest[1]!, rest[2]!, { out: o.output, json: Boolean(o.json) }, io);
      } else {
        if (rest.length > 0) throw new CliError('usage: kiln artifacts BUILD  |  kiln artifacts get BUILD NODE OUTPUT -o DIR', EXIT.USAGE);
        code = await (await artifacts()).artifactsListCommand(await client(o), first, { json: Boolean(o.json) }, io);
      }
    });

  clientOptions(program.command('images <build>'))
    .description("list the images a build pushed: node, ref, manifest digest, platform (or an index's platforms), size, SBOM digest; --sbom REF prints one SBOM")
    .option('--json', 'JSON Lines: one image per line')
    .option('--sbom <ref>', "print the SBOM (CycloneDX 1.5 JSON) of the image pushed at REF, checked against its digest")
    .option('--platform <platform>', 'with --sbom on an index ref: the platform image whose SBOM to print')
    .option('-o, --output <file>', 'with --sbom: write the SBOM to FILE')
    .action(async (build: string, o: ClientFlags & { json?: boolean; sbom?: string; platform?: string; output?: string }) => {
      const sbom = o.sbom !== undefined ? { sbom: o.sbom, ...(o.platform !== undefined ? { platform: o.platform } : {}), ...(o.output !== undefined ? { out: o.output } : {}) } : {};
      code = await (await images()).imagesCommand(await client(o), build, { json: Boolean(o.json), ...sbom }, io);
    });

  clientOptions(program.command('provenance <build> <node>'))
    .description("print the provenance record of a node's result (what went into it, what came out)")
    .option('--json', 'the record as one JSON line (default: indented)')
    .action(async (build: string, node: string, o: ClientFlags & { json?: boolean }) => {
      code = await (await artifacts()).provenanceCommand(await client(o), build, node, { json: Boolean(o.json) }, io);
    });

  for (const [name, pinned] of [['pin', true], ['unpin', false]] as const) {
    clientOptions(program.command(`${name} <build>`))
      .description(pinned ? "keep a build's artifacts until it is unpinned" : "let a build's artifacts expire with the retention period again")
      .option('--json', 'the build as one JSON line')
      .action(async (build: string, o: ClientFlags & { json?: boolean }) => {
        code = await (await artifacts()).pinCommand(await client(o), build, pinned, { json: Boolean(o.json) }, io);
      });
  }

  // Build secrets (admin): set from stdin or a file, list (never values), remove.
  const secrets = program.command('secrets').description('build secrets the coordinator holds (admin): set, list, rm');
  clientOptions(secrets.command('set <name>'))
    .description('set a secret to the bytes on stdin (or of --from-file FILE); nodes name it in `secrets:` and mount it with RUN --mount=type=secret,id=NAME')
    .option('--from-file <file>', 'read the value from FILE instead of stdin')
    .option('--json', 'the secret (name, size, version, updated_at) as one JSON line')
    .action(async (name: string, o: ClientFlags & { fromFile?: string; json?: boolean }) => {
      const input = { isTTY: Boolean(process.stdin.isTTY), chunks: process.stdin };
      code = await (await secretCommands()).secretSetCommand(await client(o), name, { json: Boolean(o.json), ...(o.fromFile !== undefined ? { fromFile: o.fromFile } : {}) }, input, io);
    });
  clientOptions(secrets.command('list'))
    .description('the secrets: name, size, version, last set (never values)')
    .option('--json', 'JSON Lines: one secret per line')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await secretCommands()).secretListCommand(await client(o), { json: Boolean(o.json) }, io);
    });
  clientOptions(secrets.command('rm <name>'))
    .description('remove a secret (nodes naming it fail at their next attempt)')
    .action(async (name: string, o: ClientFlags) => {
      code = await (await secretCommands()).secretRemoveCommand(await client(o), name, io);
    });

  // Webhooks (issue 13): the hooks and their delivery logs (cli/webhook-commands.ts).
  const webhookCommands = () => import('./webhook-commands.js');
  const webhooks = program.command('webhooks').description("webhooks: the coordinator's (admin) and builds' own, with their delivery logs");
  clientOptions(webhooks.command('list', { isDefault: true }))
    .description('the hooks: id, target, events, counters, the latest attempt (the default)')
    .option('--json', 'JSON Lines: one hook per line')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await webhookCommands()).webhooksCommand(await client(o), { json: Boolean(o.json) }, io);
    });
  clientOptions(webhooks.command('deliveries <id>'))
    .description("a hook's last attempts, newest first (a coordinator hook by name, a build's as <build id>:<n>)")
    .option('--json', 'JSON Lines: one attempt per line')
    .action(async (id: string, o: ClientFlags & { json?: boolean }) => {
      code = await (await webhookCommands()).webhookDeliveriesCommand(await client(o), id, { json: Boolean(o.json) }, io);
    });

  clientOptions(program.command('cancel <build>'))
    .description('cancel a build')
    .option('--json', 'the build as one JSON line')
    .action(async (build: string, o: ClientFlags & { json?: boolean }) => {
      code = await (await commands()).cancelCommand(await client(o), build, { json: Boolean(o.json) }, io);
    });

  // Access: API keys with scopes, and the audit log (cli/key-commands.ts).
  const keyCommands = () => import('./key-commands.js');
  const keys = program.command('keys').description('API keys with scopes (read, submit, cancel, admin): create, list, revoke (admin scope)');
  clientOptions(keys.command('create'))
    .description('create an API key; prints only the key on stdout (it is shown only now)')
    .requiredOption('--scope <scopes...>', 'read, submit, cancel, admin (comma-separated or repeated); admin implies all, submit and cancel imply read')
    .option('--name <name>', 'a name for the key (default: its id)')
    .option('--expires <duration>', 'expire after this long (90d, 24h; default: never)')
    .option('--json', 'the created key and its secret as one JSON line')
    .action(async (o: ClientFlags & { scope: string[]; name?: string; expires?: string; json?: boolean }) => {
      const a = await keyCommands();
      const opts = { scopes: a.scopesOption(o.scope), ...(o.name !== undefined ? { name: o.name } : {}), ...(o.expires !== undefined ? { expiresS: a.expiresOption(o.expires) } : {}), json: Boolean(o.json) };
      code = await a.keysCreateCommand(await client(o), opts, io);
    });
  clientOptions(keys.command('list'))
    .description('list API keys (never their secrets), newest first')
    .option('--json', 'JSON Lines: one key per line')
    .action(async (o: ClientFlags & { json?: boolean }) => {
      code = await (await keyCommands()).keysListCommand(await client(o), { json: Boolean(o.json) }, io);
    });
  clientOptions(keys.command('revoke <id-or-name>'))
    .description('revoke an API key: refused from its next request on')
    .option('--json', 'the revoked key as one JSON line')
    .action(async (id: string, o: ClientFlags & { json?: boolean }) => {
      code = await (await keyCommands()).keysRevokeCommand(await client(o), id, { json: Boolean(o.json) }, io);
    });
  clientOptions(program.command('audit'))
    .description('the audit log, newest first: who changed what, and every refused call (admin scope)')
    .option('--json', 'JSON Lines: one entry per line')
    .option('--limit <n>', 'how many (1..1000)', '50')
    .option('--actor <actor>', 'only this actor: a key id or name, an agent name, or key:<id>/<name>')
    .option('--action <action>', 'only this action (build.cancel), or a prefix ending in a dot (build.)')
    .action(async (o: ClientFlags & { json?: boolean; limit: string; actor?: string; action?: string }) => {
      const limit = z.coerce.number().int().min(1).max(1000).safeParse(o.limit);
      if (!limit.success) throw new CliError(`--limit: '${o.limit}' is not a number in 1..1000`, EXIT.USAGE);
      const filters = { ...(o.actor !== undefined ? { actor: o.actor } : {}), ...(o.action !== undefined ? { action: o.action } : {}) };
      code = await (await keyCommands()).auditCommand(await client(o), { json: Boolean(o.json), limit: limit.data, ...filters }, io);
    });

  try {
    // `kiln help agent` shows the help without dispatching to the command: declare its flags first.
    const helped = argv[2] === 'help' ? program.commands.find((c) => c.name() === argv[3]) : undefined;
    if (helped !== undefined) await declare(helped);
    await program.parseAsync(argv);
    return code;
  } catch (err) {
    const out = errorExit(err, { daemon, debug: debugging(env) });
    for (const line of out.lines) io.stderr.write(`${line}\n`);
    return out.exitCode;
  }
}

export function debugging(env: Record<string, string | undefined>): boolean {
  return Boolean(env.KILN_DEBUG) && env.KILN_DEBUG !== '0';
}
