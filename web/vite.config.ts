// Vite config of the dashboard (web/): React, built into dist/web/ by `npm run build`
// (hashed files under assets/, which the coordinator serves with a long cache). `npx vite
// --config web/vite.config.ts` runs the dev server; it proxies /api to a coordinator
// (KILN_COORDINATOR, default http://127.0.0.1:8080) so the session cookie stays same-origin.
import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));
const coordinator = process.env.KILN_COORDINATOR ?? 'http://127.0.0.1:8080';

export default defineConfig({
  root,
  base: '/',
  plugins: [react()],
  // no inline scripts or styles in index.html (the coordinator's CSP forbids them)
  // the layout worker (elkjs) is ~1.4 MB on its own, loaded once and cached: no size warning for it
  build: { outDir: fileURLToPath(new URL('../dist/web', import.meta.url)), emptyOutDir: true, assetsInlineLimit: 0, sourcemap: false, modulePreload: { polyfill: false }, chunkSizeWarningLimit: 2048 },
  worker: { format: 'es' },
  server: { proxy: { '/api': { target: coordinator, changeOrigin: false } } },
});
