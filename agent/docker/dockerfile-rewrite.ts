/**
 * `rewriteForInputs` (pure, no I/O): makes a node's inputs (content-addressed artifact
 * images `kiln-cas/<hex>:latest`, tagged with the engine's native arch) available to its
 * Dockerfile as stages named after the inputs. It works on the instructions and physical
 * lines `splitDockerfile` gives (dockerfile-parse.ts): only lines are inserted or
 * extended, every other byte stays as it was, and the output is a function of the
 * arguments only. For the BuildKit of Docker 20.10's built-in Dockerfile frontend.
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
import { BOM, ENV_NAME_RE, flagValue, fromParts, INPUT_NAME_RE, KilnError, splitDockerfile, trimLeft, type PhysicalLine } from '../../shared/core.js';

function invalid(message: string): KilnError {
  return new KilnError('E_INVALID', message);
}

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
