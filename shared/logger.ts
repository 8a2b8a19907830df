/**
 * Process logs (not build logs) for coordinator and agent: pino JSON lines on stderr,
 * one record per line, for journald; or short human lines (`--log-format text`, the
 * default on a terminal).
 *
 * Under systemd (stderr is the journal stream named by $JOURNAL_STREAM) the text format
 * is `<N>level msg key=value ...`: no time and no name (journald records both), and the
 * sd-daemon priority prefix `<N>` (journald strips it and files the line at that
 * priority, so `journalctl -p warning` works). The units set KILN_LOG_FORMAT=text; JSON
 * stays one setting away (KILN_LOG_FORMAT=json in the env file).
 */
import { fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Pino from 'pino';
import type { Logger, DestinationStream } from 'pino';

// pino is CommonJS: `require` loads it as is, without Node scanning its sources for
// export names as an ES `import` would (an idle agent's start-up cost; agent/agent.ts).
const { pino } = createRequire(import.meta.url)('pino') as typeof Pino;

export type LogFormat = 'json' | 'text';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** syslog priorities of pino's levels (sd-daemon(3) prefixes): fatal=crit, error=err, warn=warning, info, debug. */
const JOURNAL_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);
/** A value printed bare in journal lines; anything else is JSON-quoted, so a line stays one line. */
const BARE = /^[^\s"=\\]{1,200}$/;

/**
 * Whether `fd` is the journal stream systemd connected (JOURNAL_STREAM=device:inode names it;
 * a child whose stderr was redirected elsewhere inherits the variable but not the stream).
 */
export function isJournalStream(env: Record<string, string | undefined>, fd: number): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** One text line of a pino record: `HH:MM:SS.mmm LEVEL name: msg k=v`, or for the journal `<N>level msg k=v`. */
export function formatTextLine(rec: Record<string, unknown>, journal: boolean): string {
  const level = typeof rec.level === 'number' ? rec.level : 30;
  const fields = Object.entries(rec).filter(([k]) => !SKIP.has(k));
  if (journal) {
    const extra = fields.map(([k, v]) => `${k}=${typeof v === 'string' && BARE.test(v) ? v : JSON.stringify(v)}`).join(' ');
    const msg = String(rec.msg ?? '').replace(/\r?\n/g, ' ');
    return `<${JOURNAL_PRIORITY[level] ?? 6}>${(LEVEL_NAMES[level] ?? 'log').toLowerCase()} ${msg}${extra ? ` ${extra}` : ''}\n`;
  }
  const t = new Date(typeof rec.time === 'number' ? rec.time : Date.now()).toISOString().slice(11, 23);
  const extra = fields.map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
  return `${t} ${(LEVEL_NAMES[level] ?? 'LOG').padEnd(5)} ${String(rec.name ?? '')}: ${String(rec.msg ?? '')}${extra ? ` ${extra}` : ''}\n`;
}

function textDestination(out: NodeJS.WritableStream, journal: boolean): DestinationStream {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      out.write(formatTextLine(rec, journal));
    },
  };
}

/**
 * `env` (the process environment, from the caller: only the CLI entry reads process.env)
 * tells whether stderr is the journal; `journal` says it outright (tests).
 */
export function createLogger(opts: { name: string; level: LogLevel; format: LogFormat; stream?: NodeJS.WritableStream; env?: Record<string, string | undefined>; journal?: boolean }): Logger {
  const out = opts.stream ?? process.stderr;
  const journal = opts.journal ?? (out === process.stderr && opts.env !== undefined && isJournalStream(opts.env, 2));
  const dest = opts.format === 'text' ? textDestination(out, journal) : (out as unknown as DestinationStream);
  return pino({ name: opts.name, level: opts.level, base: { name: opts.name } }, dest);
}

export type { Logger };
