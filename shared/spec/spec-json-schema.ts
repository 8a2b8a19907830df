/**
 * The JSON Schema of a submitted build spec, for the OpenAPI document: generated from
 * `BuildSpecSchema` (the zod schema the validation starts with) and tightened with the
 * rules `validateSpec` checks after it (name shapes, at least one node, contexts as
 * digests), so a client generated from the document sends what the server takes.
 * Graph rules (needs name existing nodes, no cycles) stay in prose: JSON Schema cannot say them.
 */
import { z } from 'zod';
import { DIGEST_RE } from '../digest.js';
import { ENV_NAME_RE, LABEL_KEY_RE, NAME_RE } from '../names.js';
import { BuildSpecSchema, INPUT_NAME_RE, MAX_NODES, OUTPUT_NAME_RE } from './build-spec.js';

type Json = Record<string, unknown>;

const keys = (re: RegExp) => ({ type: 'string', pattern: re.source });

function at(obj: Json, ...path: string[]): Json {
  let cur: Json = obj;
  for (const p of path) {
    const next = cur[p];
    if (next === null || typeof next !== 'object') throw new Error(`spec JSON schema has no ${path.join('.')}`);
    cur = next as Json;
  }
  return cur;
}

/** The submitted form's JSON Schema (contexts are sha256 digests of uploaded tars). */
export function submittedSpecJsonSchema(): Json {
  const s = z.toJSONSchema(BuildSpecSchema, { io: 'input' }) as Json;
  delete s.$schema;
  const nodes = at(s, 'properties', 'nodes');
  Object.assign(nodes, { propertyNames: keys(NAME_RE), minProperties: 1, maxProperties: MAX_NODES, description: `Node name -> node (1 to ${MAX_NODES} nodes)` });
  const node = at(nodes, 'additionalProperties');
  const props = at(node, 'properties');
  Object.assign(at(props, 'context'), { pattern: DIGEST_RE.source, description: 'sha256 digest of the context tar, uploaded first with PUT /api/v1/cas/{digest}' });
  Object.assign(at(props, 'needs', 'items'), { pattern: NAME_RE.source });
  Object.assign(at(props, 'build_args'), { propertyNames: keys(ENV_NAME_RE) });
  Object.assign(at(props, 'outputs'), { propertyNames: keys(OUTPUT_NAME_RE) });
  Object.assign(at(props, 'outputs', 'additionalProperties'), { pattern: '^/' });
  const inputs = at(props, 'inputs');
  Object.assign(inputs, { propertyNames: keys(INPUT_NAME_RE) });
  Object.assign(at(inputs, 'additionalProperties', 'properties', 'digest'), { pattern: DIGEST_RE.source });
  Object.assign(at(inputs, 'additionalProperties', 'properties', 'env'), { propertyNames: keys(ENV_NAME_RE) });
  Object.assign(at(props, 'test', 'properties', 'env'), { propertyNames: keys(ENV_NAME_RE) });
  Object.assign(at(props, 'matrix'), { propertyNames: keys(ENV_NAME_RE), description: 'Axis name -> values: one node per combination (see the README)' });
  const labels = at(props, 'labels');
  const variants = labels.anyOf as Json[];
  const map = variants.find((v) => v.type === 'object');
  if (!map) throw new Error('spec JSON schema: labels has no map form');
  Object.assign(map, { propertyNames: keys(LABEL_KEY_RE) });
  return s;
}
