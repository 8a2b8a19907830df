/**
 * `baseImageRefs`: the external images a Dockerfile's build starts FROM, with global ARGs
 * substituted, for base image digests (provenance, cache keys). Pure, no I/O. Word
 * expansion follows the parts of BuildKit's shell lexer (Docker 20.10) that FROM and ARG
 * need: quote removal, escapes, `$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR:+w}`.
 */
import { flagValue, fromParts, splitDockerfile, type SplitDockerfile } from './parse.js';

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
 * The global ARGs (those before the first FROM) as a variable lookup: a build arg wins when
 * the ARG is declared, otherwise the ARG's default (itself expanded with the earlier
 * ARGs); a platform ARG takes its value from `platformArgs`.
 */
function globalArgs(
  instructions: SplitDockerfile['instructions'],
  escape: string,
  buildArgs: Record<string, string>,
  platformArgs: Partial<Record<(typeof PLATFORM_ARGS)[number], string>>,
): Lookup {
  const globals = new Map<string, string | undefined>();
  const lookup: Lookup = (name) => {
    const builtin = (PLATFORM_ARGS as readonly string[]).includes(name);
    if (builtin) return { value: platformArgs[name as (typeof PLATFORM_ARGS)[number]], builtin };
    return { value: globals.get(name), builtin };
  };
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') break;
    if (ins.keyword !== 'ARG') continue;
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
  return lookup;
}

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
  const lookup = globalArgs(instructions, escape, buildArgs, platformArgs);
  const out: BaseImageRef[] = [];
  const stages = new Set<string>();
  for (const ins of instructions) {
    if (ins.keyword !== 'FROM') continue;
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
// pullRefs / pullHosts: every image the build may pull, for registry credentials

/** The `from=` of a `--mount=` flag value (`type=bind,from=img,source=/x`), or null. */
function mountFrom(value: string): string | null {
  for (const field of value.split(',')) {
    const eq = field.indexOf('=');
    if (eq > 0 && field.slice(0, eq).trim().toLowerCase() === 'from') return field.slice(eq + 1).trim();
  }
  return null;
}

/**
 * The images a build pulls: its FROM bases (`baseImageRefs`), and the images named by
 * `COPY --from=` and `RUN --mount=...,from=` that are neither a stage name nor a stage
 * index (both expanded with the global ARGs as FROM is; a ref with an unknown variable is
 * left out). Deduplicated, first occurrence kept. Pure: for the coordinator, which sends
 * registry credentials for these images' hosts only.
 */
export function pullRefs(
  dockerfile: string,
  buildArgs: Record<string, string>,
  platformArgs: Partial<Record<(typeof PLATFORM_ARGS)[number], string>> = {},
): string[] {
  const out = new Set(baseImageRefs(dockerfile, buildArgs, platformArgs).filter((r) => r.resolved).map((r) => r.ref));
  const { escape, instructions } = splitDockerfile(dockerfile);
  const lookup = globalArgs(instructions, escape, buildArgs, platformArgs);
  const stages = new Set<string>();
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const { stage } = fromParts(ins);
      if (stage) stages.add(stage);
      continue;
    }
    const named: string[] = [];
    if (ins.keyword === 'COPY') {
      const f = flagValue(ins.flags, 'from');
      if (f !== null) named.push(f);
    } else if (ins.keyword === 'RUN') {
      for (const flag of ins.flags) if (flag.startsWith('--mount=')) named.push(mountFrom(flag.slice('--mount='.length)) ?? '');
    }
    for (const word of named) {
      if (word === '') continue;
      const { value, resolved } = expandWord(word, escape, lookup);
      const v = value.toLowerCase();
      if (!resolved || v === '' || v === 'scratch' || stages.has(v) || /^[0-9]+$/.test(v)) continue;
      out.add(value);
    }
  }
  return [...out];
}
