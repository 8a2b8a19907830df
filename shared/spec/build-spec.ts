/**
 * The build spec: a named DAG of nodes, each one BuildKit build.
 *
 * There are two forms with one schema: the *file* form a user writes (`context` is a
 * directory relative to the spec file) and the *submitted* form the HTTP API takes (the
 * CLI has packed and uploaded every context, so `context` is a `sha256:` digest). Both
 * are validated here, field by field and as a graph, and every problem is reported as a
 * `FieldError` whose path names the node and field (`nodes.compile.platform`).
 *
 * Artifacts: `outputs` names directories (or files) of the built image that the agent
 * exports as content-addressed tars; `inputs` names artifacts a node builds with, either
 * `from: <node>.<output>` (an upstream node's output, filled in by the coordinator when
 * that node succeeds; the node is added to `needs` if it is not there) or `digest:` of an
 * artifact already in the CAS. An input is a Dockerfile stage named after the input
 * (`RUN --mount=type=bind,from=<input>,target=...`, `COPY --from=<input>`); `mount` makes
 * the agent bind-mount it read-only into every RUN step, and `env` sets variables in every
 * stage (see agent/docker/dockerfile-rewrite.ts).
 */
import { z } from 'zod';
import type { FieldError } from '../errors.js';
import { isDigest } from '../digest.js';
import { parseDuration } from '../duration.js';
import { platformProblem } from '../platform.js';
import { ENV_NAME_RE, LABEL_KEY_RE, LABEL_KEY_RULE, NAME_RE, NAME_RULE } from '../names.js';
import { fieldError, forbiddenContent, INPUT_NAME_RE, type SpecResult } from './spec-fields.js';
import { expandNodes, ExpansionFields, type ExpandedMeta } from './expand.js';
// Layer cache (issue 11): the `cache:` override of a build and a node.
import { CacheSpecSchema, specCacheMode } from './cache-spec.js';
// Budgets (issue 11): concurrency, concurrency groups, deadline.
import { BudgetFields, NodeBudgetFields, resolveBudget } from './budget-spec.js';
// Build secrets (issue 12): `secrets: [NAME]`, names only.
import { resolveSecrets, SecretsSpecSchema, type SecretVersions } from './secrets-spec.js';
// Notifications (issue 13): `notify: { webhooks: [...] }`.
import { NotifySpecSchema, resolveNotify, type WebhookPolicy } from './notify-spec.js';

export { ARTIFACT_MEDIA_TYPE, fieldError, INPUT_NAME_RE, type SpecResult } from './spec-fields.js';

export { NAME_RE as NODE_NAME_RE } from '../names.js';
export type { GpuRequirement, ResolvedInput, ResolvedNode, ResolvedOutput, ResolvedSpec, ResolvedTest } from './resolved-spec.js';
import type { ResolvedInput, ResolvedNode, ResolvedOutput, ResolvedSpec, ResolvedTest } from './resolved-spec.js';
/** Output names: no dots, so `<node>.<output>` splits at the last dot. */
export const OUTPUT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
export const MAX_NODES = 10_000;
export const DEFAULT_TIMEOUT_MS = 60 * 60 * 1000;

const StringMap = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]).transform(String));

export const InputSpecSchema = z.strictObject({
  /** `<node>.<output>`: an upstream node's output. */
  from: z.string().min(1).optional(),
  /** `sha256:<hex>` of an artifact already in the CAS. */
  digest: z.string().min(1).optional(),
  /** Bind-mount the input read-only at this absolute path in every RUN step. */
  mount: z.string().min(1).optional(),
  /** Variables set in every stage of the build (values may refer to `$PATH` etc.). */
  env: StringMap.optional(),
});

