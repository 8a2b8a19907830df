/**
 * Parsing spec text (YAML or JSON; JSON is read as YAML 1.2) into a plain object, with
 * duplicate keys reported as errors that name the node instead of being silently merged.
 */
import { parseDocument, isMap, isSeq, isScalar, type Node as YamlNode } from 'yaml';
import type { FieldError } from '../errors.js';
import { fieldError, type SpecResult } from './build-spec.js';

export const MAX_SPEC_BYTES = 4 * 1024 * 1024;

function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key);
}

function findDuplicateKeys(node: unknown, path: string[], out: FieldError[]): void {
  if (isMap(node)) {
    const seen = new Set<string>();
    for (const pair of node.items) {
      const k = keyText(pair.key);
      if (seen.has(k)) out.push(...dupErrors([[...path, k]]));
      seen.add(k);
      findDuplicateKeys(pair.value, [...path, k], out);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => findDuplicateKeys(item, [...path, String(i)], out));
  }
}

/**
 * Duplicate keys in JSON text, as dotted paths (JSON.parse silently keeps the last one).
 * One pass over the text with a stack of the keys seen per open object.
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

/** Parses spec text; syntax errors and duplicate keys come back as FieldErrors. */
export function parseSpecText(text: string): SpecResult<unknown> {
  if (Buffer.byteLength(text) > MAX_SPEC_BYTES) {
    return { ok: false, errors: [{ path: '', message: `spec is larger than ${MAX_SPEC_BYTES} bytes` }] };
  }
  // JSON (what the CLI sends) takes the fast path; anything else is read as YAML.
  if (text.trimStart().startsWith('{')) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = undefined;
    }
    if (value !== undefined) {
      const dups = duplicateJsonKeys(text);
      if (dups.length > 0) return { ok: false, errors: dupErrors(dups) };
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        return { ok: false, errors: [{ path: '', message: 'spec must be a mapping with `nodes`' }] };
      }
      return { ok: true, value };
    }
  }
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: true });
  if (doc.errors.length > 0) {
    return { ok: false, errors: doc.errors.slice(0, 5).map((e) => ({ path: '', message: `spec is not valid YAML/JSON: ${e.message.split('\n')[0]}` })) };
  }
  const dups: FieldError[] = [];
  findDuplicateKeys(doc.contents as YamlNode | null, [], dups);
  if (dups.length > 0) return { ok: false, errors: dups };
  const value: unknown = doc.toJS({ maxAliasCount: 100 });
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, errors: [{ path: '', message: 'spec must be a mapping with `nodes`' }] };
  }
  return { ok: true, value };
}
