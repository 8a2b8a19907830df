/**
 * One log line's terminal escapes turned into plain text plus styled spans, for the log
 * model (log-model.ts). Pure: no DOM, runs under node in the unit tests.
 *
 * - SGR sequences (`ESC [ … m`: 16 colours, 256-colour palette, 24-bit truecolor, bold,
 *   dim, italic, underline, strikethrough, reverse, …) are read by `anser` (the parser
 *   Airflow's log view uses) into spans; colon sub-parameters (`38:2::r:g:b`) are read
 *   as the semicolon form.
 * - Every other escape (cursor moves, erase-line, OSC titles and hyperlinks, APC such as
 *   Buildkite's timestamps, DCS, charset selection) and C0 control characters but TAB
 *   are removed: they have no meaning in a list of lines.
 * - The SGR state carries from one line to the next, as in a terminal: the caller hands
 *   the state a line starts in and gets back the one it ends in.
 *
 * Styles are interned in a StyleTable (a few hundred at most in practice; capped), so a
 * line's spans are plain numbers: pairs of (start offset in the plain text, style id).
 */
import Anser from 'anser';

/** How a span looks: CSS classes (16 colours and decorations, themed by log.css) plus inline colours (256/truecolor). */
export interface LogStyle {
  readonly className: string;
  /** A CSS colour for the text (palette 16-255 or truecolor), or null for the class/theme colour. */
  readonly color: string | null;
  readonly background: string | null;
}

/** The SGR state between lines: what anser keeps in its instance (see AnserInternals). */
export interface SgrState {
  readonly fg: string | null;
  readonly bg: string | null;
  readonly fgTruecolor: string | null;
  readonly bgTruecolor: string | null;
  readonly decorations: readonly string[];
}

export const DEFAULT_SGR: SgrState = Object.freeze({ fg: null, bg: null, fgTruecolor: null, bgTruecolor: null, decorations: Object.freeze([]) });

/**
 * anser 2.3.5 (pinned in package.json) keeps the SGR state of one instance in these fields
 * between calls; the model sets them to restart a line from a saved state (a partial line
 * is parsed again from its start each time more of it arrives). test/unit/web-log-model
 * covers a colour carried over a line break, so a change of anser's internals fails there.
 */
interface AnserInternals {
  fg: string | null;
  bg: string | null;
  fg_truecolor: string | null;
  bg_truecolor: string | null;
  decorations: string[];
}

/** Style ids with a fixed meaning. */
export const STYLE_PLAIN = 0;
/** The "line cut" marker appended to a capped line. */
export const STYLE_CUT = 1;
/** At most this many distinct styles; later new ones render plain (a truecolor gradient could mint one per character). */
export const MAX_STYLES = 4096;

const DECORATIONS = new Set(['bold', 'dim', 'italic', 'underline', 'blink', 'reverse', 'hidden', 'strikethrough']);

/** The xterm 256-colour palette entry `n` (16-255) as a CSS colour. */
export function paletteColour(n: number): string {
  if (n >= 232) {
    const level = 8 + (n - 232) * 10;
    return `rgb(${level},${level},${level})`;
  }
  const levels = [0, 95, 135, 175, 215, 255];
  const i = n - 16;
  return `rgb(${levels[Math.floor(i / 36) % 6]},${levels[Math.floor(i / 6) % 6]},${levels[i % 6]})`;
}

/** Class or inline colour for anser's colour value with `use_classes` (`ansi-red`, `ansi-palette-123`, `ansi-truecolor`). */
function colourOf(value: string | null, truecolor: string | null, side: 'fg' | 'bg'): { cls: string | null; css: string | null } {
  if (value === null) return { cls: null, css: null };
  if (value === 'ansi-truecolor') return { cls: null, css: truecolor === null ? null : `rgb(${truecolor.replace(/\s+/g, '')})` };
  const palette = /^ansi-palette-(\d{1,3})$/.exec(value);
  if (palette) return { cls: null, css: paletteColour(Number(palette[1])) };
  return { cls: `${value}-${side}`, css: null };
}

/** Interned styles: id → LogStyle, looked up by a key of the SGR attributes. */
export class StyleTable {
  private readonly byKey = new Map<string, number>();
  private readonly list: LogStyle[] = [
    { className: '', color: null, background: null },
    { className: 'log-cut', color: null, background: null },
  ];

  get size(): number {
    return this.list.length;
  }

  style(id: number): LogStyle {
    return this.list[id] ?? this.list[STYLE_PLAIN]!;
  }

