/**
 * Webhooks cost nothing when none can exist: the coordinator reaches the delivery code
 * (queue, sender, signing, payloads, the service) through no static import, only through
 * the dynamic import in coordinator-core.ts that runs when a hook or an allowed host is
 * configured; at start it loads only the small settings module.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const staticImports = (file: string): string[] =>
  [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^(?:import|export)(?!\s+type\b)[^;]*?\sfrom\s+'([^']+)';/gms)].map((m) => m[1]!);

describe('what the coordinator loads without webhooks', () => {
  it('reaches only the settings module of coordinator/webhooks/ through static imports', () => {
    const seen = new Set<string>();
    const todo = ['cli/main.ts', 'cli/program.ts', 'coordinator/main.ts'];
    while (todo.length > 0) {
      const file = todo.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const spec of staticImports(file)) if (spec.startsWith('.')) todo.push(relative(ROOT, join(ROOT, dirname(file), spec)).replace(/\.js$/, '.ts'));
    }
    expect(seen.has('coordinator/coordinator.ts')).toBe(true);
    expect(seen.has('coordinator/coordinator-core.ts')).toBe(true);
    expect(seen.has('coordinator/http/routes-webhooks.ts')).toBe(true);
    expect([...seen].filter((f) => f.startsWith('coordinator/webhooks/'))).toEqual(['coordinator/webhooks/webhook-settings.ts']);
    // the services (webhooks among them) are opened in coordinator-core.ts
    const wiring = readFileSync(join(ROOT, 'coordinator/coordinator-core.ts'), 'utf8');
    expect(wiring).toContain("await import('./webhooks/webhooks.js')");
    // (never on a standby's read-only copy)
    expect(wiring).toMatch(/if \(!opts\.replica && \(wh\.hooks\.length > 0 \|\| wh\.allowedHosts\.length > 0\)\)/);
  });
});
