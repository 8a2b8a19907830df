/**
 * Human durations (`90s`, `20m`, `1h30m`, `250ms`) to milliseconds, and back for display.
 */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;

/** Parses `20m`, `1h30m`, `45s`, `250ms`; a bare number is seconds. Returns null when invalid. */
export function parseDuration(text: string): number | null {
  const s = text.trim();
  if (s === '') return null;
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  PART_RE.lastIndex = 0;
  let total = 0;
  let consumed = 0;
  for (let m = PART_RE.exec(s); m; m = PART_RE.exec(s)) {
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? NaN);
    consumed = PART_RE.lastIndex;
  }
  if (consumed !== s.length || !Number.isFinite(total)) return null;
  return Math.round(total);
}

/** 1234 -> "1.2s", 75000 -> "1m15s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const totalS = Math.round(ms / 1000);
  const h = Math.floor(totalS / 3600);
  const m = Math.floor((totalS % 3600) / 60);
  const sec = totalS % 60;
  return h > 0 ? `${h}h${m}m${sec}s` : `${m}m${sec}s`;
}