export const NodeSpecSchema = z.strictObject({
  /** Exact platform the node builds for; default linux/<coordinator arch>. */
  platform: z.string().optional(),
  /** Directory (file form) or sha256 digest of its tar (submitted form). */
  context: z.string().min(1).optional(),
  /** Dockerfile path inside the context (default `Dockerfile`). */
  dockerfile: z.string().min(1).optional(),
  /** The Dockerfile itself, instead of a path. */
  dockerfile_inline: z.string().min(1).optional(),
  build_args: StringMap.optional(),
  /**
   * Agent labels the node requires: a map (`{zone: eu}`, matched exactly) or a list of
   * `key=value` / `key!=value` rules (`[zone=eu, tier!=spot]`).
   */
  labels: z.union([z.record(z.string(), z.string()), z.array(z.string())]).optional(),
  /** Run on an agent that emulates the platform (qemu) when no native agent is free. Default false. */
  allow_emulation: z.boolean().optional(),
  /** GPUs the node needs, assigned to it exclusively while it runs. */
  gpus: z
    .strictObject({
      count: z.number().int().min(1).max(64),
      /** Each GPU must have at least this much memory (MiB, as nvidia-smi reports it). */
      min_memory_mib: z.number().int().min(0).optional(),
      /** Case-insensitive substring of the model name nvidia-smi reports, e.g. `A100`. */
      model: z.string().min(1).max(200).optional(),
    })
    .optional(),
  /** Higher runs first among ready nodes (default: the build's priority, else 0). */
  priority: z.number().int().min(-1000).max(1000).optional(),
  /** false: an infrastructure failure (lost agent, Docker down) fails the node instead of retrying it. */
  retry: z.boolean().optional(),
  /**
   * A command run after a successful build, in a container of the built image (network
   * none, the node's GPUs attached); its output is part of the log and its exit code
   * decides the node.
   */
  test: z
    .strictObject({
      /** A shell command (run with /bin/sh -c) or an argv list. */
      command: z.union([z.string().min(1), z.array(z.string()).min(1)]),
      /** Time limit for the test (default: the node's timeout). */
      timeout: z.union([z.string(), z.number().positive()]).optional(),
      env: StringMap.optional(),
    })
    .optional(),
  /** Nodes that must succeed before this one starts. */
  needs: z.array(z.string()).optional(),
  /** Build time limit: `20m`, `1h30m`, `90s`, or a number of seconds. */
  timeout: z.union([z.string(), z.number().positive()]).optional(),
  /** Dockerfile stage to build. */
  target: z.string().min(1).optional(),
  /** Build without BuildKit's cache. */
  no_cache: z.boolean().optional(),
  /** Artifacts exported after a successful build: name -> absolute path in the image. */
  outputs: z.record(z.string(), z.string()).optional(),
  /** Artifacts the build uses: name (a stage name in the Dockerfile) -> source. */
  inputs: z.record(z.string(), InputSpecSchema).optional(),
  /** false: always build, never reuse the result of an identical earlier node. */
  reuse: z.boolean().optional(),
  /** `image:`, `platforms:` and `matrix:` (see expand.ts). */
  ...ExpansionFields,
  /** Layer cache: `off` or `{mode: readwrite|read|off}` (default: the build's, else the coordinator's). */
  cache: CacheSpecSchema.optional(),
  ...NodeBudgetFields,
  /** Build secrets held by the coordinator, mounted with `RUN --mount=type=secret,id=NAME`. */
  secrets: SecretsSpecSchema.optional(),
});

export const BuildSpecSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_. -]{0,99}$/, 'must be 1-100 characters of letters, digits, space, _ . -').optional(),
  /** Default priority of the build's nodes. */
  priority: z.number().int().min(-1000).max(1000).optional(),
  nodes: z.record(z.string(), NodeSpecSchema),
  /** Layer cache for every node of the build (a node's own `cache:` wins). */
  cache: CacheSpecSchema.optional(),
  /** `concurrency`, `concurrency_group`, `concurrency_groups`, `deadline` (budget-spec.ts). */
  ...BudgetFields,
  /** Webhooks for the build's state changes (notify-spec.ts). */
  notify: NotifySpecSchema.optional(),
});

export type NodeSpecInput = z.input<typeof NodeSpecSchema>;
type NodeOut = z.output<typeof NodeSpecSchema>;

/** The optional fields of a resolved node that expansion decides (absent when trivial, so plain nodes are as before). */
function expansionFields(meta: ExpandedMeta, name: string): Pick<ResolvedNode, 'images' | 'index' | 'matrix' | 'origin'> {
  const out: Pick<ResolvedNode, 'images' | 'index' | 'matrix' | 'origin'> = {};
  if (meta.images.length > 0) out.images = meta.images;
  if (meta.index) out.index = meta.index;
  if (meta.matrix.length > 0) out.matrix = Object.assign(Object.create(null) as Record<string, string>, Object.fromEntries(meta.matrix));
  if (meta.origin !== name) out.origin = meta.origin;
  return out;
}

/**
 * The node that puts one multi-platform index at a fanned node's `image:` refs once every
 * platform node succeeded: no build of its own, run by any agent of the first platform
 * (native or emulated), never reused.
 */
