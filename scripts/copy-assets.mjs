// Copies the non-TypeScript files that compiled code loads at runtime into dist/, next to
// the emitted .js: every `*.proto` under agent/ goes to the same relative path under
// dist/ (agent/docker/buildkit-status.proto -> dist/agent/docker/buildkit-status.proto).
// Run after `tsc -p tsconfig.json` (see the "build" script). Plain Node ESM, no dependencies.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const sourceDirs = ['agent'];
const pattern = /\.proto$/;

/** All files under dir (recursively) whose name matches pattern. */
function findFiles(dir) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...findFiles(path));
    else if (entry.isFile() && pattern.test(entry.name)) found.push(path);
  }
  return found;
}

let copied = 0;
for (const sourceDir of sourceDirs) {
  for (const file of findFiles(join(root, sourceDir))) {
    const rel = relative(root, file);
    const target = join(root, 'dist', rel);
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(file, target);
    copied++;
  }
}
process.stderr.write(`copy-assets: ${copied} file(s) copied to dist/\n`);
