/**
 * Pieces of spec validation that parsing and validation both use: the field-error format
 * (`node 'compile': field 'platform': ...`), the result type, and the content no spec (or
 * config file) may hold anywhere; and the two spec constants an agent needs to build a
 * node (without loading the spec schemas).
 */
import type { FieldError } from '../errors.js';

/** Input names double as Dockerfile stage names (lower case in BuildKit). */
export const INPUT_NAME_RE = /^[a-z][a-z0-9_.-]{0,62}$/;
/** Media type of the tars outputs are exported as (deterministic, uncompressed). */
export const ARTIFACT_MEDIA_TYPE = 'application/vnd.kiln.artifact.v1.tar';

export type SpecResult<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };

/** Builds a FieldError whose message names the node and field: `node 'compile': field 'platform': ...`. */
export function fieldError(path: string[], message: string): FieldError {
  const dotted = path.join('.');
  if (path[0] === 'nodes' && path.length >= 2) {
    const field = path.slice(2).join('.');
    const where = field ? `node '${path[1]}': field '${field}'` : `node '${path[1]}'`;
    return { path: dotted, message: `${where}: ${message}` };
  }
  return { path: dotted, message: dotted ? `field '${dotted}': ${message}` : message };
}

/**
 * Keys and strings a spec must not hold anywhere: a `__proto__` key (refused by name: a
 * plain object would drop it silently) and NUL characters. Walked without recursion;
 * depth was bounded by the parser. At most `max` errors.
 */
export function forbiddenContent(value: unknown, max = 20): FieldError[] {
  const out: FieldError[] = [];
  const work: Array<{ v: unknown; path: string[] }> = [{ v: value, path: [] }];
  while (work.length > 0 && out.length < max) {
    const { v, path } = work.pop()!;
    if (typeof v === 'string') {
      if (v.includes('\0')) out.push(fieldError(path, 'must not contain a NUL character'));
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => work.push({ v: x, path: [...path, String(i)] }));
    } else if (v !== null && typeof v === 'object') {
      for (const k of Object.keys(v)) {
        if (k === '__proto__') out.push(fieldError(path, "the key '__proto__' is not allowed"));
        else if (k.includes('\0')) out.push(fieldError(path, `key '${k.replace(/\0/g, '\\0')}' must not contain a NUL character`));
        else work.push({ v: (v as Record<string, unknown>)[k], path: [...path, k] });
      }
    }
  }
  return out;
}