function indexNode(name: string, meta: ExpandedMeta, spec: NodeOut, priority: number | undefined): ResolvedNode {
  const members = meta.index ?? [];
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  if (spec.timeout !== undefined) {
    const t = typeof spec.timeout === 'number' ? Math.round(spec.timeout * 1000) : parseDuration(spec.timeout);
    if (t !== null && t > 0) timeoutMs = t;
  }
  return {
    name,
    platform: members[0]?.platform ?? 'linux/amd64',
    context: null,
    dockerfile: null,
    dockerfile_inline: null,
    build_args: {},
    labels: {},
    labels_not: {},
    allow_emulation: true,
    gpus: null,
    priority: spec.priority ?? priority ?? 0,
    retry: spec.retry ?? true,
    test: null,
    needs: members.map((m) => m.node),
    timeout_ms: timeoutMs,
    target: null,
    no_cache: false,
    inputs: [],
    outputs: [],
    reuse: false,
    ...expansionFields(meta, name),
  };
}
export type BuildSpecInput = z.input<typeof BuildSpecSchema>;

export interface ValidateOptions {
  /** `file`: context is a path; `submitted`: context is a sha256 digest. */
  form: 'file' | 'submitted';
  /** Platform for nodes that name none. */
  defaultPlatform: string;
  /** Default build name when the spec has none. */
  defaultName?: string;
  /** The coordinator's concurrency group limits: when given, a group without a limit is an error. */
  concurrencyGroups?: ReadonlyMap<string, number>;
  /** The coordinator's secrets: when given, a node naming one it does not hold is an error. */
  secrets?: SecretVersions;
  /** The coordinator's webhook policy: when given, a `notify` hook to a host it does not allow is an error. */
  webhooks?: WebhookPolicy;
}

function zodToFieldErrors(error: z.ZodError): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of error.issues) {
    const path = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push(fieldError([...path, key], 'unknown field'));
    } else {
      out.push(fieldError(path, issue.message));
    }
  }
  return out;
}

