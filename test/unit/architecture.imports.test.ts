/**
 * The dependency rules of the code base, checked on the source: shared/ depends on
 * nothing of ours; coordinator and agent never import each other (or the CLI) and use
 * shared/ only through its index; only the CLI entry point touches process.env.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');

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
          const allowed =
            (area === 'coordinator' || area === 'agent' || area === 'cli') && top === 'shared'
              ? target === 'shared/index.js'
              : area === 'cli' && (top === 'coordinator' || top === 'agent')
                ? target.endsWith('/main.js')
                : false;
          if (!allowed) problems.push(`${file} imports ${spec} (${target})`);
        }
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
});
