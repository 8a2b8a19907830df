/**
 * Requests derived from an OpenAPI 3.1 document, and responses checked against it.
 *
 * - `operationsOf(doc)`: every operation with its parameters, request body media types
 *   and responses ($refs followed), each schema addressed by its JSON pointer in the doc.
 * - `DocValidator`: ajv (JSON Schema 2020-12, strict off, formats) over the whole
 *   document, so `$ref`s between schemas resolve as the document means them.
 * - `valueArb` / `invalidValueArb`: fast-check arbitraries derived from a schema (types,
 *   enum, const, pattern via fc.stringMatching, lengths, ranges, items, properties,
 *   required, additionalProperties, anyOf/oneOf); invalid values are mutations of one
 *   kind (wrong type, out of range, too long/short, pattern or enum miss, required
 *   property missing, unknown property) double-checked to fail the schema.
 * - `requestArbs(op, ctx)`: valid requests and deliberately invalid ones (one defect
 *   each: a parameter, a missing required body, a malformed or schema-invalid body, an
 *   undocumented media type), path parameters mixed with real values from `ctx.real`.
 * - `checkResponse`: the status is documented (or a range or `default`), the
 *   content-type is documented for it, JSON bodies validate against the schema, and SSE
 *   events against an event schema when the document gives one.
 */
import fc from 'fast-check';
import { Ajv2020 } from 'ajv/dist/2020.js';
import formatsModule from 'ajv-formats';
import type { ValidateFunction } from 'ajv/dist/2020.js';
import { stringify as yamlStringify } from 'yaml';
import { excerpt, type ProbeRequest, type ProbeResponse, type Violation } from './http-probe.js';
import { coerceError } from '../../shared/index.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type SchemaObj = Record<string, unknown>;

export interface OpenApiDoc {
  openapi: string;
  info?: Record<string, unknown>;
  paths?: Record<string, Record<string, unknown>>;
  components?: Record<string, Record<string, unknown>>;
  security?: Array<Record<string, string[]>>;
  [k: string]: unknown;
}

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

export interface ParamSpec {
  name: string;
  in: 'path' | 'query' | 'header' | 'cookie';
  required: boolean;
  /** JSON pointer of the parameter's schema (null when it has none). */
  schema: string | null;
}

export interface MediaSpec {
  mediaType: string;
  /** JSON pointer of the media type object. */
  at: string;
  /** JSON pointer of its schema (null when it has none). */
  schema: string | null;
}

export interface ResponseSpec {
  at: string;
  /** null: the response documents no content. */
  content: MediaSpec[] | null;
}

export interface OperationSpec {
  /** `GET /api/v1/builds/{id}` */
  key: string;
  method: string;
  path: string;
  at: string;
  summary: string;
  description: string;
  params: ParamSpec[];
  body: { required: boolean; media: MediaSpec[] } | null;
  responses: Record<string, ResponseSpec>;
  /** The effective security requirements (operation's, else the document's); undefined when neither says. */
  security: Array<Record<string, string[]>> | undefined;
  raw: Record<string, unknown>;
}

const esc = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');
const unesc = (s: string) => s.replace(/~1/g, '/').replace(/~0/g, '~');

export function pointerJoin(base: string, ...parts: Array<string | number>): string {
  return `${base}${parts.map((p) => `/${esc(String(p))}`).join('')}`;
}

