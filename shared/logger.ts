/**
 * Process logs (not build logs) for coordinator and agent: pino JSON lines on stderr,
 * one record per line, for journald; or short human lines (`--log-format text`, the
 * default on a terminal).
 */
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
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

function textDestination(out: NodeJS.WritableStream): DestinationStream {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      const t = new Date(typeof rec.time === 'number' ? rec.time : Date.now()).toISOString().slice(11, 23);
      const extra = Object.entries(rec)
        .filter(([k]) => !SKIP.has(k))
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      out.write(`${t} ${(LEVEL_NAMES[rec.level as number] ?? 'LOG').padEnd(5)} ${String(rec.name ?? '')}: ${String(rec.msg ?? '')}${extra ? ` ${extra}` : ''}\n`);
    },
  };
}

export function createLogger(opts: { name: string; level: LogLevel; format: LogFormat; stream?: NodeJS.WritableStream }): Logger {
  const out = opts.stream ?? process.stderr;
  const dest = opts.format === 'text' ? textDestination(out) : (out as unknown as DestinationStream);
  return pino({ name: opts.name, level: opts.level, base: { name: opts.name } }, dest);
}

export type { Logger };
