/**
 * Parsing spec text (YAML or JSON; JSON is read as YAML 1.2) into a plain object, with
 * duplicate keys reported as errors that name the node instead of being silently merged.
 *
 * Every spec is bounded before it costs anything: at most MAX_SPEC_BYTES of valid UTF-8
 * (`decodeSpecBytes`), nesting at most MAX_SPEC_DEPTH deep, YAML aliases expanded at
 * most `maxAliasCount` times (a "billion laughs" document is refused, not expanded), no
 * NUL character in any key or value, and no `__proto__` key (a plain object cannot keep
 * it faithfully, so it is refused by name rather than silently dropped).
 */
import { Lexer, parseDocument, isMap, isSeq, isScalar, isPair, isAlias, type Node as YamlNode } from 'yaml';
import { coerceError, type FieldError } from '../errors.js';
import { fieldError, type SpecResult } from './spec-fields.js';

export const MAX_SPEC_BYTES = 4 * 1024 * 1024;
/** Deepest nesting of mappings and lists a spec may have (a real spec needs about 6). */
export const MAX_SPEC_DEPTH = 64;
/** YAML alias expansions allowed (the yaml library's weighted count). */
const MAX_ALIAS_COUNT = 100;

const fail = (message: string, path = ''): SpecResult<never> => ({ ok: false, errors: [{ path, message }] });

/**
 * Decodes a spec body: refuses more than MAX_SPEC_BYTES and bytes that are not UTF-8
 * (naming the byte offset), instead of replacing them with U+FFFD.
 */
export function decodeSpecBytes(bytes: Uint8Array): SpecResult<string> {
  if (bytes.length > MAX_SPEC_BYTES) return fail(`spec is larger than ${MAX_SPEC_BYTES} bytes`);
  try {
    return { ok: true, value: new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes) };
  } catch {
    return fail(`spec is not valid UTF-8 (first bad byte at offset ${firstInvalidUtf8(bytes)})`);
  }
}

/** Byte offset where the first invalid UTF-8 sequence starts (b.length when all is valid). */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    if (c < 0x80) {
      i++;
      continue;
    }
    // Lead byte: sequence length and the allowed range of the second byte (no overlongs, no surrogates, <= U+10FFFF).
    let len: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c === 0xe0) lo = 0xa0;
      if (c === 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c === 0xf0) lo = 0x90;
      if (c === 0xf4) hi = 0x8f;
    } else return i;
    if (i + len > b.length) return i;
    const second = b[i + 1]!;
    if (second < lo || second > hi) return i;
    for (let k = 2; k < len; k++) if ((b[i + k]! & 0xc0) !== 0x80) return i;
    i += len;
  }
  return b.length;
}

/** Deepest `{`/`[` nesting of JSON text (strings skipped); stops counting past `limit`. */
function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) max = depth;
      if (max > limit) return max;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

/**
 * An upper bound of a YAML document's nesting depth, from the library's lexer (an
 * iterative state machine, so quotes, comments and block scalars are read right and a
 * hostile document cannot overflow the stack; the parser and composer that run next are
 * recursive and must not see a deep document: `- - - ... x` nests one level per 2 bytes).
 * Per token: open flow collections (`[`, `{`) + the block levels of the lines above that
 * this line is indented under + the block indicators (`-`, `?`, `:`) so far on this line.
 * It over-counts a little (a real spec stays far below the limit); stops past `limit`.
 */
function yamlDepthBound(text: string, limit: number): number {
  let flow = 0;
  let max = 0;
  const indents: number[] = []; // indentation of the open block lines above
  let atLineStart = true;
  let lineIndent = 0;
  let onLine = 0; // block indicators on this line
  let lineOpened = false;
  for (const token of new Lexer().lex(text)) {
    if (token === '\n') {
      atLineStart = true;
      lineIndent = 0;
      onLine = 0;
      lineOpened = false;
      continue;
    }
    if (atLineStart && /^[ \t]+$/.test(token)) {
      lineIndent = token.length;
      continue;
    }
    if (atLineStart) atLineStart = false;
    if (flow === 0 && !lineOpened && token !== '#' && !token.startsWith('#')) {
      // the first content of a line: close the block levels it is not indented under
      while (indents.length > 0 && indents[indents.length - 1]! >= lineIndent) indents.pop();
      indents.push(lineIndent);
      lineOpened = true;
    }
    if (token === '[' || token === '{') flow++;
    else if (token === ']' || token === '}') flow = Math.max(0, flow - 1);
    else if (flow === 0 && (token === '-' || token === '?' || token === ':')) onLine++;
    const depth = flow + indents.length + onLine;
    if (depth > max) max = depth;
    if (max > limit) return max;
  }
  return max;
}

function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key);
}

/**
 * Duplicate keys and nesting depth of a YAML document, walked without recursion (a
 * hostile document must not overflow the stack).
 */
