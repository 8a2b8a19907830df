/**
 * Small helpers shared by the benchmarks: percentiles, medians, the machine line every
 * report starts with, and a uniform result line (`ours`, `comparator`, `ratio`).
 */
import { createServer } from 'node:net';
import { cpus } from 'node:os';
import { readFileSync } from 'node:fs';

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

export function median(values: number[]): number {
  return percentile(values, 50);
}

/** Coefficient of variation (stddev / mean). */
export function cv(values: number[]): number {
  const m = values.reduce((a, b) => a + b, 0) / values.length;
  const sd = Math.sqrt(values.reduce((a, b) => a + (b - m) ** 2, 0) / values.length);
  return m === 0 ? 0 : sd / m;
}

export function machineLine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  let shaNi = false;
  try {
    shaNi = /\bsha_ni\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    /* not linux */
  }
  return `node ${process.version}, ${cpus().length} cpus (${cpu}), sha_ni=${shaNi}`;
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

export const now = (): number => performance.timeOrigin + performance.now();

/** A TCP port free on 127.0.0.1 right now (for a server the test starts as a separate process). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}
