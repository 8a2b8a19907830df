/**
 * Spec expansion: `matrix:` and `platforms:` turn one node of the spec into several,
 * before the nodes are validated one by one (build-spec.ts).
 *
 * - `matrix: {python: ["3.11", "3.12"], variant: [slim, full]}` gives one node per
 *   combination, named `<node>.<values joined by '-'>` (`app.3.11-slim`), with
 *   `${{ matrix.python }}` substituted in build args, labels, image refs and output names.
 * - `platforms: [linux/amd64, linux/arm64]` gives one node per platform (times the
 *   combinations), named `<node>.<os>-<arch>[-<variant>]` (`app.linux-arm64`, or
 *   `app.3.11-slim.linux-arm64`), with TARGETPLATFORM, TARGETOS, TARGETARCH (and
 *   TARGETVARIANT) as build args unless the node sets them. With `image:`, each pushes its image under a
 *   per-platform tag (`<tag>-linux-arm64`) and one more node, named like the node (or the
 *   combination), needs all of them and puts a multi-platform index at the `image:` refs
 *   (its `index` lists the platform nodes; an agent assembles it through the registry's
 *   HTTP API, agent/docker/image-index.ts).
 *
 * References to an expanded node: `needs: [app]` waits for every node it became (the
 * index nodes when there are some, else every platform and combination node); `from:
 * app.out` takes the one node of `app` with the same platform (when `app` fans out) and
 * the same values of the matrix axes both nodes have; when that is not exactly one node
 * it is an error naming the node and field. Expanded names may also be used directly.
 * Names that are not expanded pass through unchanged, so a spec without matrix and
 * platforms is validated exactly as before.
 */
import { z } from 'zod';
import type { FieldError } from '../errors.js';
import { ENV_NAME_RE, NAME_RE, NAME_RULE } from '../names.js';
import { platformProblem } from '../platform.js';
import { pushRefProblem } from './image-ref.js';
import { fieldError } from './spec-fields.js';

/** At most this many nodes from one spec node (combinations times platforms). */
export const MAX_EXPANSION = 256;
export const MAX_MATRIX_AXES = 8;
export const MAX_AXIS_VALUES = 64;
export const MAX_PLATFORMS = 16;
export const MAX_IMAGES = 16;

const Scalar = z.union([z.string().max(200), z.number(), z.boolean()]).transform(String);

/** The spec fields expansion reads (merged into the node schema). */
export const ExpansionFields = {
  /** Image refs to push after a successful build and test: one, or a list. */
  image: z.union([z.string().min(1).max(512), z.array(z.string().min(1).max(512)).min(1).max(MAX_IMAGES)]).optional(),
  /** Build once per platform (instead of `platform`); with `image:`, one multi-platform index. */
  platforms: z.array(z.string().max(64)).min(1).max(MAX_PLATFORMS).optional(),
  /** Axis name -> values: one node per combination. */
  matrix: z.record(z.string(), z.array(Scalar).min(1).max(MAX_AXIS_VALUES)).optional(),
};

/** What expansion needs of a node (the rest is copied through). */
export interface ExpandableNode {
  platform?: string | undefined;
  platforms?: string[] | undefined;
  matrix?: Record<string, string[]> | undefined;
  image?: string | string[] | undefined;
  build_args?: Record<string, string> | undefined;
  labels?: Record<string, string> | string[] | undefined;
  outputs?: Record<string, string> | undefined;
  needs?: string[] | undefined;
  inputs?: Record<string, { from?: string | undefined }> | undefined;
}

/** What an expanded node is, beyond its spec fields. */
export interface ExpandedMeta {
  /** The spec node it came from. */
  origin: string;
  /** Axis -> value of its combination (empty without a matrix). */
  matrix: Array<[string, string]>;
  /** Normalised refs it pushes (per-platform tags for a platform node of an index). */
  images: string[];
  /** Set on an index node: the platform nodes whose images it puts in one index. */
  index: Array<{ node: string; platform: string }> | null;
}

export interface Expanded<N> {
  /** Expanded node name -> spec node (null for an index node, which has no build). */
  nodes: Map<string, { node: N | null; meta: ExpandedMeta }>;
}

interface ErrorSink {
  push(e: FieldError): void;
}

interface Member {
  name: string;
  combo: Map<string, string>;
  /** The platform it was fanned to, or null when the spec node names one platform. */
  platform: string | null;
  /** Its output names (after substitution). */
  outputs: string[];
}

interface Group {
  members: Member[];
  /** Index nodes (one per combination), when the node fans out and pushes images. */
  joins: string[];
}

const MATRIX_REF = /\$\{\{\s*matrix\.([A-Za-z0-9_-]*)\s*\}\}/g;