/** Validates a parsed spec (object from YAML/JSON) field by field and as a DAG. */
export function validateSpec(raw: unknown, opts: ValidateOptions): SpecResult<ResolvedSpec> {
  const forbidden = forbiddenContent(raw);
  if (forbidden.length > 0) return { ok: false, errors: forbidden };
  const parsed = BuildSpecSchema.safeParse(raw);
  if (!parsed.success) return { ok: false, errors: zodToFieldErrors(parsed.error) };
  const spec = parsed.data;
  const errors: FieldError[] = [];
  const names = Object.keys(spec.nodes);
  if (names.length === 0) errors.push(fieldError(['nodes'], 'a build needs at least one node'));
  if (names.length > MAX_NODES) errors.push(fieldError(['nodes'], `too many nodes (${names.length}; at most ${MAX_NODES})`));

  for (const name of names) {
    if (!NAME_RE.test(name)) errors.push(fieldError(['nodes', name], `invalid node name (use ${NAME_RULE})`));
  }
  const expanded = expandNodes(spec.nodes, errors).nodes;
  if (expanded.size > MAX_NODES && names.length <= MAX_NODES) errors.push(fieldError(['nodes'], `too many nodes after expansion (${expanded.size}; at most ${MAX_NODES})`));
  const specNodes = new Map<string, NodeOut | null>([...expanded].map(([k, v]) => [k, v.node]));
  const nodes: ResolvedNode[] = [];
  const nodeGroups = new Map<string, string>();
  for (const [name, { node: expandedNode, meta }] of expanded) {
    const at = (field?: string) => (field ? ['nodes', name, field] : ['nodes', name]);
    if (expandedNode === null) {
      nodes.push(indexNode(name, meta, spec.nodes[meta.origin]!, spec.priority));
      continue;
    }
    const n = expandedNode;
    const platform = n.platform ?? opts.defaultPlatform;
    const pp = platformProblem(platform);
    if (pp) errors.push(fieldError(at('platform'), pp));

    if (n.dockerfile_inline !== undefined && n.dockerfile !== undefined) {
      errors.push(fieldError(at('dockerfile'), 'give either dockerfile or dockerfile_inline, not both'));
    }
    if (n.dockerfile_inline === undefined && n.context === undefined) {
      errors.push(fieldError(at('context'), 'a node needs a context (with a Dockerfile in it) or dockerfile_inline'));
    }
    if (n.context !== undefined && opts.form === 'submitted' && !isDigest(n.context)) {
      errors.push(fieldError(at('context'), `must be the sha256 digest of an uploaded context tar (got '${n.context.slice(0, 80)}'); the kiln CLI packs and uploads directories`));
    }
    if (n.dockerfile !== undefined && (n.dockerfile.startsWith('/') || n.dockerfile.split('/').includes('..'))) {
      errors.push(fieldError(at('dockerfile'), `must be a relative path inside the context (got '${n.dockerfile}')`));
    }
    let timeoutMs = DEFAULT_TIMEOUT_MS;
    if (n.timeout !== undefined) {
      const t = typeof n.timeout === 'number' ? Math.round(n.timeout * 1000) : parseDuration(n.timeout);
      if (t === null || t <= 0) errors.push(fieldError(at('timeout'), `invalid duration '${n.timeout}' (use e.g. 90s, 20m, 1h30m)`));
      else timeoutMs = t;
    }
    const needs = n.needs ?? [];
    const seen = new Set<string>();
    for (const need of needs) {
      if (need === name) errors.push(fieldError(at('needs'), `node cannot need itself`));
      else if (!specNodes.has(need)) errors.push(fieldError(at('needs'), `unknown node '${need}'`));
      if (seen.has(need)) errors.push(fieldError(at('needs'), `'${need}' is listed twice`));
      seen.add(need);
    }
    const outputs = validateOutputs(n.outputs ?? {}, (f) => at(f), errors);
    const inputs = validateInputs(name, n.inputs ?? {}, specNodes, (f) => at(f), errors);
    // An input from an upstream node makes that node a need.
    for (const i of inputs) if (i.from && i.from.node !== name && specNodes.has(i.from.node)) seen.add(i.from.node);
    const { labels, labelsNot } = validateLabels(n.labels, (f) => at(f), errors);
    let test: ResolvedTest | null = null;
    if (n.test) {
      let tms = timeoutMs;
      if (n.test.timeout !== undefined) {
        const t = typeof n.test.timeout === 'number' ? Math.round(n.test.timeout * 1000) : parseDuration(n.test.timeout);
        if (t === null || t <= 0) errors.push(fieldError(at('test.timeout'), `invalid duration '${n.test.timeout}' (use e.g. 90s, 20m)`));
        else tms = t;
      }
      const env = n.test.env ?? {};
      for (const key of Object.keys(env)) if (!ENV_NAME_RE.test(key)) errors.push(fieldError(at('test.env'), `invalid variable name '${key}'`));
      test = { command: typeof n.test.command === 'string' ? ['/bin/sh', '-c', n.test.command] : n.test.command, timeout_ms: tms, env };
    }
    for (const key of Object.keys(n.build_args ?? {})) {
      if (!ENV_NAME_RE.test(key)) errors.push(fieldError(at('build_args'), `invalid build arg name '${key}' (use letters, digits and _, not starting with a digit)`));
    }
    const extra = expansionFields(meta, name);
    if (meta.images.length > 0 && n.reuse === true) errors.push(fieldError(at('reuse'), 'a node that pushes images always builds (its push is its effect); leave reuse out'));
    nodes.push({
      name,
      platform,
      context: n.context ?? null,
      dockerfile: n.dockerfile_inline !== undefined ? null : (n.dockerfile ?? 'Dockerfile'),
      dockerfile_inline: n.dockerfile_inline ?? null,
      build_args: n.build_args ?? {},
      labels,
      labels_not: labelsNot,
      allow_emulation: n.allow_emulation ?? false,
      gpus: n.gpus ? { count: n.gpus.count, min_memory_mib: n.gpus.min_memory_mib ?? 0, model: n.gpus.model ?? null } : null,
      priority: n.priority ?? spec.priority ?? 0,
      retry: n.retry ?? true,
      test,
      needs: [...seen],
      timeout_ms: timeoutMs,
      target: n.target ?? null,
      no_cache: n.no_cache ?? false,
      inputs,
      outputs,
      reuse: meta.images.length > 0 ? false : (n.reuse ?? true),
      ...extra,
    });
    const cacheMode = specCacheMode(n.cache, spec.cache);
    if (cacheMode !== undefined) nodes[nodes.length - 1]!.cache_mode = cacheMode;
    const secrets = resolveSecrets(n.secrets, at('secrets'), opts.secrets, errors);
    if (secrets) nodes[nodes.length - 1]!.secrets = secrets;
    if (n.concurrency_group !== undefined) {
      nodes[nodes.length - 1]!.concurrency_group = n.concurrency_group;
      nodeGroups.set(name, n.concurrency_group);
    }
  }
  const budget = resolveBudget(spec, nodeGroups, opts.concurrencyGroups, errors);
  const notify = resolveNotify(spec.notify, opts.webhooks, opts.secrets, errors);
  // Two nodes pushing to one ref would race (a matrix whose tag does not use its axes).
  const pushedBy = new Map<string, string>();
  for (const n of nodes) {
    for (const ref of n.images ?? []) {
      const other = pushedBy.get(ref);
      if (other === undefined) pushedBy.set(ref, n.name);
      else errors.push(fieldError(['nodes', n.name, 'image'], `'${ref}' is pushed by node '${other}' too; give each node its own tag (e.g. with \${{ matrix.<axis> }})`));
    }
  }
  if (errors.length === 0) {
    const cycle = findCycle(nodes);
    if (cycle) errors.push(fieldError(['nodes', cycle[0]!, 'needs'], `dependency cycle: ${cycle.join(' -> ')}`));
  }
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: { name: spec.name ?? opts.defaultName ?? 'build', nodes, ...(budget ? { budget } : {}), ...(notify ? { notify } : {}) } };
}