export function atPointer(doc: unknown, pointer: string): unknown {
  if (pointer === '') return doc;
  let cur: unknown = doc;
  for (const part of pointer.slice(1).split('/').map(unesc)) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** Follows local `$ref`s from `pointer` to the object they name: [object, its pointer]. */
export function follow(doc: unknown, pointer: string): [Record<string, unknown> | undefined, string] {
  let at = pointer;
  for (let i = 0; i < 32; i++) {
    const v = atPointer(doc, at);
    if (v === null || typeof v !== 'object') return [undefined, at];
    const ref = (v as Record<string, unknown>).$ref;
    if (typeof ref !== 'string' || !ref.startsWith('#')) return [v as Record<string, unknown>, at];
    at = ref.slice(1);
  }
  return [undefined, at];
}

function mediaOf(doc: OpenApiDoc, contentAt: string): MediaSpec[] | null {
  const content = atPointer(doc, contentAt);
  if (!content || typeof content !== 'object') return null;
  return Object.keys(content).map((mediaType) => {
    const at = pointerJoin(contentAt, mediaType);
    const m = atPointer(doc, at) as Record<string, unknown> | undefined;
    return { mediaType, at, schema: m && m.schema !== undefined ? pointerJoin(at, 'schema') : null };
  });
}

/** Every operation of the document. */
export function operationsOf(doc: OpenApiDoc): OperationSpec[] {
  const out: OperationSpec[] = [];
  for (const path of Object.keys(doc.paths ?? {})) {
    const [item, itemAt] = follow(doc, pointerJoin('', 'paths', path));
    if (!item) continue;
    const shared = Array.isArray(item.parameters) ? item.parameters.map((_, i) => pointerJoin(itemAt, 'parameters', i)) : [];
    for (const method of HTTP_METHODS) {
      const raw = item[method] as Record<string, unknown> | undefined;
      if (!raw) continue;
      const at = pointerJoin(itemAt, method);
      const own = Array.isArray(raw.parameters) ? raw.parameters.map((_, i) => pointerJoin(at, 'parameters', i)) : [];
      const params = new Map<string, ParamSpec>();
      for (const pAt of [...shared, ...own]) {
        const [p, resolvedAt] = follow(doc, pAt);
        if (!p) continue;
        const spec: ParamSpec = {
          name: String(p.name),
          in: p.in as ParamSpec['in'],
          required: p.required === true || p.in === 'path',
          schema: p.schema !== undefined ? pointerJoin(resolvedAt, 'schema') : null,
        };
        params.set(`${spec.in}:${spec.name}`, spec);
      }
      let body: OperationSpec['body'] = null;
      if (raw.requestBody !== undefined) {
        const [rb, rbAt] = follow(doc, pointerJoin(at, 'requestBody'));
        if (rb) body = { required: rb.required === true, media: mediaOf(doc, pointerJoin(rbAt, 'content')) ?? [] };
      }
      const responses: Record<string, ResponseSpec> = {};
      for (const code of Object.keys((raw.responses as Record<string, unknown> | undefined) ?? {})) {
        const [r, rAt] = follow(doc, pointerJoin(at, 'responses', code));
        if (!r) continue;
        responses[code] = { at: rAt, content: r.content !== undefined ? mediaOf(doc, pointerJoin(rAt, 'content')) : null };
      }
      out.push({
        key: `${method.toUpperCase()} ${path}`,
        method,
        path,
        at,
        summary: typeof raw.summary === 'string' ? raw.summary : '',
        description: typeof raw.description === 'string' ? raw.description : '',
        params: [...params.values()],
        body,
        responses,
        security: (raw.security as OperationSpec['security']) ?? doc.security,
        raw,
      });
    }
  }
  return out;
}

/** The documented response for a status: exact, then range (`4XX`), then `default`. */
export function documentedResponse(op: OperationSpec, status: number): [string, ResponseSpec] | null {
  for (const k of [String(status), `${Math.floor(status / 100)}XX`, `${Math.floor(status / 100)}xx`, 'default']) {
    const r = op.responses[k];
    if (r) return [k, r];
  }
  return null;
}

/** Whether a documented media-type key (which may be a range like `text/*`) covers an actual media type. */
export function mediaMatches(documented: string, actual: string): boolean {
  const d = documented.split(';')[0]!.trim().toLowerCase();
  if (d === '*/*' || d === actual) return true;
  if (d.endsWith('/*')) return actual.startsWith(d.slice(0, -1));
  return false;
}

export function isJsonMedia(mediaType: string): boolean {
  const m = mediaType.toLowerCase();
  return m === 'application/json' || m.endsWith('+json');
}

const DOC_ID = 'https://kiln.invalid/openapi.json';

function stripSchemaKeyword(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripSchemaKeyword);
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (k !== '$schema' && k !== '$id') out[k] = stripSchemaKeyword(x);
  return out;
}

type AddFormats = (ajv: Ajv2020) => unknown;
const addFormats: AddFormats = ((formatsModule as unknown as { default?: AddFormats }).default ?? formatsModule) as unknown as AddFormats;

/** ajv over the whole document: validate a value against the schema at a JSON pointer. */
export class DocValidator {
  private readonly ajv: Ajv2020;
  private readonly cache = new Map<string, ValidateFunction | Error>();

  constructor(readonly doc: OpenApiDoc) {
    this.ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false, validateFormats: true });
    addFormats(this.ajv);
    this.ajv.addSchema({ ...(stripSchemaKeyword(doc) as Record<string, unknown>), $id: DOC_ID }, undefined, undefined, false);
  }

  private compiled(pointer: string): ValidateFunction | Error {
    let f = this.cache.get(pointer);
    if (!f) {
      try {
        // the pointer's parts are already ~-escaped; a URI fragment also needs them percent-encoded
        f = this.ajv.compile({ $ref: `${DOC_ID}#${pointer.split('/').map(encodeURIComponent).join('/')}` });
      } catch (err) {
        f = coerceError(err);
      }
      this.cache.set(pointer, f);
    }
    return f;
  }

  /** null when valid, else the ajv errors as text (or why the schema does not compile). */
  validate(pointer: string, value: unknown): string | null {
    const f = this.compiled(pointer);
    if (f instanceof Error) return `the schema at ${pointer} does not compile: ${f.message}`;
    if (f(value)) return null;
    return (f.errors ?? [])
      .slice(0, 6)
      .map((e) => `${e.instancePath || '(root)'} ${e.message ?? ''}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ''}`)
      .join('; ');
  }

  /** true when the pointer's schema compiles (broken schemas are reported, not used). */
  compiles(pointer: string): boolean {
    return !(this.compiled(pointer) instanceof Error);
  }
}