/** `linux/arm64/v8` -> `linux-arm64-v8`. */
export function platformSlug(platform: string): string {
  return platform.replace(/\//g, '-');
}

function comboSlug(combo: Map<string, string>): string {
  return [...combo.values()].map((v) => v.replace(/[^A-Za-z0-9_.-]/g, '_')).join('-');
}

function combinations(axes: Array<[string, string[]]>): Array<Map<string, string>> {
  let out: Array<Map<string, string>> = [new Map()];
  for (const [axis, values] of axes) {
    const next: Array<Map<string, string>> = [];
    for (const c of out) for (const v of values) next.push(new Map([...c, [axis, v]]));
    out = next;
  }
  return out;
}

/**
 * Expands matrix and platforms; pushes problems to `errors`. Nodes without either pass
 * through under their own name with their refs unchanged.
 */
export function expandNodes<N extends ExpandableNode>(nodes: Record<string, N>, sink: FieldError[]): Expanded<N> {
  // A problem of the spec node shows once, not once per node it expands to.
  const seen = new Set<string>();
  const errors: ErrorSink = {
    push: (e) => {
      const key = `${e.path}\0${e.message}`;
      if (!seen.has(key)) {
        seen.add(key);
        sink.push(e);
      }
    },
  };
  const groups = new Map<string, Group>();
  const out = new Map<string, { node: N | null; meta: ExpandedMeta }>();
  const names = Object.keys(nodes);
  const add = (origin: string, name: string, entry: { node: N | null; meta: ExpandedMeta }) => {
    if (!NAME_RE.test(name)) errors.push(fieldError(['nodes', origin], `expanded node name '${name}' is invalid (${NAME_RULE}); use shorter matrix values or node name`));
    else if (out.has(name) || (name !== origin && Object.hasOwn(nodes, name))) errors.push(fieldError(['nodes', origin], `expanded node name '${name}' is used twice`));
    out.set(name, entry);
  };

  for (const origin of names) {
    const n = nodes[origin]!;
    const at = (field: string) => ['nodes', origin, field];
    const refs = n.image === undefined ? [] : typeof n.image === 'string' ? [n.image] : n.image;
    if (n.platforms === undefined && n.matrix === undefined) {
      add(origin, origin, { node: n, meta: { origin, matrix: [], images: pushRefs(refs, at, errors), index: null } });
      continue;
    }
    // Matrix axes and their combinations.
    const axes = Object.entries(n.matrix ?? {});
    if (axes.length > MAX_MATRIX_AXES) errors.push(fieldError(at('matrix'), `too many axes (${axes.length}; at most ${MAX_MATRIX_AXES})`));
    let count = 1;
    for (const [axis, values] of axes) {
      if (!ENV_NAME_RE.test(axis)) errors.push(fieldError(at(`matrix.${axis}`), 'invalid axis name (use letters, digits and _, not starting with a digit)'));
      if (new Set(values).size !== values.length) errors.push(fieldError(at(`matrix.${axis}`), 'lists a value twice'));
      count *= values.length;
    }
    const platforms = n.platforms ?? null;
    if (platforms) {
      if (n.platform !== undefined) errors.push(fieldError(at('platforms'), 'give either platform or platforms, not both'));
      for (const p of platforms) {
        const pp = platformProblem(p);
        if (pp) errors.push(fieldError(at('platforms'), pp));
      }
      if (new Set(platforms).size !== platforms.length) errors.push(fieldError(at('platforms'), 'lists a platform twice'));
      count *= platforms.length;
    }
    if (count > MAX_EXPANSION) {
      errors.push(fieldError(at(platforms ? 'platforms' : 'matrix'), `expands to ${count} nodes (at most ${MAX_EXPANSION} per node)`));
      continue;
    }
    const group: Group = { members: [], joins: [] };
    groups.set(origin, group);
    for (const combo of combinations(axes)) {
      const base = combo.size > 0 ? `${origin}.${comboSlug(combo)}` : origin;
      const sub = (text: string, field: string) => substitute(text, combo, (msg) => errors.push(fieldError(at(field), msg)));
      const matrix = [...combo];
      const userRefs = pushRefs(refs.map((r) => sub(r, 'image')), at, errors);
      const perPlatform: Array<{ node: string; platform: string }> = [];
      for (const platform of platforms ?? [null]) {
        const name = platform ? `${base}.${platformSlug(platform)}` : base;
        const copy = { ...n, platforms: undefined, matrix: undefined, image: undefined } as N;
        if (combo.size > 0) {
          if (n.build_args) copy.build_args = mapValues(n.build_args, (v, k) => sub(v, `build_args.${k}`));
          if (Array.isArray(n.labels)) copy.labels = n.labels.map((l, i) => sub(l, `labels.${i}`));
          else if (n.labels) copy.labels = mapValues(n.labels, (v, k) => sub(v, `labels.${k}`));
          if (n.outputs) copy.outputs = Object.fromEntries(Object.entries(n.outputs).map(([k, v]) => [sub(k, `outputs.${k}`), v]));
        }
        if (platform) {
          copy.platform = platform;
          // The Engine's built-in BuildKit leaves TARGETARCH & co. empty before the first FROM
          // (`FROM base:1-${TARGETARCH}` would name `base:1-`): a platform node gets them as build args.
          const [os, arch, variant] = platform.split('/');
          copy.build_args = { TARGETPLATFORM: platform, TARGETOS: os!, TARGETARCH: arch!, ...(variant ? { TARGETVARIANT: variant } : {}), ...copy.build_args };
        }
        // A platform node of an index pushes under a per-platform tag; the index gets the refs.
        const images = platform && userRefs.length > 0 ? platformRefs(userRefs, platform, at, errors) : userRefs;
        add(origin, name, { node: copy, meta: { origin, matrix, images, index: null } });
        group.members.push({ name, combo, platform, outputs: Object.keys(copy.outputs ?? {}) });
        if (platform) perPlatform.push({ node: name, platform });
      }
      if (platforms && userRefs.length > 0) {
        add(origin, base, { node: null, meta: { origin, matrix, images: userRefs, index: perPlatform } });
        group.joins.push(base);
      }
    }
  }

  // References to expanded nodes.
  for (const [name, entry] of out) {
    const n = entry.node;
    if (n === null) continue;
    const self = { combo: new Map(entry.meta.matrix), platform: n.platform ?? null };
    if (n.needs?.some((need) => need !== entry.meta.origin && groups.has(need))) {
      const needs: string[] = [];
      for (const need of n.needs!) {
        const g = need !== entry.meta.origin ? groups.get(need) : undefined;
        if (!g) needs.push(need);
        else needs.push(...(g.joins.length > 0 ? g.joins : g.members.map((m) => m.name)));
      }
      entry.node = { ...n, needs: [...new Set(needs)] };
    }
    if (n.inputs) {
      const inputs: Record<string, { from?: string | undefined }> = {};
      for (const [iname, input] of Object.entries(n.inputs)) {
        inputs[iname] = input;
        const from = input.from;
        const dot = from?.lastIndexOf('.') ?? -1;
        const up = from && dot > 0 ? from.slice(0, dot) : '';
        const g = up !== entry.meta.origin ? groups.get(up) : undefined;
        if (!g || !from) continue;
        const output = from.slice(dot + 1);
        const picked = g.members.filter(
          (m) => m.outputs.includes(output) && (m.platform === null || m.platform === self.platform) && [...m.combo].every(([k, v]) => !self.combo.has(k) || self.combo.get(k) === v),
        );
        if (picked.length !== 1) {
          delete inputs[iname]; // reported here, not again as an unknown node
          const why = picked.length === 0 ? 'none of them has this node\'s platform and matrix values and that output' : `${picked.length} of them match (${picked.map((m) => m.name).slice(0, 4).join(', ')}${picked.length > 4 ? ', ...' : ''})`;
          errors.push(fieldError(['nodes', name, `inputs.${iname}.from`], `node '${up}' expands to ${g.members.length} nodes and ${why}; fan this node over the same platforms and matrix axes, or name one of them`));
          continue;
        }
        inputs[iname] = { ...input, from: `${picked[0]!.name}.${output}` };
      }
      entry.node = { ...(entry.node as N), inputs } as N;
    }
  }
  return { nodes: out };
}

function mapValues(m: Record<string, string>, f: (v: string, k: string) => string): Record<string, string> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, f(v, k)]));
}