/** An absolute, normalised path (no `.`/`..`/empty components), or a message saying what is wrong. */
export function absolutePathProblem(p: string): string | null {
  if (!p.startsWith('/')) return `must be an absolute path (got '${p}')`;
  if (p.includes('\0')) return 'must not contain NUL';
  const trimmed = p.length > 1 ? p.replace(/\/+$/, '') : p;
  const parts = trimmed.split('/').slice(1);
  if (trimmed !== '/' && parts.some((c) => c === '' || c === '.' || c === '..')) return `must be a normalised absolute path without '.', '..' or '//' (got '${p}')`;
  return null;
}


/** Label requirements: a map (exact) or a list of `key=value` / `key!=value` rules. */
function validateLabels(
  raw: Record<string, string> | string[] | undefined,
  at: (field: string) => string[],
  errors: FieldError[],
): { labels: Record<string, string>; labelsNot: Record<string, string[]> } {
  // Keys come from the spec: null-prototype objects, so `constructor` is a key like any other.
  const labels: Record<string, string> = Object.create(null) as Record<string, string>;
  const labelsNot: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  const add = (key: string, op: '=' | '!=', value: string, where: string) => {
    if (!LABEL_KEY_RE.test(key)) {
      errors.push(fieldError(at(where), `invalid label key '${key}' (use ${LABEL_KEY_RULE})`));
      return;
    }
    if (op === '=') {
      if (Object.hasOwn(labels, key) && labels[key] !== value) errors.push(fieldError(at(where), `label '${key}' is required to be both '${labels[key]}' and '${value}'`));
      labels[key] = value;
    } else {
      (labelsNot[key] ??= []).push(value);
    }
  };
  if (Array.isArray(raw)) {
    raw.forEach((rule, i) => {
      const m = /^([^=!]+)(!=|=)(.*)$/.exec(rule);
      if (!m) errors.push(fieldError(at(`labels.${i}`), `must be key=value or key!=value (got '${rule.slice(0, 80)}')`));
      else add(m[1]!.trim(), m[2] as '=' | '!=', m[3]!.trim(), `labels.${i}`);
    });
  } else if (raw) {
    for (const [k, v] of Object.entries(raw)) add(k, '=', v, `labels.${k}`);
  }
  for (const [k, vs] of Object.entries(labelsNot)) {
    if (Object.hasOwn(labels, k) && vs.includes(labels[k]!)) errors.push(fieldError(at('labels'), `label '${k}' is required to be '${labels[k]}' and not '${labels[k]}'`));
  }
  return { labels, labelsNot };
}

function validateOutputs(raw: Record<string, string>, at: (field: string) => string[], errors: FieldError[]): ResolvedOutput[] {
  const out: ResolvedOutput[] = [];
  for (const [oname, path] of Object.entries(raw)) {
    if (!OUTPUT_NAME_RE.test(oname)) errors.push(fieldError(at(`outputs.${oname}`), 'invalid output name (use 1-63 characters of [A-Za-z0-9_-], starting with a letter or digit)'));
    const pp = absolutePathProblem(path) ?? (/^\/+$/.test(path) ? 'cannot export the whole file system (/); name a directory or file' : null);
    if (pp) errors.push(fieldError(at(`outputs.${oname}`), pp));
    out.push({ name: oname, path: path.length > 1 ? path.replace(/\/+$/, '') : path });
  }
  return out;
}

