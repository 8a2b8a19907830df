/**
 * The build-secrets part of the build spec (issue 12): `secrets: [NAME, ...]` on a node
 * names secrets the coordinator holds (`kiln secrets set NAME`); the Dockerfile mounts
 * them the BuildKit way, `RUN --mount=type=secret,id=NAME`. The spec holds names only.
 *
 * Each resolved secret carries the version the coordinator held at submit (0 when the
 * spec is checked without a coordinator, in the CLI): names and versions are part of the
 * node's reuse key (a changed secret builds again); values never are.
 */
import { z } from 'zod';
import type { FieldError } from '../errors.js';
import { MAX_NODE_SECRETS, SECRET_NAME_RE, SECRET_NAME_RULE } from '../secret-names.js';
import { fieldError } from './spec-fields.js';

export const SecretsSpecSchema = z.array(z.string()).max(MAX_NODE_SECRETS, `at most ${MAX_NODE_SECRETS} secrets per node`);

/** A secret a node names, with the version the coordinator held when the build was submitted. */
export interface ResolvedSecret {
  name: string;
  version: number;
}

/** What the coordinator holds: a secret's current version, or undefined when it has none of that name. */
export interface SecretVersions {
  version(name: string): number | undefined;
}

/** The node's secrets in the order written; problems go to `errors`. Undefined when the node names none. */
export function resolveSecrets(list: readonly string[] | undefined, at: string[], held: SecretVersions | undefined, errors: FieldError[]): ResolvedSecret[] | undefined {
  if (list === undefined || list.length === 0) return undefined;
  const out: ResolvedSecret[] = [];
  const seen = new Set<string>();
  for (const name of list) {
    if (!SECRET_NAME_RE.test(name)) {
      errors.push(fieldError(at, `invalid secret name '${name.slice(0, 80)}' (use ${SECRET_NAME_RULE})`));
      continue;
    }
    if (seen.has(name)) {
      errors.push(fieldError(at, `secret '${name}' is listed twice`));
      continue;
    }
    seen.add(name);
    const version = held ? held.version(name) : 0;
    if (version === undefined) errors.push(fieldError(at, `secret '${name}' is not held by the coordinator (an admin sets it with: kiln secrets set ${name})`));
    else out.push({ name, version });
  }
  return out;
}