// ------------------------------------------------------------------ arbitraries

export interface ArbContext {
  doc: OpenApiDoc;
  validator: DocValidator;
}

function typesOf(s: SchemaObj): string[] | null {
  if (typeof s.type === 'string') return [s.type];
  if (Array.isArray(s.type)) return s.type.map(String);
  if ('const' in s) return null;
  if (s.properties || s.additionalProperties !== undefined || s.required) return ['object'];
  if (s.items) return ['array'];
  return null;
}

function schemaAt(ctx: ArbContext, pointer: string): [SchemaObj | boolean, string] {
  const raw = atPointer(ctx.doc, pointer);
  if (typeof raw === 'boolean') return [raw, pointer];
  const [s, at] = follow(ctx.doc, pointer);
  return [s ?? true, at];
}

const anyJson: fc.Arbitrary<Json> = fc.oneof(fc.constant(null), fc.boolean(), fc.integer({ min: -5, max: 5 }), fc.string({ maxLength: 8 }));

function stringArb(s: SchemaObj): fc.Arbitrary<string> {
  const min = typeof s.minLength === 'number' ? s.minLength : 0;
  const max = typeof s.maxLength === 'number' ? s.maxLength : Infinity;
  const fits = (x: string) => [...x].length >= min && [...x].length <= max;
  if (typeof s.pattern === 'string') {
    let re: RegExp;
    try {
      re = new RegExp(s.pattern, 'u');
    } catch {
      re = new RegExp(s.pattern);
    }
    try {
      return fc.stringMatching(re).filter(fits);
    } catch {
      return fc.string({ minLength: min, maxLength: Math.min(max, min + 20) }).filter((x) => re.test(x));
    }
  }
  if (s.format === 'date-time') return fc.date({ min: new Date(0), max: new Date(4102444800000), noInvalidDate: true }).map((d) => d.toISOString());
  if (s.format === 'uri') return fc.webUrl();
  const typical = fc.string({ minLength: min, maxLength: Math.min(max, min + 24) });
  // now and then the longest value the schema allows (limits that cannot be reached show up)
  return Number.isFinite(max) && max <= 1_000_000 && max > min + 24 ? fc.oneof({ weight: 5, arbitrary: typical }, { weight: 1, arbitrary: fc.constant('x'.repeat(max)) }) : typical;
}

function numberArb(s: SchemaObj, integer: boolean): fc.Arbitrary<number> {
  let min = typeof s.minimum === 'number' ? s.minimum : -1_000_000;
  let max = typeof s.maximum === 'number' ? s.maximum : 1_000_000;
  const exMin = typeof s.exclusiveMinimum === 'number' ? s.exclusiveMinimum : null;
  const exMax = typeof s.exclusiveMaximum === 'number' ? s.exclusiveMaximum : null;
  if (integer) {
    if (exMin !== null) min = Math.max(min, Math.floor(exMin) + 1);
    if (exMax !== null) max = Math.min(max, Math.ceil(exMax) - 1);
    min = Math.max(Math.ceil(min), Number.MIN_SAFE_INTEGER);
    max = Math.min(Math.floor(max), Number.MAX_SAFE_INTEGER);
    return fc.oneof(fc.constantFrom(min, max), fc.integer({ min, max }));
  }
  return fc
    .double({ min: exMin ?? min, max: exMax ?? max, noNaN: true, noDefaultInfinity: true, minExcluded: exMin !== null, maxExcluded: exMax !== null })
    .map((x) => (Object.is(x, -0) ? 0 : x));
}

