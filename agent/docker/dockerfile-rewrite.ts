/**
 * Pure Dockerfile text functions (no I/O) for the BuildKit that ships with Docker 20.10's
 * built-in Dockerfile frontend (no `# syntax=`, no heredocs, no named contexts):
 *
 * - `splitDockerfile`: a minimal instruction splitter after BuildKit's parser: the
 *   `# escape=` directive, line continuations (also across comment and blank lines), comments,
 *   leading `--flag` words; every instruction keeps its original text and line range.
 * - `baseImageRefs`: the external images the build starts FROM, with global ARGs substituted,
 *   for base image digests (provenance, cache keys).
 * - `rewriteForInputs`: makes a node's inputs (content-addressed artifact images
 *   `kiln-cas/<hex>:latest`, tagged with the engine's native arch) available as stages named
 *   after the inputs. Only lines are inserted or extended; every other byte stays as it was,
 *   and the output is a function of the arguments only.
 *
 * Rewrite rules:
 * - one `FROM --platform=$BUILDPLATFORM <image> AS <name>` per input, in input order, right
 *   before the user's first FROM (parser directives and global ARGs stay first).
 *   `$BUILDPLATFORM` keeps a cross build (`--platform linux/s390x`) from looking for the
 *   artifact under the target platform.
 * - an input with `mount` adds `--mount=type=bind,from=<name>,target=<mount>` (read-only, the
 *   bind mount default) right after the keyword of every RUN, unless that RUN already mounts
 *   the input (`--mount=...from=<name>...`, whatever its target).
 *   Mount paths are restricted to `/` followed by `A-Z a-z 0-9 . _ - + @ % = : ~ /`, and
 *   anything else is rejected (E_INVALID) rather than quoted. BuildKit reads the flag twice:
 *   the instruction splitter drops quotes and backslashes from the `--mount=` word, then the
 *   value is read as a CSV record and every field value is variable-expanded. So a path with
 *   `,` `"` `'` `\` `$` or whitespace would need two nested layers of quoting.
 * - an input's `env` adds one `ENV KEY="VALUE"` line per key after every FROM of the user's
 *   stages (inputs in order, keys in object order). Inside the quotes only `"` and the
 *   escape character are escaped. `$VAR` is left as it is on purpose, so
 *   `PATH="/opt/python/bin:$PATH"` expands against the stage's own environment. Since the
 *   ENV goes into every user stage, it also ends up in the final image's config.
 *   Exception: a stage built FROM an earlier user stage (`FROM build`, written literally)
 *   inherits that ENV already, so it gets none; a second `PATH="...:$PATH"` would repeat
 *   the prefix.
 * - a Dockerfile that already has a stage named like an input, or that uses a numeric
 *   `COPY --from=<index>` (the inserted stages would shift the indexes), is rejected with
 *   E_INVALID.
 * - inserted lines use the file's newline style (the first line end found, else `\n`). A file
 *   without a trailing newline gets none added. A UTF-8 BOM stays at the very start.
 */
import { ENV_NAME_RE, INPUT_NAME_RE, KilnError } from '../../shared/index.js';

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

const BOM = '\uFEFF';
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

const trimLeft = (s: string) => s.replace(/^\s+/u, '');
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

// ---------------------------------------------------------------------------------------
// Word expansion (BuildKit's shell lexer, the parts FROM and ARG need)

/** A variable's value; `undefined` = no known value (see baseImageRefs). */
type Lookup = (name: string) => { value: string | undefined; builtin: boolean };

class Unresolved extends Error {}