function validateInputs(
  self: string,
  raw: Record<string, z.output<typeof InputSpecSchema>>,
  nodes: ReadonlyMap<string, NodeOut | null>,
  at: (field: string) => string[],
  errors: FieldError[],
): ResolvedInput[] {
  const out: ResolvedInput[] = [];
  for (const [iname, i] of Object.entries(raw)) {
    const f = (sub?: string) => at(sub ? `inputs.${iname}.${sub}` : `inputs.${iname}`);
    if (!INPUT_NAME_RE.test(iname)) {
      errors.push(fieldError(f(), 'invalid input name: it is a Dockerfile stage name (use 1-63 characters of [a-z0-9_.-], starting with a lower-case letter)'));
    }
    let from: ResolvedInput['from'] = null;
    if ((i.from === undefined) === (i.digest === undefined)) {
      errors.push(fieldError(f(), 'give exactly one of from (<node>.<output>) or digest (sha256:...)'));
    } else if (i.from !== undefined) {
      const dot = i.from.lastIndexOf('.');
      const node = dot > 0 ? i.from.slice(0, dot) : '';
      const output = dot > 0 ? i.from.slice(dot + 1) : '';
      if (!node || !output) errors.push(fieldError(f('from'), `must be <node>.<output> (got '${i.from}')`));
      else if (node === self) errors.push(fieldError(f('from'), `a node cannot use its own output '${output}'`));
      else if (!nodes.has(node)) errors.push(fieldError(f('from'), `unknown node '${node}'`));
      else if (!Object.hasOwn(nodes.get(node)?.outputs ?? {}, output)) {
        const declared = Object.keys(nodes.get(node)?.outputs ?? {});
        errors.push(fieldError(f('from'), `node '${node}' has no output '${output}' (${declared.length ? `it declares ${declared.join(', ')}` : 'it declares no outputs'})`));
      }
      from = { node, output };
    } else if (!isDigest(i.digest!)) {
      errors.push(fieldError(f('digest'), `must be sha256:<64 lowercase hex digits> (got '${i.digest!.slice(0, 80)}')`));
    }
    let mount: string | null = null;
    if (i.mount !== undefined) {
      const pp = absolutePathProblem(i.mount);
      if (pp) errors.push(fieldError(f('mount'), pp));
      else if (/[\s,"'=]/.test(i.mount)) errors.push(fieldError(f('mount'), `must not contain whitespace, commas, quotes or '=' (got '${i.mount}')`));
      else if (i.mount === '/') errors.push(fieldError(f('mount'), 'cannot mount over /'));
      mount = i.mount;
    }
    const env = i.env ?? {};
    for (const key of Object.keys(env)) {
      if (!ENV_NAME_RE.test(key)) errors.push(fieldError(f('env'), `invalid variable name '${key}'`));
      if (/[\n\r]/.test(env[key]!)) errors.push(fieldError(f('env'), `value of ${key} must be one line`));
    }
    out.push({ name: iname, from, digest: i.digest ?? null, mount, env });
  }
  return out;
}

/** Returns one cycle as a list of node names (first repeated at the end), or null. */
export function findCycle(nodes: ReadonlyArray<{ name: string; needs: string[] }>): string[] | null {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const state = new Map<string, 1 | 2>(); // 1 = on the stack, 2 = done
  const stack: string[] = [];
  // Iterative DFS: a 10,000-node chain must not overflow the call stack.
  for (const root of nodes) {
    if (state.has(root.name)) continue;
    const work: Array<{ name: string; i: number }> = [{ name: root.name, i: 0 }];
    state.set(root.name, 1);
    stack.push(root.name);
    while (work.length > 0) {
      const top = work[work.length - 1]!;
      const needs = byName.get(top.name)?.needs ?? [];
      if (top.i < needs.length) {
        const next = needs[top.i++]!;
        const s = state.get(next);
        if (s === 1) return [...stack.slice(stack.indexOf(next)), next];
        if (s === undefined && byName.has(next)) {
          state.set(next, 1);
          stack.push(next);
          work.push({ name: next, i: 0 });
        }
      } else {
        state.set(top.name, 2);
        stack.pop();
        work.pop();
      }
    }
  }
  return null;
}