/** Valid values of the schema at `pointer` (bounded in size and depth). */
export function valueArb(ctx: ArbContext, pointer: string, depth = 0): fc.Arbitrary<Json> {
  const [s, at] = schemaAt(ctx, pointer);
  if (s === true) return anyJson;
  if (s === false) return fc.constant(null);
  if ('const' in s) return fc.constant(s.const as Json);
  if (Array.isArray(s.enum)) return fc.constantFrom(...(s.enum as Json[]));
  for (const k of ['oneOf', 'anyOf'] as const) {
    if (Array.isArray(s[k]) && (s[k] as unknown[]).length > 0) {
      const branches = (s[k] as unknown[]).map((_, i) => valueArb(ctx, pointerJoin(at, k, i), depth + 1));
      return fc.oneof(...branches);
    }
  }
  if (Array.isArray(s.allOf) && s.allOf.length > 0) return valueArb(ctx, pointerJoin(at, 'allOf', 0), depth + 1);
  const types = typesOf(s);
  if (!types) return anyJson;
  const arbs = types.map((t): fc.Arbitrary<Json> => {
    switch (t) {
      case 'null':
        return fc.constant(null);
      case 'boolean':
        return fc.boolean();
      case 'integer':
        return numberArb(s, true);
      case 'number':
        return numberArb(s, false);
      case 'string':
        return stringArb(s);
      case 'array': {
        const min = typeof s.minItems === 'number' ? s.minItems : 0;
        const max = Math.min(typeof s.maxItems === 'number' ? s.maxItems : Infinity, min + (depth > 3 ? 1 : 3));
        const item = s.items !== undefined && typeof s.items !== 'boolean' ? valueArb(ctx, pointerJoin(at, 'items'), depth + 1) : anyJson;
        return fc.array(item, { minLength: min, maxLength: max }) as fc.Arbitrary<Json>;
      }
      case 'object': {
        const props = (s.properties as Record<string, unknown> | undefined) ?? {};
        const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
        const keys = Object.keys(props).filter((k) => required.has(k) || depth < 6);
        const model: Record<string, fc.Arbitrary<Json>> = {};
        for (const k of keys) model[k] = valueArb(ctx, pointerJoin(at, 'properties', k), depth + 1);
        const fixed = fc.record(model, { requiredKeys: keys.filter((k) => required.has(k)) }) as fc.Arbitrary<Record<string, Json>>;
        const ap = s.additionalProperties;
        if (ap === undefined || ap === false || depth >= 6) return fixed as fc.Arbitrary<Json>;
        const keyArb = s.propertyNames !== undefined && typeof s.propertyNames === 'object' ? (valueArb(ctx, pointerJoin(at, 'propertyNames'), depth + 1).filter((k) => typeof k === 'string') as fc.Arbitrary<string>) : fc.string({ minLength: 1, maxLength: 12 });
        const valArb = ap === true ? anyJson : valueArb(ctx, pointerJoin(at, 'additionalProperties'), depth + 1);
        const extra = fc.dictionary(keyArb.filter((k) => !(k in props)), valArb, { maxKeys: depth > 2 ? 1 : 3 });
        return fc.tuple(fixed, extra).map(([a, b]) => ({ ...b, ...a })) as fc.Arbitrary<Json>;
      }
      default:
        return anyJson;
    }
  });
  return arbs.length === 1 ? arbs[0]! : fc.oneof(...arbs);
}

export interface Invalid {
  value: Json;
  why: string;
}

function wrongTypes(types: string[] | null): Invalid[] {
  if (!types) return [];
  const has = (t: string) => types.includes(t);
  const out: Invalid[] = [];
  if (!has('string')) out.push({ value: 'not-a-valid-value', why: 'a string where the schema wants ' + types.join('|') });
  if (!has('number') && !has('integer')) out.push({ value: 12345, why: 'a number where the schema wants ' + types.join('|') });
  if (has('integer') && !has('number')) out.push({ value: 1.5, why: 'a fraction where the schema wants an integer' });
  if (!has('boolean')) out.push({ value: true, why: 'a boolean where the schema wants ' + types.join('|') });
  if (!has('null')) out.push({ value: null, why: 'null where the schema wants ' + types.join('|') });
  if (!has('array')) out.push({ value: ['x'], why: 'an array where the schema wants ' + types.join('|') });
  if (!has('object')) out.push({ value: { unexpected: 1 }, why: 'an object where the schema wants ' + types.join('|') });
  return out;
}

/**
 * Invalid values for the schema at `pointer`: one defect each, and each checked to fail
 * the schema (null when the schema accepts everything).
 */
