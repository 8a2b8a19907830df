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

main(process.argv, process.env).then(
  (code) => {
    process.exitCode = code;
    // Done: do not wait for idle keep-alive sockets or unref'd timers.
    setImmediate(() => process.exit(code));
  },
  (err: unknown) => {
    const out = errorExit(err, { debug: debugging(process.env) });
    for (const line of out.lines) process.stderr.write(`${line}\n`);
    process.exit(out.exitCode);
  },
);
