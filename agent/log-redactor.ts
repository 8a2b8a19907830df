/**
 * Redacts build secrets from a log stream (issue 12): every occurrence of a secret's value
 * becomes `[secret:NAME]`, also when the value arrives split over several chunks.
 *
 * Streaming: `push(text)` returns what may be shown now. It holds back the end of the text
 * only when that end could be the start of a secret (a proper prefix of one), at most
 * (longest secret - 1) characters, until the next chunk says whether the secret follows;
 * text that cannot start a secret leaves at once, so the log's latency is unchanged for
 * everything else. `end()` gives what is held, redacted (a held start of a longer value
 * may be a whole shorter one).
 *
 * What counts as a value: the secret as text (UTF-8), without a trailing newline (values
 * set with `echo x | kiln secrets set` end in one, the printed value usually does not),
 * and, for a value of several lines, each line of at least MIN_LINE_CHARS characters
 * (the log prefixes each line of output with the step number and time, so a printed
 * multi-line value is never one piece of the log).
 *
 * Also `redact(text)` for one whole text (error messages, failed-step names).
 */

/** Lines of a multi-line value shorter than this are not redacted on their own (noise). */
export const MIN_LINE_CHARS = 4;

interface Pattern {
  text: string;
  mark: string;
}

/** The texts to redact for each secret, longest first (so a longer value wins over one it contains). */
export function redactionPatterns(secrets: ReadonlyArray<{ name: string; value: Uint8Array | string }>): Pattern[] {
  const byText = new Map<string, string>();
  for (const { name, value } of secrets) {
    const text = typeof value === 'string' ? value : Buffer.from(value).toString('utf8');
    const mark = `[secret:${name}]`;
    const whole = text.replace(/\r?\n$/, '');
    if (whole !== '' && !byText.has(whole)) byText.set(whole, mark);
    if (whole.includes('\n')) {
      for (const line of whole.split('\n')) {
        const l = line.replace(/\r$/, '').trim();
        if (l.length >= MIN_LINE_CHARS && !byText.has(l)) byText.set(l, mark);
      }
    }
  }
  return [...byText].map(([text, mark]) => ({ text, mark })).sort((a, b) => b.text.length - a.text.length);
}

interface Match {
  start: number;
  end: number;
  mark: string;
}

export class LogRedactor {
  private readonly patterns: Pattern[];
  /** Patterns by their first character, longest first (no regular expression: a 64 KiB
   * value of 1,000 lines would make one too large to compile). */
  private readonly byFirst = new Map<string, Pattern[]>();
  private readonly maxLen: number;
  private held = '';

  constructor(secrets: ReadonlyArray<{ name: string; value: Uint8Array | string }>) {
    this.patterns = redactionPatterns(secrets);
    for (const p of this.patterns) {
      const list = this.byFirst.get(p.text[0]!) ?? [];
      list.push(p);
      this.byFirst.set(p.text[0]!, list);
    }
    this.maxLen = this.patterns.reduce((m, p) => Math.max(m, p.text.length), 0);
  }

  /** Whether there is anything to redact at all. */
  get active(): boolean {
    return this.patterns.length > 0;
  }

  /** Leftmost, then longest, occurrences of the patterns in `s`; overlapping ones merged into one. */
  private matches(s: string): Match[] {
    const out: Match[] = [];
    for (let i = 0; i < s.length; ) {
      const found = this.byFirst.get(s[i]!)?.find((p) => s.startsWith(p.text, i));
      if (found === undefined) {
        i++;
        continue;
      }
      // A value that starts inside this one and reaches further (overlapping values) extends it.
      let end = i + found.text.length;
      let mark = found.mark;
      for (let j = i + 1; j < end; j++) {
        const inner = this.byFirst.get(s[j]!)?.find((p) => j + p.text.length > end && s.startsWith(p.text, j));
        if (inner === undefined) continue;
        end = j + inner.text.length;
        if (!mark.includes(inner.mark)) mark += inner.mark;
      }
      out.push({ start: i, end, mark });
      i = end;
    }
    return out;
  }

  /** Text held back (a possible start of a secret), for tests. */
  get pending(): string {
    return this.held;
  }

  /** `text` redacted in one piece (nothing held back). */
  redact(text: string): string {
    if (!this.active || text === '') return text;
    let out = '';
    let pos = 0;
    for (const m of this.matches(text)) {
      out += text.slice(pos, m.start) + m.mark;
      pos = m.end;
    }
    return out + text.slice(pos);
  }

  /** The next chunk of the stream; returns what can be shown now. */
  push(text: string): string {
    if (!this.active) return text;
    const s = this.held + text;
    if (s === '') return '';
    const matches = this.matches(s);
    const cut = this.holdFrom(s, matches);
    let out = '';
    let pos = 0;
    for (const m of matches) {
      if (m.end > cut) break;
      out += s.slice(pos, m.start) + m.mark;
      pos = m.end;
    }
    out += s.slice(pos, cut);
    this.held = s.slice(cut);
    return out;
  }

  /** What is held back, redacted (it may hold a value a longer one starts with): call once the stream ended. */
  end(): string {
    const rest = this.held;
    this.held = '';
    return this.redact(rest);
  }

  /**
   * Where the held-back tail starts: the earliest position whose suffix is a proper prefix
   * of a pattern and that is not inside a match (a match reaching it or beyond is held
   * with it, so a value that another one starts with is not cut short). s.length: none.
   */
  private holdFrom(s: string, matches: ReadonlyArray<{ start: number; end: number }>): number {
    const from = Math.max(0, s.length - this.maxLen + 1);
    let mi = 0;
    for (let i = from; i < s.length; i++) {
      while (mi < matches.length && matches[mi]!.end <= i) mi++;
      const m = matches[mi];
      const inside = m !== undefined && m.start < i;
      const candidates = this.byFirst.get(s[i]!);
      if (candidates === undefined) continue;
      const tail = s.slice(i);
      // Longest first: once a pattern is no longer than the tail, none after it is.
      for (const p of candidates) {
        if (p.text.length <= tail.length) break;
        // Inside a match, a value that may go on past the end would extend it: hold the whole match.
        if (p.text.startsWith(tail)) return inside ? m.start : i;
      }
    }
    return s.length;
  }
}
