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
      if (seen.has(k)) {
        const msg = path.length === 1 && path[0] === 'nodes' ? `duplicate node name '${k}'` : `duplicate key '${k}'`;
        out.push(path.length === 1 && path[0] === 'nodes' ? { path: `nodes.${k}`, message: msg } : fieldError([...path, k], msg));
      }
      seen.add(k);
      findDuplicateKeys(pair.value, [...path, k], out);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => findDuplicateKeys(item, [...path, String(i)], out));
  }
}

/** Parses spec text; syntax errors and duplicate keys come back as FieldErrors. */
export function parseSpecText(text: string): SpecResult<unknown> {
  if (Buffer.byteLength(text) > MAX_SPEC_BYTES) {
    return { ok: false, errors: [{ path: '', message: `spec is larger than ${MAX_SPEC_BYTES} bytes` }] };
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