/** Quote removal, escapes and `$VAR` / `${VAR}` / `${VAR:-w}` / `${VAR:+w}` substitution. */
function expandWord(word: string, escape: string, lookup: Lookup): { value: string; resolved: boolean } {
  let pos = 0;
  let resolved = true;
  const peek = () => word[pos];
  const value = (name: string, mode: 'plain' | 'test') => {
    const v = lookup(name);
    if (v.value === undefined && (mode === 'plain' || v.builtin)) resolved = false;
    return v.value ?? '';
  };
  const name = () => {
    const m = /^(?:[0-9]+|[A-Za-z_][A-Za-z0-9_]*)/.exec(word.slice(pos));
    pos += m?.[0].length ?? 0;
    return m?.[0] ?? '';
  };
  const dollar = (): string => {
    pos++;
    if (peek() !== '{') {
      const n = name();
      return n === '' ? '$' : value(n, 'plain');
    }
    pos++;
    const n = name();
    if (n === '') throw new Unresolved();
    if (peek() === '}') {
      pos++;
      return value(n, 'plain');
    }
    const op = word.slice(pos, pos + 2);
    if (op !== ':-' && op !== ':+') throw new Unresolved();
    pos += 2;
    const v = value(n, 'test');
    const resolvedBefore = resolved;
    const alt = until('}');
    const useAlt = op === ':-' ? v === '' : v !== '';
    if (!useAlt) resolved = resolvedBefore; // an unused alternative cannot make the ref unresolved
    return useAlt ? alt : op === ':-' ? v : '';
  };
  const until = (stop: string | null): string => {
    let out = '';
    while (pos < word.length) {
      const ch = word[pos]!;
      if (stop !== null && ch === stop) {
        pos++;
        return out;
      }
      if (ch === "'") {
        const end = word.indexOf("'", pos + 1);
        if (end < 0) throw new Unresolved();
        out += word.slice(pos + 1, end);
        pos = end + 1;
      } else if (ch === '"') {
        pos++;
        for (;;) {
          const c = word[pos];
          if (c === undefined) throw new Unresolved();
          if (c === '"') {
            pos++;
            break;
          }
          if (c === '$') {
            out += dollar();
            continue;
          }
          pos++;
          if (c === escape && (peek() === '"' || peek() === '$' || peek() === escape)) out += word[pos++];
          else if (!(c === escape && peek() === undefined)) out += c;
        }
      } else if (ch === '$') {
        out += dollar();
      } else {
        pos++;
        if (ch === escape) {
          if (pos < word.length) out += word[pos++];
        } else out += ch;
      }
    }
    if (stop !== null) throw new Unresolved();
    return out;
  };
  try {
    const out = until(null);
    return resolved ? { value: out, resolved } : { value: word, resolved };
  } catch (err) {
    if (err instanceof Unresolved) return { value: word, resolved: false };
    throw err;
  }
}

/** BuildKit's parseWords: splits on blanks outside quotes, keeping quotes and escapes. */
function splitWords(text: string, escape: string): string[] {
  const words: string[] = [];
  let word = '';
  let quote = '';
  for (let pos = 0; pos < text.length; pos++) {
    const ch = text[pos]!;
    if (!quote && /\s/u.test(ch)) {
      if (word) words.push(word);
      word = '';
      continue;
    }
    if (!quote && (ch === '"' || ch === "'")) quote = ch;
    else if (quote && ch === quote) quote = '';
    if (ch === escape && quote !== "'" && pos + 1 < text.length) {
      word += ch + text[++pos];
      continue;
    }
    word += ch;
  }
  if (word) words.push(word);
  return words;
}

/** FROM's arguments: the base and the optional `AS name` (lower-cased). */
function fromParts(ins: DockerfileInstruction): { base: string; stage: string | null } {
  const words = ins.args.split(/\s+/).filter((w) => w !== '');
  const stage = words.length === 3 && words[1]!.toLowerCase() === 'as' ? words[2]!.toLowerCase() : null;
  return { base: words[0] ?? '', stage };
}

function flagValue(flags: string[], name: string): string | null {
  const prefix = `--${name}=`;
  const f = flags.find((x) => x.startsWith(prefix));
  return f === undefined ? null : f.slice(prefix.length);
}

// ---------------------------------------------------------------------------------------
// baseImageRefs

export interface BaseImageRef {
  /** The image as the build will pull it; as written when `resolved` is false. */
  ref: string;
  /** The `--platform=` value as written (e.g. `$BUILDPLATFORM`), or null. */
  platformFlag: string | null;
  /** 1-based line of the (first) FROM using it. */
  line: number;
  /** False when a variable in the ref has no known value (the ref is then left as written). */
  resolved: boolean;
}

/** The automatic platform ARGs BuildKit defines in the global scope. */
export const PLATFORM_ARGS = [
  'BUILDPLATFORM', 'BUILDOS', 'BUILDARCH', 'BUILDVARIANT',
  'TARGETPLATFORM', 'TARGETOS', 'TARGETARCH', 'TARGETVARIANT',
] as const;

/**
 * The external images a build starts FROM, deduplicated by ref (first occurrence kept).
 * Variables are substituted from the global ARGs (those before the first FROM): a build arg
 * wins when the ARG is declared, otherwise the ARG's default (itself expanded with the
 * earlier ARGs). A variable has no known value when it is not declared, is declared without a
 * default and not given as a build arg, or is a platform ARG missing from `platformArgs`.
 * `$X`/`${X}` of such a variable makes the ref unresolved. `${X:-w}` falls back to `w` and
 * `${X:+w}` gives '', as BuildKit does, except for a platform ARG, whose real value is unknown.
 * `scratch` and references to earlier stages are skipped.
 */