export function invalidValueArb(ctx: ArbContext, pointer: string, depth = 0): fc.Arbitrary<Invalid> | null {
  const [s, at] = schemaAt(ctx, pointer);
  if (typeof s === 'boolean') return s ? null : fc.constant({ value: null, why: 'anything (the schema is false)' });
  const cands: Array<fc.Arbitrary<Invalid>> = [];
  const consts = (xs: Invalid[]) => {
    if (xs.length > 0) cands.push(fc.constantFrom(...xs));
  };
  let types = typesOf(s);
  if (!types && (Array.isArray(s.anyOf) || Array.isArray(s.oneOf))) {
    const branches = ((s.anyOf ?? s.oneOf) as unknown[]).map((_, i) => schemaAt(ctx, pointerJoin(at, s.anyOf ? 'anyOf' : 'oneOf', i))[0]);
    const all = branches.map((b) => (typeof b === 'object' ? typesOf(b) : null));
    types = all.every((t) => t !== null) ? [...new Set(all.flat() as string[])] : null;
  }
  consts(wrongTypes(types));
  if (Array.isArray(s.enum)) consts([{ value: 'not-in-the-enum', why: `not one of the enum ${JSON.stringify(s.enum).slice(0, 80)}` }]);
  if ('const' in s) consts([{ value: 'not-the-const', why: 'not the const' }]);
  if (types?.includes('string')) {
    if (typeof s.minLength === 'number' && s.minLength > 0) consts([{ value: 'x'.repeat(s.minLength - 1), why: `shorter than minLength ${s.minLength}` }]);
    if (typeof s.maxLength === 'number' && s.maxLength < 1_000_000) consts([{ value: 'x'.repeat(s.maxLength + 1), why: `longer than maxLength ${s.maxLength}` }]);
    if (typeof s.pattern === 'string') {
      const re = new RegExp(s.pattern, 'u');
      cands.push(fc.string({ maxLength: 20 }).filter((x) => !re.test(x)).map((x) => ({ value: x, why: `does not match the pattern ${s.pattern as string}` })));
    }
  }
  if (types?.includes('integer') || types?.includes('number')) {
    if (typeof s.minimum === 'number') consts([{ value: s.minimum - 1, why: `below minimum ${s.minimum}` }]);
    if (typeof s.maximum === 'number') consts([{ value: s.maximum + 1, why: `above maximum ${s.maximum}` }]);
    if (typeof s.exclusiveMinimum === 'number') consts([{ value: s.exclusiveMinimum, why: `not above exclusiveMinimum ${s.exclusiveMinimum}` }]);
    if (typeof s.exclusiveMaximum === 'number') consts([{ value: s.exclusiveMaximum, why: `not below exclusiveMaximum ${s.exclusiveMaximum}` }]);
  }
  if (types?.includes('array') && depth < 4) {
    if (typeof s.minItems === 'number' && s.minItems > 0) consts([{ value: [], why: `fewer than minItems ${s.minItems}` }]);
    if (typeof s.maxItems === 'number' && s.maxItems <= 1000) {
      const max = s.maxItems;
      cands.push(valueArb(ctx, pointerJoin(at, 'items'), depth + 1).map((v) => ({ value: Array.from({ length: max + 1 }, () => v), why: `more than maxItems ${max}` })));
    }
    if (s.items !== undefined) {
      const bad = invalidValueArb(ctx, pointerJoin(at, 'items'), depth + 1);
      if (bad) cands.push(bad.map((b) => ({ value: [b.value], why: `item 0: ${b.why}` })));
    }
  }
  if (types?.includes('object') && depth < 4) {
    const valid = valueArb(ctx, at, depth) as fc.Arbitrary<Json>;
    const asObj = valid.filter((v): v is { [k: string]: Json } => v !== null && typeof v === 'object' && !Array.isArray(v));
    const required = Array.isArray(s.required) ? (s.required as string[]) : [];
    for (const r of required) {
      cands.push(
        asObj.map((v) => {
          const copy = { ...v };
          delete copy[r];
          return { value: copy, why: `required property '${r}' missing` };
        }),
      );
    }
    if (s.additionalProperties === false) cands.push(asObj.map((v) => ({ value: { ...v, unexpected_property: 1 }, why: "an unknown property 'unexpected_property' (additionalProperties: false)" })));
    const props = (s.properties as Record<string, unknown> | undefined) ?? {};
    for (const k of Object.keys(props)) {
      const bad = invalidValueArb(ctx, pointerJoin(at, 'properties', k), depth + 1);
      if (bad) cands.push(fc.tuple(asObj, bad).map(([v, b]) => ({ value: { ...v, [k]: b.value }, why: `${k}: ${b.why}` })));
    }
    if (s.additionalProperties !== undefined && typeof s.additionalProperties === 'object') {
      const bad = invalidValueArb(ctx, pointerJoin(at, 'additionalProperties'), depth + 1);
      if (bad) cands.push(fc.tuple(asObj, bad).map(([v, b]) => ({ value: { ...v, some_key: b.value }, why: `some_key: ${b.why}` })));
    }
  }
  if (cands.length === 0) return null;
  return fc.oneof(...cands).filter((c) => ctx.validator.validate(pointer, c.value) !== null);
}

// ------------------------------------------------------------------ requests

export interface GeneratedRequest {
  op: OperationSpec;
  /** `valid`, or `invalid: <what is wrong>`. */
  intent: string;
  valid: boolean;
  pathParams: Record<string, string>;
  query: Array<[string, string]>;
  headers: Record<string, string>;
  body: { contentType: string | null; data: Buffer | string } | null;
}

export interface RequestContext extends ArbContext {
  /** Real values by parameter name (build ids, node names...), used most of the time. */
  real: Record<string, string[]>;
  /** Realistic bodies by operation key (used half of the time for valid requests). */
  bodies?: Record<string, fc.Arbitrary<Json>>;
  /** Last word on a generated request (e.g. make a PUT's digest match its bytes). */
  adjust?: (r: GeneratedRequest) => GeneratedRequest;
}

function coerceParam(s: SchemaObj | boolean, v: string): unknown {
  if (typeof s === 'boolean') return v;
  const types = typesOf(s) ?? [];
  if ((types.includes('integer') || types.includes('number')) && /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(v)) return Number(v);
  if (types.includes('boolean') && (v === 'true' || v === 'false')) return v === 'true';
  return v;
}

/** Whether a parameter's string (as sent) is valid for its schema. */
export function paramValid(ctx: ArbContext, p: ParamSpec, v: string): boolean {
  if (!p.schema) return true;
  const [s] = schemaAt(ctx, p.schema);
  return ctx.validator.validate(p.schema, coerceParam(s, v)) === null;
}