/** `${{ matrix.x }}` replaced by the combination's value; an unknown axis is a problem. */
export function substitute(text: string, combo: ReadonlyMap<string, string>, problem: (message: string) => void): string {
  return text.replace(MATRIX_REF, (whole, axis: string) => {
    const v = combo.get(axis);
    if (v === undefined) {
      problem(`${whole} names no axis of this node's matrix${combo.size ? ` (axes: ${[...combo.keys()].join(', ')})` : ''}`);
      return whole;
    }
    return v;
  });
}

function pushRefs(refs: string[], at: (field: string) => string[], errors: ErrorSink): string[] {
  const out: string[] = [];
  refs.forEach((r, i) => {
    const p = pushRefProblem(r);
    if ('problem' in p) errors.push(fieldError(at(refs.length > 1 ? `image.${i}` : 'image'), `invalid image reference '${r.slice(0, 120)}': ${p.problem}`));
    else if (out.includes(p.ref)) errors.push(fieldError(at('image'), `'${r}' is listed twice`));
    else out.push(p.ref);
  });
  return out;
}

/** One per-platform ref per repository: `<repo>:<first tag>-<platform slug>`. */
function platformRefs(refs: string[], platform: string, at: (field: string) => string[], errors: ErrorSink): string[] {
  const byRepo = new Map<string, string>();
  for (const r of refs) {
    const p = pushRefProblem(r);
    if ('problem' in p) continue;
    const repo = `${p.parsed.domain}/${p.parsed.path}`;
    if (byRepo.has(repo)) continue;
    const tag = `${p.parsed.tag}-${platformSlug(platform)}`;
    if (tag.length > 128) errors.push(fieldError(at('image'), `the per-platform tag '${tag.slice(0, 60)}...' would be longer than 128 characters; use a shorter tag`));
    byRepo.set(repo, `${repo}:${tag}`);
  }
  return [...byRepo.values()];
}
