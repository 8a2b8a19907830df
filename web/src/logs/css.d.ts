/**
 * Side-effect CSS imports (`import './log.css'`, `import './fleet.css'`): Vite bundles them;
 * for the type checker they are modules with no exports.
 */
declare module '*.css';