function paramValueArb(ctx: RequestContext, p: ParamSpec): fc.Arbitrary<string> {
  const fromSchema = p.schema ? valueArb(ctx, p.schema).filter((v) => v !== null && typeof v !== 'object').map((v) => String(v)) : fc.string({ minLength: 1, maxLength: 12 });
  const schemaValues = fromSchema.filter((v) => paramValid(ctx, p, v));
  const real = (ctx.real[p.name] ?? []).filter((v) => paramValid(ctx, p, v));
  return real.length > 0 ? fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...real) }, { weight: 1, arbitrary: schemaValues }) : schemaValues;
}

function paramInvalidArb(ctx: RequestContext, p: ParamSpec): fc.Arbitrary<{ value: string; why: string }> | null {
  if (!p.schema) return null;
  const [s] = schemaAt(ctx, p.schema);
  if (typeof s === 'boolean') return null;
  const cands: string[] = ['not-a-valid-value', '1.5', 'true', '', '-1'];
  if (typeof s.maxLength === 'number' && s.maxLength < 100_000) cands.push('x'.repeat(s.maxLength + 1));
  if (typeof s.minLength === 'number' && s.minLength > 0) cands.push('x'.repeat(s.minLength - 1));
  if (typeof s.minimum === 'number') cands.push(String(s.minimum - 1));
  if (typeof s.maximum === 'number') cands.push(String(s.maximum + 1));
  if (Array.isArray(s.enum)) cands.push('not-in-the-enum', 'TRUE');
  // empty path segments change the route, not the parameter: not an invalid parameter
  const bad = [...new Set(cands)].filter((v) => !(p.in === 'path' && v === '') && !paramValid(ctx, p, v));
  const generated = invalidValueArb(ctx, p.schema);
  const arbs: Array<fc.Arbitrary<{ value: string; why: string }>> = [];
  if (bad.length > 0) arbs.push(fc.constantFrom(...bad).map((v) => ({ value: v, why: `${p.in} parameter ${p.name}=${excerpt(v, 40)} is invalid` })));
  if (generated) {
    arbs.push(
      generated
        .filter((g) => g.value !== null && typeof g.value !== 'object')
        .map((g) => ({ value: String(g.value), why: `${p.in} parameter ${p.name}: ${g.why}` }))
        .filter((g) => !(p.in === 'path' && g.value === '') && !paramValid(ctx, p, g.value)),
    );
  }
  return arbs.length ? fc.oneof(...arbs) : null;
}

/** Serialises a body value for a media type. */
export function serializeBody(mediaType: string, value: Json): Buffer | string {
  const m = mediaType.toLowerCase();
  if (isJsonMedia(m)) return JSON.stringify(value);
  if (m.includes('yaml')) return yamlStringify(value);
  if (m.startsWith('text/')) return typeof value === 'string' ? value : JSON.stringify(value);
  if (typeof value === 'string') return Buffer.from(value);
  return Buffer.from(JSON.stringify(value));
}

function bodyArb(ctx: RequestContext, op: OperationSpec, media: MediaSpec): fc.Arbitrary<Json> {
  const fromSchema = media.schema ? valueArb(ctx, media.schema) : anyJson;
  const real = ctx.bodies?.[op.key];
  return real ? fc.oneof(real, fromSchema) : fromSchema;
}

