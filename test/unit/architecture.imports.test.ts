/**
 * The dependency rules of the code base, checked on the source: shared/ depends on
 * nothing of ours; coordinator and agent never import each other (or the CLI) and use
 * shared/ only through its index (agent/ only through shared/core.ts, the part an idle
 * agent loads); only the CLI entry point touches process.env.
 * Also: no import cycles among the product sources, and the folder rules inside the
 * coordinator (nothing outside `coordinator/http/` and the wiring imports http/; logs/
 * never imports builds/). Imports are read with the TypeScript parser, so comments and
 * strings cannot fake or hide one. Finally, .nvmrc names a Node version package.json's
 * `engines` accepts.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const PRODUCT_AREAS = ['shared', 'coordinator', 'agent', 'cli'];
/** The coordinator's wiring: the files that assemble the services (and so may import coordinator/http/). */
const WIRING: ReadonlySet<string> = new Set(['coordinator/coordinator.ts', 'coordinator/coordinator-core.ts', 'coordinator/cluster-coordinator.ts', 'coordinator/main.ts']);

/**
 * Import arrows that break the rules below today and that other parts of issue 10 remove
 * (the registry/scheduler cycle moves into coordinator/placement/; agent-hub stops reaching
 * into http/; log-follow gets the Engine through an interface of its own). Each entry is
 * `from -> to`, as the failure messages print it; the arrow is ignored by the cycle check and
 * the folder rules. Removed by issue 10 merge: the integrator empties this list.
 */