export function baseImageRefs(
  dockerfile: string,
  buildArgs: Record<string, string>,
  platformArgs: Partial<Record<(typeof PLATFORM_ARGS)[number], string>> = {},
): BaseImageRef[] {
  const { escape, instructions } = splitDockerfile(dockerfile);
  const globals = new Map<string, string | undefined>();
  const lookup: Lookup = (name) => {
    const builtin = (PLATFORM_ARGS as readonly string[]).includes(name);
    if (builtin) return { value: platformArgs[name as (typeof PLATFORM_ARGS)[number]], builtin };
    return { value: globals.get(name), builtin };
  };
  const out: BaseImageRef[] = [];
  const stages = new Set<string>();
  let seenFrom = false;
  for (const ins of instructions) {
    if (ins.keyword === 'ARG' && !seenFrom) {
      for (const word of splitWords(ins.args, escape)) {
        const eq = word.indexOf('=');
        const key = eq < 0 ? word : word.slice(0, eq);
        if (Object.hasOwn(buildArgs, key)) globals.set(key, buildArgs[key]);
        else if (eq < 0) globals.set(key, undefined);
        else {
          const v = expandWord(word.slice(eq + 1), escape, lookup);
          globals.set(key, v.resolved ? v.value : undefined);
        }
      }
    }
    if (ins.keyword !== 'FROM') continue;
    seenFrom = true;
    const { base, stage } = fromParts(ins);
    const { value: ref, resolved } = expandWord(base, escape, lookup);
    const skip = ref.toLowerCase() === 'scratch' || stages.has(ref.toLowerCase());
    if (stage) stages.add(stage);
    if (skip || out.some((r) => r.ref === (ref || base))) continue;
    // an empty result (`FROM ${X:+y}` with X unset) would fail the build: report it as written
    out.push({ ref: ref || base, platformFlag: flagValue(ins.flags, 'platform'), line: ins.startLine, resolved: resolved && ref !== '' });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// rewriteForInputs

export interface DockerfileInput {
  /** Stage name the Dockerfile uses (`from=runtime`, `COPY --from=runtime`). */
  name: string;
  /** Local image holding the artifact, e.g. `kiln-cas/<hex>:latest`. */
  image: string;
  /** Absolute path to bind-mount the artifact at in every RUN, or null. */
  mount: string | null;
  /** ENV to set in every stage of the user's Dockerfile. */
  env: Record<string, string>;
}

const IMAGE_RE = /^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/;
const MOUNT_RE = /^\/[A-Za-z0-9._+@%=:~/-]*$/;

function validateInputs(inputs: DockerfileInput[]): void {
  const names = new Set<string>();
  for (const input of inputs) {
    if (!INPUT_NAME_RE.test(input.name)) {
      throw invalid(`input name '${input.name}' is not a valid stage name (lowercase letters, digits, '-', '_', '.', starting with a letter)`);
    }
    if (names.has(input.name)) throw invalid(`input name '${input.name}' is used twice`);
    names.add(input.name);
    if (!IMAGE_RE.test(input.image)) throw invalid(`input '${input.name}': image '${input.image}' is not a plain image reference`);
    if (input.mount !== null && (!MOUNT_RE.test(input.mount) || !/[^/]/.test(input.mount))) {
      throw invalid(
        `input '${input.name}': mount path '${input.mount}' must be an absolute path other than / made of letters, digits and . _ - + @ % = : ~ / (no spaces, commas, quotes, backslashes or $)`,
      );
    }
    for (const [key, value] of Object.entries(input.env)) {
      if (!ENV_NAME_RE.test(key)) throw invalid(`input '${input.name}': env key '${key}' is not a valid variable name`);
      if (/[\r\n\0]/.test(value)) throw invalid(`input '${input.name}': env ${key} contains a line break or NUL`);
    }
  }
}

/** Fields of a Go encoding/csv record (the `--mount=` value), or null when malformed. */
function csvFields(record: string): string[] | null {
  const fields: string[] = [];
  let pos = 0;
  for (;;) {
    let field = '';
    if (record[pos] === '"') {
      pos++;
      for (;;) {
        const q = record.indexOf('"', pos);
        if (q < 0) return null;
        field += record.slice(pos, q);
        pos = q + 1;
        if (record[pos] !== '"') break;
        field += '"';
        pos++;
      }
      if (pos < record.length && record[pos] !== ',') return null;
    } else {
      const c = record.indexOf(',', pos);
      field = record.slice(pos, c < 0 ? record.length : c);
      if (field.includes('"')) return null;
      pos = c < 0 ? record.length : c;
    }
    fields.push(field);
    if (pos >= record.length) return fields;
    pos++;
  }
}

/** Stage names (lower-cased) the RUN's `--mount` flags take `from=`. */
function mountedFroms(flags: string[]): Set<string> {
  const froms = new Set<string>();
  for (const flag of flags) {
    if (!flag.startsWith('--mount=')) continue;
    for (const field of csvFields(flag.slice('--mount='.length)) ?? []) {
      const eq = field.indexOf('=');
      if (eq > 0 && field.slice(0, eq).toLowerCase() === 'from') froms.add(field.slice(eq + 1).toLowerCase());
    }
  }
  return froms;
}

/** `"VALUE"` for an ENV line: only `"` and the escape character are escaped; `$` stays. */
function envQuote(value: string, escape: string): string {
  let out = '';
  for (const ch of value) out += ch === '"' || ch === escape ? escape + ch : ch;
  return `"${out}"`;
}

/** Adds the inputs as stages, bind mounts and ENV (rules in the header). Throws E_INVALID. */
export function rewriteForInputs(dockerfile: string, inputs: DockerfileInput[]): string {
  validateInputs(inputs);
  if (inputs.length === 0) return dockerfile;
  const parsed = splitDockerfile(dockerfile);
  const { escape, instructions, lines, newline } = parsed;
  const froms = instructions.filter((ins) => ins.keyword === 'FROM');
  const firstFrom = froms[0];
  if (!firstFrom) throw invalid('the Dockerfile has no FROM instruction, so inputs cannot be added');

  const inputNames = new Map(inputs.map((input) => [input.name, input]));
  for (const from of froms) {
    const { stage } = fromParts(from);
    if (stage !== null && inputNames.has(stage)) {
      throw invalid(`input '${stage}' clashes with the stage 'FROM ... AS ${stage}' the Dockerfile defines on line ${from.startLine}; rename the stage or the input`);
    }
  }
  for (const ins of instructions) {
    const copyFrom = ins.keyword === 'COPY' ? flagValue(ins.flags, 'from') : null;
    if (copyFrom !== null && /^[0-9]+$/.test(copyFrom)) {
      throw invalid(`line ${ins.startLine}: COPY --from=${copyFrom} refers to a stage by index, which the stages kiln adds for inputs would shift; name the stage (FROM ... AS name) and use --from=name`);
    }
  }

  const before = new Map<number, string[]>();
  const after = new Map<number, string[]>();
  const edited = new Map<number, string>();
  before.set(firstFrom.startLine, inputs.map((input) => `FROM --platform=$BUILDPLATFORM ${input.image} AS ${input.name}`));
  const envLines = inputs.flatMap((input) => Object.entries(input.env).map(([k, v]) => `ENV ${k}=${envQuote(v, escape)}`));
  const userStages = new Set<string>();
  for (const from of froms) {
    const { base, stage } = fromParts(from);
    if (envLines.length > 0 && !userStages.has(base.toLowerCase())) after.set(from.endLine, envLines);
    if (stage !== null) userStages.add(stage);
  }
  for (const ins of instructions) {
    if (ins.keyword !== 'RUN') continue;
    const have = mountedFroms(ins.flags);
    const add = inputs.filter((input) => input.mount !== null && !have.has(input.name));
    if (add.length === 0) continue;
    const text = lines[ins.startLine - 1]!.text;
    const indent = text.length - trimLeft(text).length;
    const keywordEnd = indent + ins.keyword.length;
    if (text.slice(indent, keywordEnd).toUpperCase() !== ins.keyword) {
      throw invalid(`line ${ins.startLine}: cannot find the RUN keyword to add the input mounts to`);
    }
    const mounts = add.map((input) => ` --mount=type=bind,from=${input.name},target=${input.mount}`).join('');
    edited.set(ins.startLine, text.slice(0, keywordEnd) + mounts + text.slice(keywordEnd));
  }

  const out: Array<PhysicalLine & { inserted: boolean }> = [];
  const insert = (texts: string[] | undefined) => {
    for (const text of texts ?? []) out.push({ text, eol: newline, inserted: true });
  };
  lines.forEach((line, idx) => {
    insert(before.get(idx + 1));
    out.push({ text: edited.get(idx + 1) ?? line.text, eol: line.eol, inserted: false });
    insert(after.get(idx + 1));
  });
  // a line that no longer ends the file needs a line end; an inserted last line gets the
  // original file's ending (none when the file had no trailing newline)
  const endsWithNewline = lines[lines.length - 1]?.eol.endsWith('\n') ?? false;
  out.forEach((line, idx) => {
    if (idx < out.length - 1 && !line.eol.endsWith('\n')) line.eol = newline;
  });
  const last = out[out.length - 1];
  if (last?.inserted && !endsWithNewline) last.eol = '';
  return (parsed.bom ? BOM : '') + out.map((line) => line.text + line.eol).join('');
}