/** Valid requests for an operation, and invalid ones (null when none can be made). */
export function requestArbs(ctx: RequestContext, op: OperationSpec): { valid: fc.Arbitrary<GeneratedRequest>; invalid: fc.Arbitrary<GeneratedRequest> | null } {
  const pathParams = op.params.filter((p) => p.in === 'path');
  const queryParams = op.params.filter((p) => p.in === 'query');
  const headerParams = op.params.filter((p) => p.in === 'header' && !['accept', 'content-type', 'authorization'].includes(p.name.toLowerCase()));
  const pathArb = fc.record(Object.fromEntries(pathParams.map((p) => [p.name, paramValueArb(ctx, p)])) as Record<string, fc.Arbitrary<string>>);
  const queryArb = fc.tuple(...queryParams.map((p) => (p.required ? paramValueArb(ctx, p).map((v) => [[p.name, v]] as Array<[string, string]>) : fc.option(paramValueArb(ctx, p), { nil: undefined }).map((v) => (v === undefined ? [] : [[p.name, v]]) as Array<[string, string]>)))).map((xs) => xs.flat());
  const headerArb = fc.record(Object.fromEntries(headerParams.map((p) => [p.name, paramValueArb(ctx, p)])) as Record<string, fc.Arbitrary<string>>);
  const media = op.body?.media.filter((m) => !m.mediaType.startsWith('multipart/')) ?? [];
  const validBody: fc.Arbitrary<GeneratedRequest['body']> =
    media.length === 0
      ? fc.constant(null)
      : fc.oneof(
          ...media.map((m) => bodyArb(ctx, op, m).map((v) => ({ contentType: m.mediaType, data: serializeBody(m.mediaType, v) }))),
          ...(op.body?.required ? [] : [fc.constant(null)]),
        );
  const finish = (r: GeneratedRequest) => (ctx.adjust ? ctx.adjust(r) : r);
  const valid = fc.record({ path: pathArb, query: queryArb, headers: headerArb, body: validBody }).map(({ path, query, headers, body }) =>
    finish({ op, intent: 'valid', valid: true, pathParams: path, query, headers, body }),
  );

  type Mutation = fc.Arbitrary<(r: GeneratedRequest) => GeneratedRequest>;
  const mutations: Mutation[] = [];
  for (const p of [...pathParams, ...queryParams, ...headerParams]) {
    const bad = paramInvalidArb(ctx, p);
    if (!bad) continue;
    mutations.push(
      bad.map((b) => (r: GeneratedRequest) => {
        const out = { ...r, intent: `invalid: ${b.why}`, valid: false };
        if (p.in === 'path') out.pathParams = { ...r.pathParams, [p.name]: b.value };
        else if (p.in === 'query') out.query = [...r.query.filter(([k]) => k !== p.name), [p.name, b.value]];
        else out.headers = { ...r.headers, [p.name]: b.value };
        return out;
      }),
    );
  }
  for (const p of [...queryParams, ...headerParams].filter((x) => x.required)) {
    mutations.push(fc.constant((r: GeneratedRequest) => ({ ...r, intent: `invalid: required ${p.in} parameter ${p.name} missing`, valid: false, query: r.query.filter(([k]) => k !== p.name), headers: Object.fromEntries(Object.entries(r.headers).filter(([k]) => k !== p.name)) })));
  }
  if (op.body?.required) mutations.push(fc.constant((r: GeneratedRequest) => ({ ...r, intent: 'invalid: required request body missing', valid: false, body: null })));
  if (media.length > 0) {
    mutations.push(
      fc.constantFrom('application/x-undocumented', 'text/csv', 'image/png').map((ct) => (r: GeneratedRequest) => ({
        ...r,
        intent: `invalid: undocumented media type ${ct}`,
        valid: false,
        body: { contentType: ct, data: r.body?.data ?? '{}' },
      })),
    );
    for (const m of media.filter((x) => isJsonMedia(x.mediaType))) {
      mutations.push(fc.constantFrom('{"broken": ', '[1, 2', 'not json at all', '\u0000').map((text) => (r: GeneratedRequest) => ({ ...r, intent: `invalid: malformed ${m.mediaType} body`, valid: false, body: { contentType: m.mediaType, data: text } })));
    }
    for (const m of media.filter((x) => x.schema && (isJsonMedia(x.mediaType) || x.mediaType.includes('yaml')))) {
      const bad = invalidValueArb(ctx, m.schema!);
      if (bad) mutations.push(bad.map((b) => (r: GeneratedRequest) => ({ ...r, intent: `invalid: body ${b.why}`, valid: false, body: { contentType: m.mediaType, data: serializeBody(m.mediaType, b.value) } })));
    }
  }
  const invalid = mutations.length === 0 ? null : fc.tuple(valid, fc.oneof(...mutations)).map(([r, mutate]) => mutate(r));
  return { valid, invalid };
}

/** A path segment as a client sends it (`.` and `..` encoded so no URL parser drops them). */
export function encodeSegment(v: string): string {
  let e: string;
  try {
    e = encodeURIComponent(v);
  } catch {
    e = [...Buffer.from(v, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
  }
  return e === '.' ? '%2E' : e === '..' ? '%2E%2E' : e;
}

export function fillPath(template: string, params: Record<string, string>): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => encodeSegment(params[name] ?? ''));
}

/** The probe request for a generated one, with the given Authorization header (if any). */
export function toProbe(r: GeneratedRequest, authorization: string | null): ProbeRequest {
  const qs = r.query.map(([k, v]) => `${encodeURIComponent(k)}=${encodeSegment(v)}`).join('&');
  const headers: Record<string, string> = { ...r.headers };
  if (authorization) headers.authorization = authorization;
  if (r.body?.contentType) headers['content-type'] = r.body.contentType;
  if (r.op.responses['200']?.content?.some((m) => m.mediaType === 'text/event-stream') && r.query.some(([k, v]) => k === 'follow' && (v === 'true' || v === '1'))) headers.accept = 'text/event-stream';
  return { method: r.op.method.toUpperCase(), target: `${fillPath(r.op.path, r.pathParams)}${qs ? `?${qs}` : ''}`, headers, body: r.body?.data ?? null };
}

// ------------------------------------------------------------------ responses

/** Event schemas the document gives for an SSE media type, if any (see sseEventSchemas in the report). */
export function sseEventSchemas(doc: OpenApiDoc, media: MediaSpec): { kind: 'by-event'; schemas: Record<string, string> } | { kind: 'item'; schema: string } | { kind: 'union'; schema: string } | null {
  const m = atPointer(doc, media.at) as Record<string, unknown> | undefined;
  if (!m) return null;
  if (m.itemSchema !== undefined) return { kind: 'item', schema: pointerJoin(media.at, 'itemSchema') };
  for (const ext of ['x-sse-events', 'x-events', 'x-event-schemas', 'x-sse']) {
    const v = m[ext];
    if (v && typeof v === 'object') {
      const schemas: Record<string, string> = {};
      for (const name of Object.keys(v)) {
        const inner = (v as Record<string, unknown>)[name] as Record<string, unknown> | undefined;
        schemas[name] = inner && typeof inner === 'object' && inner.schema !== undefined ? pointerJoin(media.at, ext, name, 'schema') : pointerJoin(media.at, ext, name);
      }
      return { kind: 'by-event', schemas };
    }
  }
  if (media.schema) {
    const [s] = follow(doc, media.schema);
    if (s && (Array.isArray(s.oneOf) || Array.isArray(s.anyOf))) return { kind: 'union', schema: media.schema };
  }
  return null;
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, error: coerceError(err).message };
  }
}