const KNOWN_UNTIL_ISSUE_10: readonly string[] = [
];

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(ROOT, dir), { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await tsFiles(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

function imports(text: string): string[] {
  return [...text.matchAll(/(?:import|export)[^'"]*?from\s+'([^']+)'/g)].map((m) => m[1]!);
}

/** How a module refers to another: erased at run time (`import type`), loaded up front, or loaded on demand. */
type ImportKind = 'type' | 'value' | 'dynamic';

interface ImportArrow {
  /** Repository-relative path of the imported source file (`.ts`). */
  readonly to: string;
  readonly kind: ImportKind;
}

/**
 * Every import of another source file of ours in `file`: import and export-from declarations
 * (including `import type`), `import x = require()`, and `import('…')` with a literal
 * specifier. Specifiers of packages and files that are not product sources are left out.
 */
function importArrows(file: string, text: string, sources: ReadonlySet<string>): ImportArrow[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
  const out: ImportArrow[] = [];
  const add = (spec: ts.Expression | undefined, kind: ImportKind): void => {
    if (spec === undefined || !ts.isStringLiteral(spec) || !spec.text.startsWith('.')) return;
    const to = relative(ROOT, join(ROOT, file, '..', spec.text)).replace(/\.js$/, '.ts');
    if (sources.has(to)) out.push({ to, kind });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      // `import { type A }` keeps an (empty) import under verbatimModuleSyntax: only `import type` is erased
      add(node.moduleSpecifier, node.importClause?.isTypeOnly === true ? 'type' : 'value');
    } else if (ts.isExportDeclaration(node)) {
      add(node.moduleSpecifier, node.isTypeOnly ? 'type' : 'value');
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node.moduleReference.expression, node.isTypeOnly ? 'type' : 'value');
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      add(node.arguments[0], 'dynamic');
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node.argument.literal as ts.Expression, 'type');
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** The import graph of the product sources: file -> the files it imports (with how). */
let graphOnce: Promise<Map<string, ImportArrow[]>> | undefined;
function productGraph(): Promise<Map<string, ImportArrow[]>> {
  graphOnce ??= readProductGraph();
  return graphOnce;
}

async function readProductGraph(): Promise<Map<string, ImportArrow[]>> {
  const files: string[] = [];
  for (const area of PRODUCT_AREAS) files.push(...(await tsFiles(area)));
  const sources = new Set(files);
  const graph = new Map<string, ImportArrow[]>();
  for (const file of files.sort()) {
    const arrows = importArrows(file, await readFile(join(ROOT, file), 'utf8'), sources);
    graph.set(file, arrows.filter((a) => !KNOWN_UNTIL_ISSUE_10.includes(`${file} -> ${a.to}`)));
  }
  return graph;
}

/**
 * The import cycles of `graph`, one per strongly connected component (Tarjan), each printed as
 * a closed path `a.ts -> b.ts -> a.ts`.
 */
function importCycles(graph: ReadonlyMap<string, readonly ImportArrow[]>): string[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const strongConnect = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const { to } of graph.get(v) ?? []) {
      if (!index.has(to)) {
        strongConnect(to);
        low.set(v, Math.min(low.get(v)!, low.get(to)!));
      } else if (onStack.has(to)) {
        low.set(v, Math.min(low.get(v)!, index.get(to)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      const selfLoop = (graph.get(v) ?? []).some((a) => a.to === v);
      if (component.length > 1 || selfLoop) components.push(component);
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) strongConnect(v);
  // one concrete cycle per component: a breadth-first path back to its first file, inside the component
  return components.map((component) => {
    const members = new Set(component);
    const start = [...members].sort()[0]!;
    const parent = new Map<string, string>();
    const queue = [start];
    while (queue.length > 0) {
      const v = queue.shift()!;
      for (const { to } of graph.get(v) ?? []) {
        if (!members.has(to)) continue;
        if (to === start) {
          const path = [start];
          for (let w: string | undefined = v; w !== undefined && w !== start; w = parent.get(w)) path.splice(1, 0, w);
          return [...path, start].join(' -> ');
        }
        if (!parent.has(to)) {
          parent.set(to, v);
          queue.push(to);
        }
      }
    }
    return component.join(', ');
  });
}

/** The rules between folders of the coordinator; returns why `from -> to` breaks one, or null. */
function coordinatorFolderRule(from: string, to: string): string | null {
  const [fromTop, fromDir] = from.split('/');
  const [toTop, toDir] = to.split('/');
  if (fromTop !== 'coordinator' || toTop !== 'coordinator') return null;
  const wiring = WIRING.has(from);
  if (toDir === 'http' && fromDir !== 'http' && !wiring) return 'only http/ and the wiring (coordinator.ts, coordinator-core.ts, cluster-coordinator.ts, main.ts) import coordinator/http/';
  if (fromDir === 'logs' && toDir === 'builds') return 'coordinator/logs/ does not import coordinator/builds/';
  return null;
}

/** Whether `version` (x.y.z) is accepted by an npm `engines` range made of `^a.b.c` / `>=a.b.c` alternatives (`>=24` = `>=24.0.0`). */
function satisfiesEngines(version: string, range: string): boolean {
  const parse = (v: string): number[] => [...v.split('.').map(Number), 0, 0].slice(0, 3);
  const cmp = (a: number[], b: number[]): number => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!;
  const v = parse(version);
  return range.split('||').some((alt) => {
    const m = /^\s*(\^|>=)(\d+(?:\.\d+){0,2})\s*$/.exec(alt);
    if (m === null) throw new Error(`engines range '${alt.trim()}' is not ^x.y.z or >=x.y.z; extend satisfiesEngines`);
    const min = parse(m[2]!);
    return cmp(v, min) >= 0 && (m[1] === '>=' || v[0] === min[0]);
  });
}

describe('architecture', () => {
  it('keeps the dependency direction: shared <- coordinator, agent <- cli', async () => {
    const problems: string[] = [];
    for (const area of ['shared', 'coordinator', 'agent', 'cli']) {
      for (const file of await tsFiles(area)) {
        const text = await readFile(join(ROOT, file), 'utf8');
        for (const spec of imports(text)) {
          if (!spec.startsWith('.')) continue;
          const target = relative(ROOT, join(ROOT, file, '..', spec));
          const top = target.split('/')[0];
          if (top === area) continue;
          // agent/ only through shared/core.ts, the part of shared/ an idle agent carries
          const allowed =
            (area === 'coordinator' || area === 'agent' || area === 'cli') && top === 'shared'
              ? target === 'shared/core.js' || (area !== 'agent' && target === 'shared/index.js')
              : area === 'cli' && (top === 'coordinator' || top === 'agent')
                ? target.endsWith('/main.js')
                : false;
          if (!allowed) problems.push(`${file} imports ${spec} (${target})`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('keeps the dashboard (web/) apart: it imports only web/ and shared/ files without Node built-ins; nothing else imports web/', async () => {
    const problems: string[] = [];
    const webFiles = async (dir: string): Promise<string[]> => {
      const out: string[] = [];
      for (const e of await readdir(join(ROOT, dir), { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) out.push(...(await webFiles(p)));
        else if (/\.tsx?$/.test(e.name)) out.push(p);
      }
      return out;
    };
    const shared = new Set<string>();
    for (const file of await webFiles('web/src')) {
      for (const spec of imports(await readFile(join(ROOT, file), 'utf8'))) {
        if (spec.startsWith('node:')) problems.push(`${file} imports the Node built-in ${spec}`);
        if (!spec.startsWith('.')) continue;
        const top = relative(ROOT, join(ROOT, file, '..', spec)).split('/')[0];
        if (top === 'shared') shared.add(relative(ROOT, join(ROOT, file, '..', spec)).replace(/\.js$/, '.ts'));
        else if (top !== 'web') problems.push(`${file} imports ${spec} (outside web/ and shared/)`);
      }
    }
    expect(shared.size, 'web/ imports shared/ files (the check above is not vacuous)').toBeGreaterThan(0);
    // the shared files the page bundles must not pull Node in either
    for (const file of shared) for (const spec of imports(await readFile(join(ROOT, file), 'utf8'))) if (spec.startsWith('node:')) problems.push(`${file} (bundled into web/) imports ${spec}`);
    for (const area of PRODUCT_AREAS) {
      for (const file of await tsFiles(area)) {
        for (const spec of imports(await readFile(join(ROOT, file), 'utf8'))) if (spec.startsWith('.') && relative(ROOT, join(ROOT, file, '..', spec)).split('/')[0] === 'web') problems.push(`${file} imports ${spec} (web/ is the dashboard's alone)`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('reads process.env only in the CLI entry point', async () => {
    const offenders: string[] = [];
    for (const area of ['shared', 'coordinator', 'agent', 'cli']) {
      for (const file of await tsFiles(area)) {
        if (file === 'cli/main.ts') continue;
        const code = (await readFile(join(ROOT, file), 'utf8')).replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
        if (code.includes('process.env')) offenders.push(file);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('opens every module with a header comment saying what it is for', async () => {
    const missing: string[] = [];
    for (const area of ['shared', 'coordinator', 'agent', 'cli']) {
      for (const file of await tsFiles(area)) {
        const text = (await readFile(join(ROOT, file), 'utf8')).replace(/^#!.*\n/, '');
        if (!/^\s*(\/\*\*|\/\/)/.test(text)) missing.push(file);
      }
    }
    expect(missing).toEqual([]);
  });

  it('has no import cycles among the product sources (type-only imports included)', async () => {
    // a cycle of `import type` costs nothing at run time, but it still ties the two modules
    // together (neither can be read, tested or moved without the other), which is what
    // "no import cycles" is about; dynamic import() counts too
    expect(importCycles(await productGraph())).toEqual([]);
  });

  it('keeps the coordinator folder rules: nothing reaches back up into http/, logs/ never into builds/', async () => {
    const problems: string[] = [];
    for (const [from, arrows] of await productGraph()) {
      for (const { to, kind } of arrows) {
        const why = coordinatorFolderRule(from, to);
        if (why !== null) problems.push(`${from} -> ${to} (${kind} import): ${why}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('finds imports of every kind (the checks above are not vacuous)', () => {
    const sources = new Set(['a/x.ts', 'a/y.ts', 'a/z.ts', 'a/w.ts', 'a/v.ts']);
    const text = [
      "import type { T } from './y.js';",
      "import { type U } from './z.js';",
      '// import { fake } from "./w.js";',
      "export { V } from './w.js';",
      "const s = \"import { no } from './v.js'\";",
      "export async function f(): Promise<unknown> { return import('./v.js'); }",
      "import { readFile } from 'node:fs';",
    ].join('\n');
    expect(importArrows('a/x.ts', text, sources)).toEqual([
      { to: 'a/y.ts', kind: 'type' },
      { to: 'a/z.ts', kind: 'value' },
      { to: 'a/w.ts', kind: 'value' },
      { to: 'a/v.ts', kind: 'dynamic' },
    ]);
    const graph = new Map<string, ImportArrow[]>([
      ['a.ts', [{ to: 'b.ts', kind: 'value' }]],
      ['b.ts', [{ to: 'c.ts', kind: 'type' }]],
      ['c.ts', [{ to: 'a.ts', kind: 'value' }]],
      ['d.ts', [{ to: 'a.ts', kind: 'value' }]],
    ]);
    expect(importCycles(graph)).toEqual(['a.ts -> b.ts -> c.ts -> a.ts']);
    expect(coordinatorFolderRule('coordinator/agents/agent-hub.ts', 'coordinator/http/auth.ts')).not.toBeNull();
    expect(coordinatorFolderRule('coordinator/logs/log-follow.ts', 'coordinator/builds/engine.ts')).not.toBeNull();
    expect(coordinatorFolderRule('coordinator/coordinator.ts', 'coordinator/http/app.ts')).toBeNull();
    expect(coordinatorFolderRule('coordinator/http/app.ts', 'coordinator/builds/engine.ts')).toBeNull();
  });

  it('lists the shared package surface name by name (no export * in shared/index.ts or shared/core.ts), index.ts re-exporting all of core.ts', async () => {
    const exported = new Map<string, Map<string, string>>();
    for (const file of ['index.ts', 'core.ts']) {
      const text = await readFile(join(ROOT, 'shared', file), 'utf8');
      const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest);
      const decls = sf.statements.filter((st): st is ts.ExportDeclaration => ts.isExportDeclaration(st));
      expect(decls.filter((st) => st.exportClause === undefined).map((st) => st.getText(sf)), file).toEqual([]);
      const names = new Map<string, string>();
      for (const d of decls) {
        const from = d.moduleSpecifier !== undefined && ts.isStringLiteral(d.moduleSpecifier) ? d.moduleSpecifier.text : '';
        if (d.exportClause !== undefined && ts.isNamedExports(d.exportClause)) for (const e of d.exportClause.elements) names.set(e.name.text, from);
      }
      exported.set(file, names);
    }
    const core = exported.get('core.ts')!;
    const index = exported.get('index.ts')!;
    expect(core.size).toBeGreaterThan(50);
    expect([...core.keys()].filter((n) => index.get(n) !== './core.js'), 'core names index.ts does not take from core.ts').toEqual([]);
  });

  it('names in .nvmrc a Node version that package.json engines accepts, and the one running here', async () => {
    const nvmrc = (await readFile(join(ROOT, '.nvmrc'), 'utf8')).trim();
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
    expect(nvmrc).toMatch(/^\d+\.\d+\.\d+$/);
    expect(satisfiesEngines(nvmrc, pkg.engines.node)).toBe(true);
    expect(satisfiesEngines(process.versions.node, pkg.engines.node)).toBe(true);
    expect(satisfiesEngines('20.18.0', pkg.engines.node)).toBe(false);
  });
});
