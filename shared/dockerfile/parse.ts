/**
 * The Dockerfile splitter (pure, no I/O), after the parser of the BuildKit that ships with
 * Docker 20.10's built-in Dockerfile frontend (no `# syntax=`, no heredocs, no named
 * contexts): the `# escape=` directive, line continuations (also across comment and blank
 * lines), comments, leading `--flag` words. Every instruction keeps its original text and
 * line range, so the rewrite (dockerfile-rewrite.ts) can insert and extend lines while
 * leaving every other byte as it was. Also the small readers of an instruction both the
 * rewrite and the base image scan use (`fromParts`, `flagValue`).
 */
import { KilnError } from '../errors.js';

/** One logical instruction (continuation lines joined, comments inside it dropped). */
export interface DockerfileInstruction {
  /** Upper-cased keyword: `FROM`, `RUN`, ... */
  keyword: string;
  /** Leading `--name=value` words, with quotes and backslashes removed as BuildKit does. */
  flags: string[];
  /** The rest of the logical line after the flags, trimmed. */
  args: string;
  /** 1-based first and last physical line (inclusive). */
  startLine: number;
  endLine: number;
  /** The original text of lines startLine..endLine, interior comments and line ends included. */
  raw: string;
}

export interface PhysicalLine {
  /** The line without its line end (the BOM of line 1 removed). */
  text: string;
  /** `\n`, `\r\n`, or what the last line ends with (usually ''). */
  eol: string;
}

export interface SplitDockerfile {
  escape: '\\' | '`';
  /** Parser directives found at the top, lower-cased names (`escape`, `syntax`). */
  directives: Record<string, string>;
  instructions: DockerfileInstruction[];
  lines: PhysicalLine[];
  /** Newline style for inserted lines. */
  newline: '\n' | '\r\n';
  bom: boolean;
}

export const BOM = '\uFEFF';
const DIRECTIVE_RE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;
const VALID_DIRECTIVES = new Set(['escape', 'syntax']);
const WS_SPLIT_RE = /[\t\v\f\r ]+/;

function invalid(message: string): KilnError {
  return new KilnError('E_INVALID', message);
}

function splitLines(text: string): PhysicalLine[] {
  const lines: PhysicalLine[] = [];
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    const end = nl < 0 ? text.length : nl;
    let body = text.slice(pos, end);
    let eol = nl < 0 ? '' : '\n';
    if (body.endsWith('\r')) {
      body = body.slice(0, -1);
      eol = `\r${eol}`;
    }
    lines.push({ text: body, eol });
    pos = end + 1;
  }
  return lines;
}

export const trimLeft = (s: string) => s.replace(/^\s+/u, '');
const isCommentLine = (s: string) => trimLeft(s).startsWith('#');

/** BuildKit's extractBuilderFlags (Docker 20.10 vintage): leading `--` words, then the rest. */
function extractFlags(line: string): { flags: string[]; rest: string } {
  const flags: string[] = [];
  let pos = 0;
  for (;;) {
    while (pos < line.length && /\s/u.test(line[pos]!)) pos++;
    if (pos >= line.length) return { flags, rest: '' };
    if (!line.startsWith('--', pos)) return { flags, rest: line.slice(pos) };
    let word = '';
    let quote = '';
    let blankOk = false;
    for (; pos < line.length; pos++) {
      const ch = line[pos]!;
      if (quote) {
        if (ch === quote) quote = '';
        else if (ch === '\\' && pos + 1 < line.length) word += line[++pos];
        else if (ch !== '\\') word += ch;
        else quote = '';
        continue;
      }
      if (/\s/u.test(ch)) break;
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOk = true;
      } else if (ch === '\\') {
        if (pos + 1 < line.length) word += line[++pos];
      } else word += ch;
    }
    if (word === '--') return { flags, rest: line.slice(pos) };
    if (blankOk || word.length > 0) flags.push(word);
  }
}

/** Splits a Dockerfile into parser directives and logical instructions, as BuildKit does. */
export function splitDockerfile(dockerfile: string): SplitDockerfile {
  const bom = dockerfile.startsWith(BOM);
  const lines = splitLines(bom ? dockerfile.slice(1) : dockerfile);
  const firstEol = lines.find((l) => l.eol.endsWith('\n'))?.eol;
  const directives: Record<string, string> = {};
  let escape: '\\' | '`' = '\\';
  let directivesDone = false;
  const directive = (line: string, lineNo: number) => {
    if (directivesDone) return;
    const m = DIRECTIVE_RE.exec(line);
    const key = m?.[1]?.toLowerCase();
    if (!m || !key || !VALID_DIRECTIVES.has(key)) {
      directivesDone = true;
      return;
    }
    if (key in directives) throw invalid(`Dockerfile line ${lineNo}: only one ${key} parser directive can be used`);
    directives[key] = m[2]!;
    if (key === 'escape') {
      if (m[2] !== '\\' && m[2] !== '`') throw invalid(`Dockerfile line ${lineNo}: invalid escape token '${m[2]}' (expected \` or \\)`);
      escape = m[2];
    }
  };
  // escape + optional blanks at the end of a line (the escape may change on line 1 only)
  const continuation = () => new RegExp(`${escape === '\\' ? '\\\\' : '`'}[ \\t]*$`);

  const instructions: DockerfileInstruction[] = [];
  let i = 0;
  while (i < lines.length) {
    const startIdx = i;
    const first = trimLeft(lines[i]!.text);
    directive(first, i + 1);
    i++;
    const contRe = continuation();
    let line = first.startsWith('#') ? '' : first;
    let endOfLine = !contRe.test(line);
    if (!endOfLine) line = line.replace(contRe, '');
    if (endOfLine && line === '') continue;
    while (!endOfLine && i < lines.length) {
      const text = lines[i]!.text;
      directive(text, i + 1);
      i++;
      if (isCommentLine(text) || trimLeft(text) === '') continue;
      endOfLine = !contRe.test(text);
      line += endOfLine ? text : text.replace(contRe, '');
    }
    const trimmed = line.trim();
    const cut = WS_SPLIT_RE.exec(trimmed);
    const keyword = (cut ? trimmed.slice(0, cut.index) : trimmed).toUpperCase();
    const { flags, rest } = cut ? extractFlags(trimmed.slice(cut.index + cut[0].length)) : { flags: [], rest: '' };
    const raw = lines
      .slice(startIdx, i)
      .map((l, k) => (k === 0 && startIdx === 0 && bom ? BOM : '') + l.text + l.eol)
      .join('');
    instructions.push({ keyword, flags, args: rest.trim(), startLine: startIdx + 1, endLine: i, raw });
  }
  return { escape, directives, instructions, lines, newline: firstEol === '\r\n' ? '\r\n' : '\n', bom };
}

/** FROM's arguments: the base and the optional `AS name` (lower-cased). */
export function fromParts(ins: DockerfileInstruction): { base: string; stage: string | null } {
  const words = ins.args.split(/\s+/).filter((w) => w !== '');
  const stage = words.length === 3 && words[1]!.toLowerCase() === 'as' ? words[2]!.toLowerCase() : null;
  return { base: words[0] ?? '', stage };
}

/** The value of a `--name=value` flag, or null. */
export function flagValue(flags: string[], name: string): string | null {
  const prefix = `--${name}=`;
  const f = flags.find((x) => x.startsWith(prefix));
  return f === undefined ? null : f.slice(prefix.length);
}
