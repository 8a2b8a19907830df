#!/usr/bin/env node
/**
 * `kiln`: the one binary's entry point. It applies `kiln agent`'s V8 settings
 * (agent-heap.ts) before anything else is loaded, then loads the program (program.ts:
 * the commands and their wiring) and runs it with the process's arguments and
 * environment. Only this module and program.ts touch `process`; everything else gets
 * what it needs as parameters.
 */
import { applyAgentV8Flags } from './agent-heap.js';

applyAgentV8Flags(process.argv);
const [{ main, debugging }, { errorExit }] = await Promise.all([import('./program.js'), import('./error-exit.js')]);

/**
 * Exits once everything written to stdout and stderr has left the process: a write to a pipe
 * is asynchronous, and process.exit() drops what is still queued (a slow reader of
 * `kiln logs BUILD | …` lost the end of the log). A write's callback runs once it and every
 * write before it was handed to the OS.
 */
function exitAfterOutput(code: number): void {
  process.exitCode = code;
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

main(process.argv, process.env).then(
  // Done: do not wait for idle keep-alive sockets or unref'd timers, only for the output.
  (code) => exitAfterOutput(code),
  (err: unknown) => {
    const out = errorExit(err, { debug: debugging(process.env) });
    for (const line of out.lines) process.stderr.write(`${line}\n`);
    exitAfterOutput(out.exitCode);
  },
);