  /** The id of the style of anser's attributes (STYLE_PLAIN when they are all unset, or the table is full). */
  idOf(fg: string | null, bg: string | null, fgTrue: string | null, bgTrue: string | null, decorations: readonly string[]): number {
    if (fg === null && bg === null && decorations.length === 0) return STYLE_PLAIN;
    const decos = [...new Set(decorations.filter((d) => DECORATIONS.has(d)))].sort();
    const f = colourOf(fg, fgTrue, 'fg');
    const b = colourOf(bg, bgTrue, 'bg');
    const key = `${f.cls ?? ''}|${f.css ?? ''}|${b.cls ?? ''}|${b.css ?? ''}|${decos.join(',')}`;
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    if (this.list.length >= MAX_STYLES) return STYLE_PLAIN;
    const classes = [f.cls, b.cls, ...decos.map((d) => `ansi-${d}`)].filter((c): c is string => c !== null);
    const id = this.list.length;
    this.list.push({ className: classes.join(' '), color: f.css, background: b.css });
    this.byKey.set(key, id);
    return id;
  }
}

/**
 * Escapes and control characters in a segment (no `\n` or `\r` in it): CSI (group 1
 * parameters, 2 intermediates, 3 final byte), string escapes (OSC, DCS, APC, PM, SOS) up
 * to BEL or ST (or the end), two-byte escapes, a lone ESC at the end, and C0 controls but
 * TAB and ESC.
 */
const ESCAPES = /\x1b(?:\[([0-?]*)([ -/]*)([@-~])|[\]P^_X][\s\S]*?(?:\x07|\x1b\\|$)|[ -/]*[0-~]|$)|[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]/g;
const HAS_CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/;

/** The segment with only its SGR sequences left (colon sub-parameters as semicolons). */
export function keepOnlySgr(segment: string): string {
  if (!HAS_CONTROL.test(segment)) return segment;
  return segment.replace(ESCAPES, (_all: string, params: string | undefined, inter: string | undefined, final: string | undefined) => {
    if (final !== 'm' || inter !== '' || params === undefined || /[<=>?]/.test(params)) return '';
    return `\x1b[${params.replace(/::/g, ':').replace(/:/g, ';')}m`;
  });
}

/** A parsed segment: its plain text, spans as (start, style id) pairs, and the SGR state after it. */
export interface ParsedSegment {
  readonly text: string;
  readonly spans: readonly number[];
  readonly end: SgrState;
}

/** Parses segments (text between `\r`/`\n`) into styled spans; one per log model. */
export class AnsiLineParser {
  readonly styles = new StyleTable();
  private readonly anser = new Anser();

  /** `segment` (no `\n` or `\r`) starting in SGR state `start`. */
  parse(segment: string, start: SgrState): ParsedSegment {
    const clean = keepOnlySgr(segment);
    if (!clean.includes('\x1b')) {
      const id = this.idOfState(start);
      return { text: clean, spans: id === STYLE_PLAIN || clean === '' ? [] : [0, id], end: start };
    }
    const a = this.anser as unknown as AnserInternals;
    a.fg = start.fg;
    a.bg = start.bg;
    a.fg_truecolor = start.fgTruecolor;
    a.bg_truecolor = start.bgTruecolor;
    a.decorations = [...start.decorations];
    const entries = this.anser.ansiToJson(clean, { use_classes: true });
    const spans: number[] = [];
    let text = '';
    let last = STYLE_PLAIN;
    entries.forEach((e, i) => {
      if (e.content === '') return;
      // anser styles the text before the first escape as if no state carried over: that text is in `start`'s style
      const id = i === 0 ? this.idOfState(start) : e.was_processed ? this.styles.idOf(e.fg, e.bg, e.fg_truecolor, e.bg_truecolor, e.decorations) : STYLE_PLAIN;
      if (id !== last) spans.push(text.length, id);
      last = id;
      text += e.content;
    });
    const end: SgrState = { fg: a.fg, bg: a.bg, fgTruecolor: a.fg_truecolor, bgTruecolor: a.bg_truecolor, decorations: [...a.decorations] };
    return { text, spans, end: isDefault(end) ? DEFAULT_SGR : end };
  }

  /** The style of text in state `s`, with `reverse` applied as anser does (swapped colours, white on black by default). */
  private idOfState(s: SgrState): number {
    if (s === DEFAULT_SGR) return STYLE_PLAIN;
    if (!s.decorations.includes('reverse')) return this.styles.idOf(s.fg, s.bg, s.fgTruecolor, s.bgTruecolor, s.decorations);
    const decorations = s.decorations.filter((d) => d !== 'reverse');
    return this.styles.idOf(s.bg ?? 'ansi-black', s.fg ?? 'ansi-white', s.bgTruecolor, s.fgTruecolor, decorations);
  }
}

function isDefault(s: SgrState): boolean {
  return s.fg === null && s.bg === null && s.decorations.length === 0;
}
