// ESLint flat config: the type-aware rules that keep kiln's async code and imports honest
// (`npm run lint`, run by scripts/test.sh). Only rules that catch real bugs or enforce a
// convention of the style guide are on; formatting is left alone.
//
// TypeScript: `tsc` is TypeScript 7 (package alias `@typescript/native`), which has no JS
// compiler API, so typescript-eslint gets TypeScript 6 through the package named `typescript`
// (alias of `@typescript/typescript6`). Both read the same tsconfig files.
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

/** `(err as Error)` hides non-Error throws; shared/ has `coerceError(err)` for that. */
const noErrorCast = ['TSAsExpression', 'TSTypeAssertion'].map((node) => ({
  selector: `${node} > TSTypeReference.typeAnnotation[typeName.name="Error"]`,
  message: 'use coerceError(err) from shared/ instead of casting to Error',
}));

/** The rules for every TypeScript file (all need type information). */
const typeAwareRules = {
  '@typescript-eslint/no-floating-promises': 'error',
  '@typescript-eslint/no-misused-promises': 'error',
  '@typescript-eslint/await-thenable': 'error',
  '@typescript-eslint/consistent-type-imports': [
    'error',
    { prefer: 'type-imports', fixStyle: 'separate-type-imports' },
  ],
  '@typescript-eslint/switch-exhaustiveness-check': [
    'error',
    // a `default:` branch is an explicit decision; only switches without one must cover every case
    { considerDefaultExhaustiveForUnions: true, requireDefaultForNonUnion: false },
  ],
  'no-restricted-syntax': ['error', ...noErrorCast],
};

export default defineConfig(
  { ignores: ['dist/**', 'node_modules/**', '.kiln/**', 'tmp/**', 'test/fixtures/**'] },
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  {
    // product code, tests and benchmarks: tsconfig.test.json is tsconfig.json plus test/
    // (same compiler options), so one program covers them all. Every .ts file is matched, so
    // a new one outside that project fails lint loudly instead of going unchecked.
    files: ['**/*.ts'],
    ignores: ['vitest.config.ts', 'web/**'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: typeAwareRules,
  },
  {
    // the dashboard (web/): its own project (DOM, JSX, bundler resolution), the same rules
    files: ['web/src/**/*.ts', 'web/src/**/*.tsx'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { project: './web/tsconfig.json', tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: typeAwareRules,
  },
  {
    // the few files outside the tsconfig projects: scripts/*.mjs, the tool configs
    files: ['scripts/*.mjs', 'vitest.config.ts', 'eslint.config.js', 'web/vite.config.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: {
        projectService: {
          allowDefaultProject: ['scripts/*.mjs', 'vitest.config.ts', 'eslint.config.js', 'web/vite.config.ts'],
          defaultProject: './tsconfig.json',
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      ...typeAwareRules,
      '@typescript-eslint/consistent-type-imports': 'off', // JS files have no `import type`
    },
  },
);
