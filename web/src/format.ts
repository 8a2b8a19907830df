/**
 * How the pages write times, durations and states. A state is never a colour alone: each
 * has an icon and a word (colour-blind safe), and a CSS class (`st-<state>`) for its colour.
 */

export interface StateLook {
  readonly icon: string;
  readonly label: string;
  readonly className: string;
}

const ICONS = new Map<string, string>([
  ['pending', '○'],
  ['ready', '◔'],
  ['assigned', '◑'],
  ['running', '▶'],
  ['success', '✓'],
  ['failed', '✗'],
  ['partial', '◪'],
  ['skipped', '↷'],
  ['cancelled', '⊘'],
  ['cancelling', '⊘'],
  ['rejected', '✗'],
  ['lost', '?'],
  ['reused', '♻'],
]);

export function stateLook(state: string): StateLook {
  return { icon: ICONS.get(state) ?? '•', label: state, className: `st-${state}` };
}

/** `850 ms`, `12.4 s`, `3 m 05 s`, `2 h 04 m`; `–` for none. */
export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} m`;
}

/** A duration from ISO times: start to end, or start to now while it runs. */
export function durationOf(start: string | null, end: string | null, now: number): number | null {
  if (!start) return null;
  const a = Date.parse(start);
  const b = end ? Date.parse(end) : now;
  return Number.isFinite(a) && Number.isFinite(b) ? Math.max(0, b - a) : null;
}

/** `14:03:22` today, else `2026-12-04 14:03`. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '–';
  const today = new Date().toDateString() === d.toDateString();
  const pad = (n: number) => String(n).padStart(2, '0');
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return today ? hms : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms.slice(0, 5)}`;
}

/** `key:abc/ci` -> `ci`; `null` -> `–`. */
export function formatActor(actor: string | null | undefined): string {
  if (!actor) return '–';
  const m = /^key:([^/]+)(?:\/(.+))?$/.exec(actor);
  return m ? (m[2] ?? m[1]!) : actor;
}