/** Checks one response against the operation's documentation; returns the violations (empty when it conforms). */
export function checkResponse(ctx: ArbContext, op: OperationSpec, req: ProbeRequest, res: ProbeResponse, intent: string): Violation[] {
  const out: Violation[] = [];
  const base = { operation: op.key, request: req, intent, status: res.status, contentType: res.contentType };
  if (res.status === 0) {
    out.push({ ...base, group: 'no response', problem: 'the connection failed or was reset', detail: res.error ?? '' });
    return out;
  }
  const doc = documentedResponse(op, res.status);
  if (!doc) {
    out.push({ ...base, group: 'undocumented status', problem: `answered ${res.status}, which is not documented (documented: ${Object.keys(op.responses).join(', ') || 'none'})`, detail: excerpt(res.text, 300) });
    return out;
  }
  const [code, spec] = doc;
  const isHead = op.method === 'head';
  const bodyless = isHead || res.status === 204 || res.status === 304;
  if (spec.content === null || spec.content.length === 0) {
    if (!bodyless && res.text.length > 0) out.push({ ...base, group: 'undocumented content', problem: `${code} documents no content but the response has a ${res.mediaType ?? 'untyped'} body`, detail: excerpt(res.text, 200) });
    return out;
  }
  if (!res.mediaType) {
    if (!bodyless || isHead) out.push({ ...base, group: 'undocumented content-type', problem: `${code} answered without a content-type (documented: ${spec.content.map((m) => m.mediaType).join(', ')})`, detail: excerpt(res.text, 200) });
    return out;
  }
  const media = spec.content.find((m) => mediaMatches(m.mediaType, res.mediaType!));
  if (!media) {
    out.push({ ...base, group: 'undocumented content-type', problem: `${code} answered ${res.mediaType}; documented: ${spec.content.map((m) => m.mediaType).join(', ')}`, detail: excerpt(res.text, 200) });
    return out;
  }
  if (bodyless) return out;
  if (res.mediaType === 'text/event-stream') {
    const schemas = sseEventSchemas(ctx.doc, media);
    if (!schemas) return out; // reported once per operation by the caller
    for (const e of res.events ?? []) {
      const parsed = parseJson(e.data);
      let err: string | null = null;
      if (schemas.kind === 'by-event') {
        const at = schemas.schemas[e.event];
        if (!at) err = `event '${e.event}' is not among the documented events (${Object.keys(schemas.schemas).join(', ')})`;
        else err = parsed.ok ? ctx.validator.validate(at, parsed.value) : `data is not JSON: ${parsed.error}`;
      } else if (schemas.kind === 'item') {
        const item = { event: e.event, data: e.data, ...(e.id !== null ? { id: e.id } : {}) };
        err = ctx.validator.validate(schemas.schema, item);
        if (err && parsed.ok) {
          // an itemSchema may describe `data` parsed (contentSchema is an annotation in 2020-12)
          const err2 = ctx.validator.validate(schemas.schema, { ...item, data: parsed.value });
          if (err2 === null) err = null;
        }
      } else if (!parsed.ok) {
        err = `data is not JSON: ${parsed.error}`;
      } else {
        // a oneOf/anyOf of the data shapes, or of whole events {event, data, id}
        err = ctx.validator.validate(schemas.schema, parsed.value);
        if (err && ctx.validator.validate(schemas.schema, { event: e.event, data: parsed.value, ...(e.id !== null ? { id: e.id } : {}) }) === null) err = null;
      }
      if (err) out.push({ ...base, group: 'SSE event does not match the document', problem: `event '${e.event}' does not validate`, detail: `${err}\n data: ${excerpt(e.data, 200)}` });
    }
    return out;
  }
  if (isJsonMedia(res.mediaType)) {
    const parsed = parseJson(res.text);
    if (!parsed.ok) {
      out.push({ ...base, group: 'body does not match the schema', problem: `${code} ${res.mediaType} body is not JSON`, detail: `${parsed.error}: ${excerpt(res.text, 200)}` });
      return out;
    }
    if (media.schema) {
      const err = ctx.validator.validate(media.schema, parsed.value);
      if (err) out.push({ ...base, group: 'body does not match the schema', problem: `${code} ${res.mediaType} body does not validate against ${media.schema}`, detail: `${err}\n body: ${excerpt(res.text, 240)}` });
    }
  }
  return out;
}
