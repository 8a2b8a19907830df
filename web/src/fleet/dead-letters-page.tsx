/**
 * PLACEHOLDER until the merge: the logview helper's web/src/fleet/dead-letters-page.tsx
 * replaces this file (the integrator keeps theirs). Same props.
 */
import type { Scope } from '../api/types';

export function DeadLettersPage(_props: { scopes: ReadonlySet<Scope> }) {
  return (
    <main className="page">
      <h1>Dead letters</h1>
      <p className="dim">The dead-letter page arrives with the fleet pages.</p>
    </main>
  );
}
