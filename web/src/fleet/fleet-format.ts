/**
 * Pure helpers of the fleet pages: ages, durations, sizes, percentages, the path of a
 * sparkline, and what a set of scopes allows. No DOM; unit-tested under node
 * (test/unit/web-fleet.test.ts).
 */

export type UiScope = 'read' | 'submit' | 'cancel' | 'admin';

/** What each scope grants beyond itself (coordinator/access/route-scopes.ts). */
const IMPLIED = new Map<UiScope, readonly UiScope[]>([
  ['read', []],
  ['submit', ['read']],
  ['cancel', ['read']],
  ['admin', ['read', 'submit', 'cancel']],
]);

/** true when `scopes` allow an action that needs `needed` (admin implies all; submit and cancel imply read). */
export function allows(scopes: ReadonlySet<UiScope>, needed: UiScope): boolean {
  for (const s of scopes) if (s === needed || (IMPLIED.get(s) ?? []).includes(needed)) return true;
  return false;
}

/** An age for "last seen": `now`, `4s`, `2m 05s`, `3h 12m`, `2d 4h`; `—` for a negative or unknown one. */
export function formatAge(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms) || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  if (s < 1) return 'now';
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** A duration: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`; `—` for null. */
export function formatDuration(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Bytes in binary units: `512 B`, `1.5 KiB`, `20 GiB` (three significant digits at most); `—` for null. */
export function formatBytes(bytes: number | null): string {
  if (bytes === null || !Number.isFinite(bytes) || bytes < 0) return '—';
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const text = u === 0 || v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${text.includes('.') ? text.replace(/\.?0+$/, '') : text} ${UNITS[u]}`;
}

/** MiB (as agents report memory and disk) in binary units. */
export function formatMiB(mib: number | null): string {
  return mib === null ? '—' : formatBytes(mib * 1024 * 1024);
}

/** `used` of `total` as a whole percentage (null when either is unknown or total is 0). */
export function percent(used: number | null, total: number | null): number | null {
  if (used === null || total === null || total <= 0) return null;
  return Math.round((used / total) * 100);
}

/**
 * The `d` of an SVG path drawing `values` left to right over `width` x `height` (y grows
 * down; 0 at the bottom, `max` at the top; values above max are clamped). A null value
 * breaks the line; a lone point between breaks is a short dash. Empty string for no values.
 */
export function sparklinePath(values: ReadonlyArray<number | null>, width: number, height: number, max: number): string {
  if (values.length === 0 || max <= 0) return '';
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const round = (n: number) => Math.round(n * 10) / 10;
  const parts: string[] = [];
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const x = round(i * step);
    const y = round(height - (Math.min(Math.max(v, 0), max) / max) * height);
    const next = values[i + 1];
    const alone = !pen && (next === undefined || next === null);
    parts.push(`${pen ? 'L' : 'M'}${x},${y}`);
    if (alone) parts.push(`h${values.length > 1 ? Math.max(1, round(step / 2)) : width}`);
    pen = true;
  });
  return parts.join('');
}

/** Milliseconds between an ISO time and `now` (null for a missing or unreadable time). */
export function ageOf(iso: string | null, now: number): number | null {
  if (iso === null) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : now - t;
}
