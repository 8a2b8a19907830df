/**
 * V8 settings of the `kiln agent` process, applied before anything else loads: the entry
 * point (cli/main.ts) imports only this module statically, applies the flags, and only
 * then imports the program, so they are set before commander, zod and the agent's
 * modules are even parsed (Node parses a module's whole static import graph before it
 * runs any of it: a flag set by a module of that graph comes too late).
 *
 * The young generation stays at the size V8 starts it with (2 MiB). Left alone, V8
 * doubles it to 4-16 MiB while start-up allocates, and an idle agent gives that back only
 * when V8's memory reducer runs, in some runs half a minute or more later: 3-7 MiB more
 * RSS until then (README, "Idle agent memory"). V8 reads this flag each time it would grow the
 * young generation, so setting it at run time takes effect (`--max-semi-space-size`
 * would not: V8 reads that one when it creates the heap, so it would have to be a node
 * flag of every way the agent is started). The cost is more scavenges of a small young
 * generation while the agent streams logs, each of them short (little survives a frame).
 *
 * Only `kiln agent`: the coordinator and the client commands keep V8's defaults.
 */
import { setFlagsFromString } from 'node:v8';

export const AGENT_V8_FLAGS: readonly string[] = ['--semi-space-growth-factor=1'];

/** Applies the agent's flags when `argv` (process.argv) runs `kiln agent`: the command is the first argument, as kiln has no options before it. */
export function applyAgentV8Flags(argv: readonly string[]): void {
  if (argv[2] === 'agent') for (const flag of AGENT_V8_FLAGS) setFlagsFromString(flag);
}