function checkYamlTree(root: unknown, out: FieldError[]): void {
  const work: Array<{ node: unknown; path: string[] }> = [{ node: root, path: [] }];
  while (work.length > 0) {
    const { node, path } = work.pop()!;
    if (path.length > MAX_SPEC_DEPTH) {
      out.push({ path: '', message: `spec nests deeper than ${MAX_SPEC_DEPTH} levels` });
      return;
    }
    if (isMap(node)) {
      const seen = new Set<string>();
      for (const pair of node.items) {
        const k = keyText(pair.key);
        if (seen.has(k)) out.push(...dupErrors([[...path, k]]));
        seen.add(k);
        work.push({ node: pair.value, path: [...path, k] });
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => work.push({ node: isPair(item) ? item.value : item, path: [...path, String(i)] }));
    } else if (isAlias(node)) {
      // resolved (and counted) by toJS
    }
  }
}

/**
 * Duplicate keys in JSON text, as dotted paths (JSON.parse silently keeps the last one).
 * One pass over the text with a stack of the keys seen per open object; the caller has
 * bounded the nesting depth.
 */
export function duplicateJsonKeys(text: string): string[][] {
  const out: string[][] = [];
  const stack: Array<{ keys: Set<string> | null; path: string[]; index: number }> = [];
  let i = 0;
  let pendingKey: string | null = null;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const raw = text.slice(i, j + 1);
      i = j + 1;
      const top = stack[stack.length - 1];
      if (top?.keys) {
        let k = i;
        while (k < text.length && /\s/.test(text[k]!)) k++;
        if (text[k] === ':') {
          const key = JSON.parse(raw) as string;
          if (top.keys.has(key)) out.push([...top.path, key]);
          top.keys.add(key);
          pendingKey = key;
        }
      }
      continue;
    }
    if (c === '{' || c === '[') {
      const parent = stack[stack.length - 1];
      const seg = parent ? (parent.keys ? (pendingKey ?? '') : String(parent.index)) : null;
      stack.push({ keys: c === '{' ? new Set() : null, path: seg === null ? [] : [...parent!.path, seg], index: 0 });
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',') {
      const top = stack[stack.length - 1];
      if (top && !top.keys) top.index++;
    }
    i++;
  }
  return out;
}

function dupErrors(paths: string[][]): FieldError[] {
  return paths.map((p) => {
    const k = p[p.length - 1]!;
    const parent = p.slice(0, -1);
    if (parent.length === 1 && parent[0] === 'nodes') return { path: `nodes.${k}`, message: `duplicate node name '${k}'` };
    return fieldError(p, `duplicate key '${k}'`);
  });
}

/**
 * Parses spec text; syntax errors, duplicate keys and exceeded limits come back as
 * FieldErrors. With `json`, the text must be JSON (the body said so); otherwise JSON
 * takes the fast path and anything else is read as YAML.
 */
export function parseSpecText(text: string, opts: { json?: boolean } = {}): SpecResult<unknown> {
  if (Buffer.byteLength(text) > MAX_SPEC_BYTES) return fail(`spec is larger than ${MAX_SPEC_BYTES} bytes`);
  if (opts.json || text.trimStart().startsWith('{')) {
    if (jsonDepth(text, MAX_SPEC_DEPTH) > MAX_SPEC_DEPTH) return fail(`spec nests deeper than ${MAX_SPEC_DEPTH} levels`);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      if (opts.json) return fail(`spec is not valid JSON (${coerceError(err).message}); send YAML as application/yaml`);
      value = undefined;
    }
    if (value !== undefined) {
      const dups = duplicateJsonKeys(text);
      if (dups.length > 0) return { ok: false, errors: dupErrors(dups) };
      return asMapping(value);
    }
  }
  if (yamlDepthBound(text, MAX_SPEC_DEPTH) > MAX_SPEC_DEPTH) return fail(`spec nests deeper than ${MAX_SPEC_DEPTH} levels`);
  let doc;
  try {
    doc = parseDocument(text, { uniqueKeys: false, prettyErrors: true });
  } catch (err) {
    return fail(`spec is not valid YAML/JSON: ${err instanceof RangeError ? `it nests too deeply (at most ${MAX_SPEC_DEPTH} levels)` : coerceError(err).message.split('\n')[0]}`);
  }
  if (doc.errors.length > 0) {
    if (doc.errors.some((e) => /call stack/i.test(e.message))) return fail(`spec nests deeper than ${MAX_SPEC_DEPTH} levels`);
    return { ok: false, errors: doc.errors.slice(0, 5).map((e) => ({ path: '', message: `spec is not valid YAML/JSON: ${e.message.split('\n')[0]}` })) };
  }
  const problems: FieldError[] = [];
  checkYamlTree(doc.contents as YamlNode | null, problems);
  if (problems.length > 0) return { ok: false, errors: problems };
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    if (err instanceof ReferenceError && /alias/i.test(err.message)) {
      return fail(`spec expands YAML aliases too often (more than ${MAX_ALIAS_COUNT}; a guard against "billion laughs" documents): use fewer aliases`);
    }
    if (err instanceof RangeError) return fail(`spec nests deeper than ${MAX_SPEC_DEPTH} levels`);
    return fail(`spec is not valid YAML: ${coerceError(err).message.split('\n')[0]}`);
  }
  return asMapping(value);
}

function asMapping(value: unknown): SpecResult<unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return fail('spec must be a mapping with `nodes`');
  return { ok: true, value };
}
